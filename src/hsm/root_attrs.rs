//! The root key's custody attributes. Finding a key by CKA_ID says nothing about what it is: an
//! admin may have made it with the HSM's defaults (CloudHSM's are extractable), not sensitive, or
//! of another type or length. Such a key is never used: at start the server refuses to run, and a
//! key adopted later (a replacement found by the pool) is treated as missing.

use cryptoki::error::Error;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectHandle};
use cryptoki::session::Session;

/// AES-256, in bytes.
const ROOT_KEY_LEN: std::os::raw::c_ulong = 32;

/// The attributes a usable root key must have; never CKA_VALUE.
const CHECKED: [AttributeType; 7] = [
    AttributeType::KeyType,
    AttributeType::ValueLen,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
];

/// What a usable root key is, for operators' messages.
pub const REQUIRED: &str = "an AES-256 secret key (CKA_KEY_TYPE CKK_AES, CKA_VALUE_LEN 32) with CKA_PRIVATE TRUE, \
     CKA_SENSITIVE TRUE, CKA_EXTRACTABLE FALSE, CKA_ENCRYPT TRUE and CKA_DECRYPT TRUE";

/// Reads `key`'s attributes. `Ok(Err(defects))`: the key is not usable as the root key, and
/// `defects` names each wrong attribute (never any key material). `Err`: the HSM call failed.
pub fn check(session: &Session, key: ObjectHandle) -> Result<Result<(), String>, Error> {
    let attrs = session.get_attributes(key, &CHECKED)?;
    Ok(match defects(&attrs) {
        none if none.is_empty() => Ok(()),
        found => Err(found.join("; ")),
    })
}

/// Every way `attrs` (as read from the HSM) falls short of a usable root key. An attribute the
/// HSM did not return is a defect: it can't be shown to be right.
pub fn defects(attrs: &[Attribute]) -> Vec<String> {
    let mut found = Vec::new();
    for wanted in CHECKED {
        let Some(attr) = attrs.iter().find(|a| a.attribute_type() == wanted) else {
            found.push(format!("{} is not readable", name(wanted)));
            continue;
        };
        let defect = match attr {
            Attribute::KeyType(k) if *k != KeyType::AES => Some(format!("CKA_KEY_TYPE is {k}, not CKK_AES")),
            Attribute::ValueLen(len) if **len != ROOT_KEY_LEN => {
                Some(format!("CKA_VALUE_LEN is {len} bytes, not {ROOT_KEY_LEN} (AES-256)"))
            }
            // A public object is usable by any session, logged in or not (and SoftHSM2 stores its
            // value unencrypted): the PIN would no longer guard the root key.
            Attribute::Private(false) => Some("CKA_PRIVATE is FALSE: usable without logging in".to_string()),
            Attribute::Sensitive(false) => Some("CKA_SENSITIVE is FALSE".to_string()),
            Attribute::Extractable(true) => Some("CKA_EXTRACTABLE is TRUE".to_string()),
            Attribute::Encrypt(false) => Some("CKA_ENCRYPT is FALSE".to_string()),
            Attribute::Decrypt(false) => Some("CKA_DECRYPT is FALSE".to_string()),
            _ => None,
        };
        found.extend(defect);
    }
    found
}

/// How `key`'s value may have been outside the HSM before, as its history attributes tell:
/// CKA_NEVER_EXTRACTABLE FALSE (imported, or extractable once) or CKA_ALWAYS_SENSITIVE FALSE. Such
/// a key works as a root key, and refusing it would stop servers that were started with it; but
/// custody then rests on whoever held that value, which the operator is told at start. An
/// attribute the HSM doesn't return says nothing either way.
pub fn history(session: &Session, key: ObjectHandle) -> Result<Vec<&'static str>, Error> {
    let attrs = session.get_attributes(key, &[AttributeType::NeverExtractable, AttributeType::AlwaysSensitive])?;
    Ok(history_notes(&attrs))
}

fn history_notes(attrs: &[Attribute]) -> Vec<&'static str> {
    attrs
        .iter()
        .filter_map(|a| match a {
            Attribute::NeverExtractable(false) => {
                Some("CKA_NEVER_EXTRACTABLE is FALSE: it was imported, or was extractable once")
            }
            Attribute::AlwaysSensitive(false) => Some("CKA_ALWAYS_SENSITIVE is FALSE: its value was readable once"),
            _ => None,
        })
        .collect()
}

/// What else `key` may be used for besides encrypting and decrypting kms's material, as its usage
/// attributes tell: CKA_WRAP, CKA_UNWRAP or CKA_DERIVE TRUE. None exposes the root key's value, but
/// each lets a holder of the PIN do more with it than kms does (wrap another key on the token under
/// it and then C_Decrypt the result, import keys under it, derive keys from it), so the operator is
/// told at start; refusing would stop servers started with such a key. Unreadable: nothing known.
pub fn extra_uses(session: &Session, key: ObjectHandle) -> Result<Vec<&'static str>, Error> {
    let attrs = session.get_attributes(
        key,
        &[AttributeType::Wrap, AttributeType::Unwrap, AttributeType::Derive],
    )?;
    Ok(extra_use_notes(&attrs))
}

fn extra_use_notes(attrs: &[Attribute]) -> Vec<&'static str> {
    attrs
        .iter()
        .filter_map(|a| match a {
            Attribute::Wrap(true) => Some("CKA_WRAP is TRUE: it can wrap other keys on the token"),
            Attribute::Unwrap(true) => Some("CKA_UNWRAP is TRUE: it can unwrap keys into the token"),
            Attribute::Derive(true) => Some("CKA_DERIVE is TRUE: keys can be derived from it"),
            _ => None,
        })
        .collect()
}

fn name(t: AttributeType) -> &'static str {
    match t {
        AttributeType::KeyType => "CKA_KEY_TYPE",
        AttributeType::ValueLen => "CKA_VALUE_LEN",
        AttributeType::Private => "CKA_PRIVATE",
        AttributeType::Sensitive => "CKA_SENSITIVE",
        AttributeType::Extractable => "CKA_EXTRACTABLE",
        AttributeType::Encrypt => "CKA_ENCRYPT",
        AttributeType::Decrypt => "CKA_DECRYPT",
        _ => "an attribute",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<Attribute> {
        vec![
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ]
    }

    fn with(change: Attribute) -> Vec<Attribute> {
        let mut attrs = good();
        for a in &mut attrs {
            if a.attribute_type() == change.attribute_type() {
                *a = change.clone();
            }
        }
        attrs
    }

    #[test]
    fn an_aes_256_sensitive_unextractable_key_is_usable() {
        assert!(defects(&good()).is_empty());
    }

    #[test]
    fn each_wrong_attribute_is_named() {
        let cases = [
            (Attribute::Extractable(true), "CKA_EXTRACTABLE is TRUE"),
            (Attribute::Private(false), "CKA_PRIVATE is FALSE"),
            (Attribute::Sensitive(false), "CKA_SENSITIVE is FALSE"),
            (Attribute::KeyType(KeyType::GENERIC_SECRET), "CKA_KEY_TYPE"),
            (Attribute::ValueLen(16.into()), "CKA_VALUE_LEN is 16 bytes"),
            (Attribute::Encrypt(false), "CKA_ENCRYPT is FALSE"),
            (Attribute::Decrypt(false), "CKA_DECRYPT is FALSE"),
        ];
        for (change, expected) in cases {
            let found = defects(&with(change));
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].contains(expected), "{found:?} should say {expected}");
        }
    }

    #[test]
    fn a_key_whose_value_was_outside_the_hsm_is_noted() {
        assert!(history_notes(&[Attribute::NeverExtractable(true), Attribute::AlwaysSensitive(true)]).is_empty());
        assert!(history_notes(&[]).is_empty(), "unreadable: nothing known");
        let notes = history_notes(&[Attribute::NeverExtractable(false), Attribute::AlwaysSensitive(false)]);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("CKA_NEVER_EXTRACTABLE is FALSE"));
        assert!(notes[1].starts_with("CKA_ALWAYS_SENSITIVE is FALSE"));
    }

    #[test]
    fn uses_beyond_encrypt_and_decrypt_are_noted() {
        let none = [
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        assert!(extra_use_notes(&none).is_empty());
        assert!(extra_use_notes(&[]).is_empty(), "unreadable: nothing known");
        let notes = extra_use_notes(&[Attribute::Wrap(true), Attribute::Unwrap(true), Attribute::Derive(true)]);
        assert_eq!(notes.len(), 3);
        assert!(notes[0].starts_with("CKA_WRAP is TRUE"));
        assert!(notes[1].starts_with("CKA_UNWRAP is TRUE"));
        assert!(notes[2].starts_with("CKA_DERIVE is TRUE"));
    }

    #[test]
    fn every_defect_is_reported_and_an_unreadable_attribute_is_one() {
        let mut attrs = with(Attribute::Extractable(true));
        attrs.retain(|a| a.attribute_type() != AttributeType::Sensitive);
        let found = defects(&attrs);
        assert_eq!(
            found,
            ["CKA_SENSITIVE is not readable", "CKA_EXTRACTABLE is TRUE"],
            "{found:?}"
        );
        assert_eq!(defects(&[]).len(), CHECKED.len());
    }
}
