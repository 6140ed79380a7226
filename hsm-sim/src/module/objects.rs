//! Object management calls: create, copy, destroy, attributes, find.
use super::Module;
use crate::attrs::{self, apply_changes, build, is_secret, read, template_ulong, Attrs, Origin, Readable, Value};
use crate::mechanisms::{aes, Material};
use crate::session::Session;
use crate::token::Token;
use crate::Rv;
use cryptoki_sys::*;

/// One C_GetAttributeValue answer.
pub enum AttrValue {
    /// A copy, wiped once delivered: it may be an extractable key's value.
    Value(Value),
    Sensitive,
    Invalid,
}

/// Token objects need a read-write session.
pub(crate) fn check_writable(s: &Session, a: &Attrs) -> Rv<()> {
    if a.bool(CKA_TOKEN) && !s.rw {
        Err(CKR_SESSION_READ_ONLY)
    } else {
        Ok(())
    }
}

/// Validates key material given through C_CreateObject and fills the
/// attributes the token derives from it.
pub(crate) fn complete_key(a: &mut Attrs) -> Rv<()> {
    let class = a.class();
    if !matches!(class, CKO_SECRET_KEY | CKO_PUBLIC_KEY | CKO_PRIVATE_KEY) {
        return Ok(());
    }
    if class == CKO_SECRET_KEY {
        let len = a.get(CKA_VALUE).ok_or(CKR_TEMPLATE_INCOMPLETE)?.len();
        if a.key_type() == CKK_AES {
            aes::AesKey::new(a.get(CKA_VALUE).unwrap_or_default()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
        }
        a.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
        return Ok(());
    }
    let m = Material::from_attrs(a).map_err(|e| {
        if e == CKR_TEMPLATE_INCOMPLETE {
            e
        } else {
            CKR_ATTRIBUTE_VALUE_INVALID
        }
    })?;
    if let Material::RsaPublic(k) = &m {
        let bits = crate::mechanisms::rsa::size(k) * 8;
        a.set_ulong(CKA_MODULUS_BITS, bits as CK_ULONG);
    }
    Ok(())
}

fn so(t: &Token) -> bool {
    t.read().login == Some(CKU_SO)
}

impl Module {
    pub fn create_object(&self, h: CK_SESSION_HANDLE, template: &attrs::Template) -> Rv<CK_OBJECT_HANDLE> {
        self.with_session(h, "C_CreateObject", |t, s| {
            let class = template_ulong(template, CKA_CLASS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let key_type = match class {
                CKO_SECRET_KEY | CKO_PUBLIC_KEY | CKO_PRIVATE_KEY => {
                    template_ulong(template, CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?
                }
                CKO_DATA | CKO_CERTIFICATE => CK_UNAVAILABLE_INFORMATION,
                _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            };
            if class == CKO_CERTIFICATE && template_ulong(template, CKA_CERTIFICATE_TYPE)?.is_none() {
                return Err(CKR_TEMPLATE_INCOMPLETE);
            }
            let mut a = build(class, key_type, template, Origin::Create, so(t))?;
            complete_key(&mut a)?;
            check_writable(s, &a)?;
            t.insert(a, s.handle)
        })
    }

    pub fn copy_object(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: &attrs::Template,
    ) -> Rv<CK_OBJECT_HANDLE> {
        // Decided before the token lock: it looks up the session's slot.
        let corrupt = self.faults.corrupts("C_CopyObject", || self.session_slot(h));
        self.with_session(h, "C_CopyObject", |t, s| {
            t.insert_copy(obj, s.handle, |o, so| {
                if !o.attrs.bool(CKA_COPYABLE) {
                    return Err(CKR_ACTION_PROHIBITED);
                }
                if o.locked {
                    return Err(CKR_USER_NOT_LOGGED_IN);
                }
                let mut a = o.attrs.clone();
                apply_changes(&mut a, template, true, so)?;
                check_writable(s, &a)?;
                if corrupt {
                    // A copy that is not the key it was copied from.
                    if let Some(mut value) = a.get(CKA_VALUE).map(<[u8]>::to_vec) {
                        if let Some(first) = value.first_mut() {
                            *first ^= 1;
                        }
                        a.set(CKA_VALUE, value);
                    }
                }
                Ok(a)
            })
        })
    }

    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Rv<()> {
        self.with_session(h, "C_DestroyObject", |t, s| {
            t.destroy(obj, |o| {
                check_writable(s, &o.attrs)?;
                if o.attrs.bool(CKA_DESTROYABLE) {
                    Ok(())
                } else {
                    Err(CKR_ACTION_PROHIBITED)
                }
            })
        })
    }

    pub fn object_size(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Rv<usize> {
        self.with_session(h, "C_GetObjectSize", |t, _| {
            let o = t.read().get(obj)?;
            Ok(o.attrs.0.values().map(|v| v.len() + 16).sum())
        })
    }

    pub fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Rv<Vec<AttrValue>> {
        self.with_session(h, "C_GetAttributeValue", |t, _| {
            let o = t.read().get(obj)?;
            Ok(types
                .iter()
                .map(|ty| match read(&o.attrs, *ty) {
                    // Key material of a public object is still sealed before login: it exists, but
                    // can't be revealed yet.
                    Readable::Invalid if o.locked && is_secret(o.attrs.class(), *ty) => AttrValue::Sensitive,
                    Readable::Value(v) => AttrValue::Value(v.to_vec().into()),
                    Readable::Sensitive => AttrValue::Sensitive,
                    Readable::Invalid => AttrValue::Invalid,
                })
                .collect())
        })
    }

    pub fn set_attributes(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, template: &attrs::Template) -> Rv<()> {
        self.with_session(h, "C_SetAttributeValue", |t, s| {
            t.modify(obj, |o, so| {
                check_writable(s, &o.attrs)?;
                if !o.attrs.bool(CKA_MODIFIABLE) {
                    return Err(CKR_ACTION_PROHIBITED);
                }
                let mut a = o.attrs.clone();
                apply_changes(&mut a, template, false, so)?;
                Ok(a)
            })
        })
    }

    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: &attrs::Template) -> Rv<()> {
        self.with_session(h, "C_FindObjectsInit", |t, s| {
            if s.find.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            let mut found = t.find(template);
            found.reverse();
            s.find = Some(found);
            Ok(())
        })
    }

    pub fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Rv<Vec<CK_OBJECT_HANDLE>> {
        self.with_session(h, "C_FindObjects", |_, s| {
            let list = s.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            let mut out = Vec::new();
            while out.len() < max {
                match list.pop() {
                    Some(h) => out.push(h),
                    None => break,
                }
            }
            Ok(out)
        })
    }

    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        self.with_session(h, "C_FindObjectsFinal", |_, s| {
            s.find.take().map(|_| ()).ok_or(CKR_OPERATION_NOT_INITIALIZED)
        })
    }
}
