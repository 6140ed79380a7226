//! Attribute storage and the PKCS#11 attribute rules: which attributes a
//! class has, their defaults, which are secret, and which may change.
use crate::Rv;
use cryptoki_sys::*;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// An attribute value in its CK_ATTRIBUTE byte form (CK_BBOOL is one byte,
/// CK_ULONG native-endian). Any value may be key material, so every value
/// is wiped when dropped.
pub type Value = Zeroizing<Vec<u8>>;

/// An object's attributes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs(pub BTreeMap<CK_ATTRIBUTE_TYPE, Value>);

/// Shows the attribute types only: values may be key material.
impl std::fmt::Debug for Attrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys().map(|t| format!("{t:#x}"))).finish()
    }
}

/// A template as the caller passed it.
pub type Template = Vec<(CK_ATTRIBUTE_TYPE, Value)>;

pub fn enc_bool(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

pub fn enc_ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

pub fn dec_ulong(v: &[u8]) -> Option<CK_ULONG> {
    Some(CK_ULONG::from_ne_bytes(v.try_into().ok()?))
}

impl Attrs {
    pub fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.0.get(&t).map(|v| v.as_slice())
    }
    pub fn bool(&self, t: CK_ATTRIBUTE_TYPE) -> bool {
        matches!(self.get(t), Some([b]) if *b != CK_FALSE)
    }
    pub fn ulong(&self, t: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        self.get(t).and_then(dec_ulong)
    }
    /// Takes the value as it is (a plain Vec is moved, not copied).
    pub fn set(&mut self, t: CK_ATTRIBUTE_TYPE, v: impl Into<Value>) {
        self.0.insert(t, v.into());
    }
    pub fn set_bool(&mut self, t: CK_ATTRIBUTE_TYPE, v: bool) {
        self.set(t, enc_bool(v));
    }
    pub fn set_ulong(&mut self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) {
        self.set(t, enc_ulong(v));
    }
    pub fn class(&self) -> CK_OBJECT_CLASS {
        self.ulong(CKA_CLASS).unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }
    pub fn key_type(&self) -> CK_KEY_TYPE {
        self.ulong(CKA_KEY_TYPE).unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }
    /// True when every template attribute is present with the same value.
    /// Key material is never compared, so a template naming it matches
    /// nothing: a match would confirm a guess of a sensitive key's value
    /// (SoftHSM2 does compare it; C_FindObjectsInit has no error code for
    /// this, so matching nothing is the answer that reveals nothing).
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, Value)]) -> bool {
        let class = self.class();
        template
            .iter()
            .all(|(t, v)| !is_secret(class, *t) && self.get(*t) == Some(v.as_slice()))
    }
}

pub fn template_ulong(t: &[(CK_ATTRIBUTE_TYPE, Value)], a: CK_ATTRIBUTE_TYPE) -> Rv<Option<CK_ULONG>> {
    match t.iter().rev().find(|(k, _)| *k == a) {
        None => Ok(None),
        Some((_, v)) => dec_ulong(v).map(Some).ok_or(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

pub fn template_bool(t: &[(CK_ATTRIBUTE_TYPE, Value)], a: CK_ATTRIBUTE_TYPE) -> Option<bool> {
    t.iter()
        .rev()
        .find(|(k, _)| *k == a)
        .map(|(_, v)| v.first().is_some_and(|b| *b != CK_FALSE))
}

enum Kind {
    Bool,
    Ulong,
    Ulongs,
    Bytes,
}

fn kind(t: CK_ATTRIBUTE_TYPE) -> Kind {
    match t {
        CKA_TOKEN
        | CKA_PRIVATE
        | CKA_MODIFIABLE
        | CKA_COPYABLE
        | CKA_DESTROYABLE
        | CKA_SENSITIVE
        | CKA_ENCRYPT
        | CKA_DECRYPT
        | CKA_SIGN
        | CKA_SIGN_RECOVER
        | CKA_VERIFY
        | CKA_VERIFY_RECOVER
        | CKA_WRAP
        | CKA_UNWRAP
        | CKA_DERIVE
        | CKA_EXTRACTABLE
        | CKA_LOCAL
        | CKA_NEVER_EXTRACTABLE
        | CKA_ALWAYS_SENSITIVE
        | CKA_WRAP_WITH_TRUSTED
        | CKA_TRUSTED
        | CKA_ALWAYS_AUTHENTICATE => Kind::Bool,
        CKA_CLASS
        | CKA_KEY_TYPE
        | CKA_VALUE_LEN
        | CKA_MODULUS_BITS
        | CKA_KEY_GEN_MECHANISM
        | CKA_CERTIFICATE_TYPE
        | CKA_CERTIFICATE_CATEGORY
        | CKA_JAVA_MIDP_SECURITY_DOMAIN
        | CKA_NAME_HASH_ALGORITHM => Kind::Ulong,
        CKA_ALLOWED_MECHANISMS => Kind::Ulongs,
        _ => Kind::Bytes,
    }
}

/// Checks a caller-supplied value has the size its type demands.
pub fn check_value(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Rv<()> {
    let ok = match kind(t) {
        Kind::Bool => v.len() == 1,
        Kind::Ulong => v.len() == std::mem::size_of::<CK_ULONG>(),
        Kind::Ulongs => v.len().is_multiple_of(std::mem::size_of::<CK_ULONG>()),
        Kind::Bytes => true,
    };
    if ok {
        Ok(())
    } else {
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    }
}

const COMMON: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_LABEL,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
];
const KEY: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALLOWED_MECHANISMS,
];
const PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SUBJECT,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_TRUSTED,
    CKA_PUBLIC_KEY_INFO,
];
const PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SUBJECT,
    CKA_SENSITIVE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_PUBLIC_KEY_INFO,
];
const SECRET: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_CHECK_VALUE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_TRUSTED,
    CKA_VALUE,
    CKA_VALUE_LEN,
];
const RSA_PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT];
const RSA_PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];
const EC_PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[CKA_EC_PARAMS, CKA_EC_POINT];
const EC_PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[CKA_EC_PARAMS, CKA_VALUE];
const DATA: &[CK_ATTRIBUTE_TYPE] = &[CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE];
const CERT: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_CHECK_VALUE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_PUBLIC_KEY_INFO,
    CKA_SUBJECT,
    CKA_ID,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_VALUE,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_NAME_HASH_ALGORITHM,
];

/// Is `t` an attribute of objects of this class / key type? Not
/// CKA_WRAP_TEMPLATE / CKA_UNWRAP_TEMPLATE: their values are arrays of the
/// caller's pointers and the token does not apply them, so they are
/// refused (CKR_ATTRIBUTE_TYPE_INVALID) rather than stored.
pub fn allowed(class: CK_OBJECT_CLASS, key_type: CK_KEY_TYPE, t: CK_ATTRIBUTE_TYPE) -> bool {
    if COMMON.contains(&t) {
        return true;
    }
    let specific: &[&[CK_ATTRIBUTE_TYPE]] = match (class, key_type) {
        (CKO_DATA, _) => &[DATA],
        (CKO_CERTIFICATE, _) => &[CERT],
        (CKO_SECRET_KEY, _) => &[KEY, SECRET],
        (CKO_PUBLIC_KEY, CKK_RSA) => &[KEY, PUBLIC, RSA_PUBLIC],
        (CKO_PUBLIC_KEY, CKK_EC) => &[KEY, PUBLIC, EC_PUBLIC],
        (CKO_PRIVATE_KEY, CKK_RSA) => &[KEY, PRIVATE, RSA_PRIVATE],
        (CKO_PRIVATE_KEY, CKK_EC) => &[KEY, PRIVATE, EC_PRIVATE],
        _ => &[],
    };
    specific.iter().any(|list| list.contains(&t))
}

/// Key material: never readable from a sensitive/unextractable key and
/// never written to disk in plaintext.
pub fn is_secret(class: CK_OBJECT_CLASS, t: CK_ATTRIBUTE_TYPE) -> bool {
    match class {
        CKO_SECRET_KEY => t == CKA_VALUE,
        CKO_PRIVATE_KEY => matches!(
            t,
            CKA_VALUE
                | CKA_PRIVATE_EXPONENT
                | CKA_PRIME_1
                | CKA_PRIME_2
                | CKA_EXPONENT_1
                | CKA_EXPONENT_2
                | CKA_COEFFICIENT
        ),
        _ => false,
    }
}

/// Attributes only the token sets.
fn token_managed(t: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        t,
        CKA_LOCAL | CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE | CKA_KEY_GEN_MECHANISM
    )
}

/// Attributes C_SetAttributeValue may change freely (within the class) on a
/// modifiable object. Not CKA_ALLOWED_MECHANISMS: the standard makes it
/// unmodifiable, so a key's mechanism limit can't be lifted.
fn freely_settable(t: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        t,
        CKA_LABEL
            | CKA_ID
            | CKA_SUBJECT
            | CKA_START_DATE
            | CKA_END_DATE
            | CKA_ENCRYPT
            | CKA_DECRYPT
            | CKA_SIGN
            | CKA_VERIFY
            | CKA_WRAP
            | CKA_UNWRAP
            | CKA_DERIVE
            | CKA_APPLICATION
            | CKA_OBJECT_ID
            | CKA_ISSUER
            | CKA_SERIAL_NUMBER
            | CKA_URL
    )
}

/// How an object comes to exist; decides CKA_LOCAL and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Create,
    Generate(CK_MECHANISM_TYPE),
    Unwrap,
}

/// Builds the attributes of a new object from defaults plus the template.
/// `material` holds attributes the token computed (generated key values),
/// which the template may not supply.
pub fn build(
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
    template: &[(CK_ATTRIBUTE_TYPE, Value)],
    origin: Origin,
    so_logged_in: bool,
) -> Rv<Attrs> {
    let mut a = defaults(class, key_type);
    for (t, v) in template {
        if !allowed(class, key_type, *t) {
            // CKA_MODULUS_BITS/CKA_VALUE_LEN drive generation; not stored as given.
            if !matches!(*t, CKA_VALUE_LEN | CKA_MODULUS_BITS) || origin == Origin::Create {
                return Err(CKR_ATTRIBUTE_TYPE_INVALID);
            }
        }
        check_value(*t, v)?;
        if token_managed(*t) {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        if *t == CKA_CLASS && a.get(CKA_CLASS) != Some(v.as_slice()) {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        if *t == CKA_KEY_TYPE && a.get(CKA_KEY_TYPE) != Some(v.as_slice()) {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        if *t == CKA_TRUSTED && v[0] != CK_FALSE && !so_logged_in {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        // A login before each use is not implemented, so it is not promised.
        if *t == CKA_ALWAYS_AUTHENTICATE && v[0] != CK_FALSE {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        if origin != Origin::Create && is_secret(class, *t) {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        if allowed(class, key_type, *t) {
            a.set(*t, v.clone());
        }
    }
    if matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY) {
        let generated = matches!(origin, Origin::Generate(_));
        a.set_bool(CKA_LOCAL, generated);
        let mech = match origin {
            Origin::Generate(m) => m,
            _ => CK_UNAVAILABLE_INFORMATION,
        };
        a.set_ulong(CKA_KEY_GEN_MECHANISM, mech);
        if class != CKO_PUBLIC_KEY {
            let sensitive = a.bool(CKA_SENSITIVE);
            let extractable = a.bool(CKA_EXTRACTABLE);
            a.set_bool(CKA_ALWAYS_SENSITIVE, generated && sensitive);
            a.set_bool(CKA_NEVER_EXTRACTABLE, generated && !extractable);
        }
    }
    Ok(a)
}

fn defaults(class: CK_OBJECT_CLASS, key_type: CK_KEY_TYPE) -> Attrs {
    let mut a = Attrs::default();
    a.set_ulong(CKA_CLASS, class);
    a.set_bool(CKA_TOKEN, false);
    a.set_bool(CKA_PRIVATE, matches!(class, CKO_PRIVATE_KEY | CKO_SECRET_KEY));
    a.set_bool(CKA_MODIFIABLE, true);
    a.set_bool(CKA_COPYABLE, true);
    a.set_bool(CKA_DESTROYABLE, true);
    a.set(CKA_LABEL, Vec::new());
    if matches!(class, CKO_SECRET_KEY | CKO_PRIVATE_KEY | CKO_PUBLIC_KEY) {
        a.set_ulong(CKA_KEY_TYPE, key_type);
        a.set(CKA_ID, Vec::new());
        a.set(CKA_START_DATE, Vec::new());
        a.set(CKA_END_DATE, Vec::new());
        a.set_bool(CKA_DERIVE, false);
    }
    let usage: &[CK_ATTRIBUTE_TYPE] = match class {
        CKO_PUBLIC_KEY => &[CKA_ENCRYPT, CKA_VERIFY, CKA_WRAP],
        CKO_PRIVATE_KEY => &[CKA_DECRYPT, CKA_SIGN, CKA_UNWRAP, CKA_SENSITIVE],
        CKO_SECRET_KEY => &[
            CKA_ENCRYPT,
            CKA_DECRYPT,
            CKA_SIGN,
            CKA_VERIFY,
            CKA_WRAP,
            CKA_UNWRAP,
            CKA_SENSITIVE,
        ],
        _ => &[],
    };
    for t in usage {
        a.set_bool(*t, true);
    }
    match class {
        CKO_PUBLIC_KEY => {
            a.set(CKA_SUBJECT, Vec::new());
            a.set_bool(CKA_VERIFY_RECOVER, false);
            a.set_bool(CKA_TRUSTED, false);
        }
        CKO_PRIVATE_KEY | CKO_SECRET_KEY => {
            if class == CKO_PRIVATE_KEY {
                a.set(CKA_SUBJECT, Vec::new());
                a.set_bool(CKA_SIGN_RECOVER, false);
                a.set_bool(CKA_ALWAYS_AUTHENTICATE, false);
            } else {
                a.set_bool(CKA_TRUSTED, false);
            }
            a.set_bool(CKA_EXTRACTABLE, false);
            a.set_bool(CKA_WRAP_WITH_TRUSTED, false);
        }
        CKO_DATA => {
            a.set(CKA_APPLICATION, Vec::new());
            a.set(CKA_VALUE, Vec::new());
        }
        _ => {}
    }
    a
}

/// Applies C_SetAttributeValue (or C_CopyObject when `copying`) changes
/// following the standard's one-way rules. A copy may not loosen what the
/// original promises (CKA_PRIVATE only goes to true, CKA_MODIFIABLE and
/// CKA_DESTROYABLE only to false), and a copy of a non-modifiable object may
/// only tighten: its usage, label and other attributes stay as they are.
/// Anything else is CKR_ATTRIBUTE_READ_ONLY (a single attribute that may not
/// change, not two attributes at odds: not CKR_TEMPLATE_INCONSISTENT).
pub fn apply_changes(
    a: &mut Attrs,
    changes: &[(CK_ATTRIBUTE_TYPE, Value)],
    copying: bool,
    so_logged_in: bool,
) -> Rv<()> {
    let class = a.class();
    let key_type = a.key_type();
    // The original's, so a template can't first make it modifiable.
    let modifiable = a.bool(CKA_MODIFIABLE);
    for (t, v) in changes {
        check_value(*t, v)?;
        if !allowed(class, key_type, *t) {
            return Err(CKR_ATTRIBUTE_TYPE_INVALID);
        }
        let on = v.first().is_some_and(|b| *b != CK_FALSE);
        match *t {
            // Never compared with the stored value: "unchanged" would confirm a guess.
            t if is_secret(class, t) => return Err(CKR_ATTRIBUTE_READ_ONLY),
            t if a.get(t) == Some(v.as_slice()) => {}
            t if freely_settable(t) && modifiable => {}
            CKA_TRUSTED if so_logged_in && modifiable => {}
            CKA_SENSITIVE | CKA_WRAP_WITH_TRUSTED if on => {}
            CKA_EXTRACTABLE | CKA_COPYABLE | CKA_DESTROYABLE if !on => {}
            CKA_TOKEN if copying => {}
            CKA_PRIVATE if copying && on => {}
            CKA_MODIFIABLE if copying && !on => {}
            _ => return Err(CKR_ATTRIBUTE_READ_ONLY),
        }
        a.set(*t, v.clone());
    }
    Ok(())
}

/// Value of `t` as C_GetAttributeValue may reveal it.
pub enum Readable<'a> {
    Value(&'a [u8]),
    Sensitive,
    Invalid,
}

pub fn read(a: &Attrs, t: CK_ATTRIBUTE_TYPE) -> Readable<'_> {
    let class = a.class();
    if is_secret(class, t) && (a.bool(CKA_SENSITIVE) || !a.bool(CKA_EXTRACTABLE)) {
        return Readable::Sensitive;
    }
    match a.get(t) {
        Some(v) => Readable::Value(v),
        None => Readable::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_mechanisms_is_a_whole_number_of_ulongs() {
        let n = std::mem::size_of::<CK_ULONG>();
        assert!(check_value(CKA_ALLOWED_MECHANISMS, &[]).is_ok());
        assert!(check_value(CKA_ALLOWED_MECHANISMS, &vec![0; 2 * n]).is_ok());
        assert_eq!(
            check_value(CKA_ALLOWED_MECHANISMS, &vec![0; n + 1]),
            Err(CKR_ATTRIBUTE_VALUE_INVALID)
        );
    }
}
