//! Key management calls: generate, generate pair, wrap, unwrap.
use super::objects::{check_writable, complete_key};
use super::Module;
use crate::attrs::{build, template_ulong, Attrs, Origin, Template};
use crate::mechanisms::{aes, ec, require, rsa, Material, Mechanism, Param};
use crate::ops::oaep_params;
use crate::pin::random_bytes;
use crate::session::Out;
use crate::token::Token;
use crate::Rv;
use cryptoki_sys::*;
use zeroize::Zeroizing;

const KW_DEFAULT_IV: [u8; 8] = [0xa6; 8];

fn so(t: &Token) -> bool {
    t.read().login == Some(CKU_SO)
}

fn set_parts(a: &mut Attrs, parts: Template) {
    for (t, v) in parts {
        a.set(t, v);
    }
}

fn key_wrap_param(p: &Param) -> Rv<()> {
    match p {
        Param::None => Ok(()),
        Param::Bytes(iv) if iv.is_empty() || iv[..] == KW_DEFAULT_IV => Ok(()),
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

fn rsa_aes_params(p: &Param) -> Rv<(usize, crate::mechanisms::OaepParams)> {
    match p {
        Param::RsaAesWrap { aes_bits, oaep } => {
            if !matches!(aes_bits, 128 | 192 | 256) {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let o = oaep_params(&Param::Oaep(oaep.clone()))?;
            Ok((*aes_bits as usize / 8, o))
        }
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

fn wrapping_error(e: CK_RV) -> CK_RV {
    match e {
        CKR_KEY_TYPE_INCONSISTENT => CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        CKR_KEY_HANDLE_INVALID | CKR_OBJECT_HANDLE_INVALID => CKR_WRAPPING_KEY_HANDLE_INVALID,
        CKR_KEY_FUNCTION_NOT_PERMITTED => CKR_KEY_FUNCTION_NOT_PERMITTED,
        e => e,
    }
}

fn unwrapping_error(e: CK_RV) -> CK_RV {
    match e {
        CKR_KEY_TYPE_INCONSISTENT => CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
        CKR_KEY_HANDLE_INVALID | CKR_OBJECT_HANDLE_INVALID => CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        CKR_ENCRYPTED_DATA_INVALID => CKR_WRAPPED_KEY_INVALID,
        CKR_ENCRYPTED_DATA_LEN_RANGE => CKR_WRAPPED_KEY_LEN_RANGE,
        e => e,
    }
}

impl Module {
    pub fn generate_key(&self, h: CK_SESSION_HANDLE, m: &Mechanism, template: &Template) -> Rv<CK_OBJECT_HANDLE> {
        self.with_session(h, "C_GenerateKey", |t, s| {
            let len = template_ulong(template, CKA_VALUE_LEN)?.ok_or(CKR_TEMPLATE_INCOMPLETE)? as usize;
            let key_type = match m.mech {
                CKM_AES_KEY_GEN => {
                    if !matches!(len, 16 | 24 | 32) {
                        return Err(CKR_KEY_SIZE_RANGE);
                    }
                    CKK_AES
                }
                CKM_GENERIC_SECRET_KEY_GEN => {
                    if !(1..=512).contains(&len) {
                        return Err(CKR_KEY_SIZE_RANGE);
                    }
                    match template_ulong(template, CKA_KEY_TYPE)? {
                        Some(kt @ (CKK_GENERIC_SECRET | CKK_SHA256_HMAC | CKK_SHA384_HMAC | CKK_SHA512_HMAC)) => kt,
                        None => CKK_GENERIC_SECRET,
                        Some(_) => return Err(CKR_TEMPLATE_INCONSISTENT),
                    }
                }
                _ => return Err(CKR_MECHANISM_INVALID),
            };
            if !matches!(m.param, Param::None) {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let mut a = build(CKO_SECRET_KEY, key_type, template, Origin::Generate(m.mech), so(t))?;
            let mut value = Zeroizing::new(vec![0u8; len]);
            random_bytes(&mut value)?;
            a.set(CKA_VALUE, value);
            a.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
            check_writable(s, &a)?;
            t.insert(a, s.handle)
        })
    }

    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        pub_t: &Template,
        priv_t: &Template,
    ) -> Rv<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        self.with_session(h, "C_GenerateKeyPair", |t, s| {
            let (key_type, (pub_parts, priv_parts)) = match m.mech {
                CKM_RSA_PKCS_KEY_PAIR_GEN => {
                    let bits = template_ulong(pub_t, CKA_MODULUS_BITS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    let exp = pub_t
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == CKA_PUBLIC_EXPONENT)
                        .map(|(_, v)| v.as_slice());
                    (CKK_RSA, rsa::generate(bits as usize, exp)?)
                }
                CKM_EC_KEY_PAIR_GEN => {
                    let params = pub_t
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == CKA_EC_PARAMS)
                        .map(|(_, v)| v.as_slice())
                        .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    (CKK_EC, ec::generate(ec::Curve::from_params(params)?))
                }
                _ => return Err(CKR_MECHANISM_INVALID),
            };
            let origin = Origin::Generate(m.mech);
            let mut pub_a = build(CKO_PUBLIC_KEY, key_type, pub_t, origin, so(t))?;
            let mut priv_a = build(CKO_PRIVATE_KEY, key_type, priv_t, origin, so(t))?;
            set_parts(&mut pub_a, pub_parts);
            set_parts(&mut priv_a, priv_parts);
            check_writable(s, &pub_a)?;
            check_writable(s, &priv_a)?;
            t.insert_pair(pub_a, priv_a, s.handle)
        })
    }

    pub fn wrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        target: CK_OBJECT_HANDLE,
        cap: Option<usize>,
    ) -> Rv<Out> {
        self.with_session(h, "C_WrapKey", |t, _| {
            let (wk, key) = {
                let inner = t.read();
                (
                    inner.get(wrapping).map_err(|_| CKR_WRAPPING_KEY_HANDLE_INVALID)?,
                    inner.get(target).map_err(|_| CKR_KEY_HANDLE_INVALID)?,
                )
            };
            require(&wk.attrs, CKA_WRAP, m.mech)?;
            if !key.attrs.bool(CKA_EXTRACTABLE) {
                return Err(CKR_KEY_UNEXTRACTABLE);
            }
            if key.attrs.bool(CKA_WRAP_WITH_TRUSTED) && !wk.attrs.bool(CKA_TRUSTED) {
                return Err(CKR_KEY_NOT_WRAPPABLE);
            }
            let value: Zeroizing<Vec<u8>> = match (key.attrs.class(), &*key.material()?) {
                (CKO_SECRET_KEY, _) => Zeroizing::new(key.attrs.get(CKA_VALUE).ok_or(CKR_KEY_NOT_WRAPPABLE)?.to_vec()),
                (CKO_PRIVATE_KEY, Material::RsaPrivate(k)) => rsa::to_pkcs8(k)?,
                (CKO_PRIVATE_KEY, Material::EcPrivate(k)) => k.to_pkcs8()?,
                _ => return Err(CKR_KEY_NOT_WRAPPABLE),
            };
            let wmat = wk.material().map_err(wrapping_error)?;
            let out = match (m.mech, &*wmat) {
                (CKM_AES_KEY_WRAP, Material::Aes(k)) => {
                    key_wrap_param(&m.param)?;
                    k.wrap(&value, false)?
                }
                (CKM_AES_KEY_WRAP_PAD, Material::Aes(k)) => {
                    key_wrap_param(&m.param)?;
                    k.wrap(&value, true)?
                }
                (CKM_RSA_PKCS_OAEP, Material::RsaPublic(k)) => {
                    rsa::oaep_encrypt(k, &oaep_params(&m.param)?, &value).map_err(|_| CKR_KEY_SIZE_RANGE)?
                }
                (CKM_RSA_AES_KEY_WRAP, Material::RsaPublic(k)) => {
                    let (aes_len, oaep) = rsa_aes_params(&m.param)?;
                    let mut tmp = Zeroizing::new(vec![0u8; aes_len]);
                    random_bytes(&mut tmp)?;
                    let mut out = rsa::oaep_encrypt(k, &oaep, &tmp)?;
                    out.extend(aes::AesKey::new(&tmp)?.wrap(&value, true)?);
                    out
                }
                (CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_RSA_PKCS_OAEP | CKM_RSA_AES_KEY_WRAP, _) => {
                    return Err(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)
                }
                _ => return Err(CKR_MECHANISM_INVALID),
            };
            Ok(match cap {
                None => Out::Len(out.len()),
                Some(c) if c < out.len() => Out::TooSmall(out.len()),
                Some(_) => Out::Data(out.into()),
            })
        })
    }

    pub fn unwrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &Template,
    ) -> Rv<CK_OBJECT_HANDLE> {
        self.with_session(h, "C_UnwrapKey", |t, s| {
            let uk = t
                .read()
                .get(unwrapping)
                .map_err(|_| CKR_UNWRAPPING_KEY_HANDLE_INVALID)?;
            require(&uk.attrs, CKA_UNWRAP, m.mech)?;
            let umat = uk.material().map_err(unwrapping_error)?;
            let value: Zeroizing<Vec<u8>> = match (m.mech, &*umat) {
                (CKM_AES_KEY_WRAP, Material::Aes(k)) => {
                    key_wrap_param(&m.param)?;
                    k.unwrap(wrapped, false)?
                }
                (CKM_AES_KEY_WRAP_PAD, Material::Aes(k)) => {
                    key_wrap_param(&m.param)?;
                    k.unwrap(wrapped, true)?
                }
                (CKM_RSA_PKCS_OAEP, Material::RsaPrivate(k)) => {
                    rsa::oaep_decrypt(k, &oaep_params(&m.param)?, wrapped).map_err(unwrapping_error)?
                }
                (CKM_RSA_AES_KEY_WRAP, Material::RsaPrivate(k)) => {
                    let (aes_len, oaep) = rsa_aes_params(&m.param)?;
                    let n = rsa::private_size(k);
                    if wrapped.len() <= n {
                        return Err(CKR_WRAPPED_KEY_LEN_RANGE);
                    }
                    let tmp = rsa::oaep_decrypt(k, &oaep, &wrapped[..n]).map_err(unwrapping_error)?;
                    if tmp.len() != aes_len {
                        return Err(CKR_WRAPPED_KEY_INVALID);
                    }
                    aes::AesKey::new(&tmp)?.unwrap(&wrapped[n..], true)?
                }
                (CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_RSA_PKCS_OAEP | CKM_RSA_AES_KEY_WRAP, _) => {
                    return Err(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)
                }
                _ => return Err(CKR_MECHANISM_INVALID),
            };
            let class = template_ulong(template, CKA_CLASS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let key_type = template_ulong(template, CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let mut a = build(class, key_type, template, Origin::Unwrap, so(t))?;
            match (class, key_type) {
                (CKO_SECRET_KEY, _) => {
                    if let Some(len) = template_ulong(template, CKA_VALUE_LEN)? {
                        if len as usize != value.len() {
                            return Err(CKR_TEMPLATE_INCONSISTENT);
                        }
                    }
                    a.set(CKA_VALUE, value);
                }
                (CKO_PRIVATE_KEY, CKK_RSA) => set_parts(&mut a, rsa::from_pkcs8(&value)?),
                (CKO_PRIVATE_KEY, CKK_EC) => set_parts(&mut a, ec::from_pkcs8(&value)?),
                _ => return Err(CKR_TEMPLATE_INCONSISTENT),
            }
            complete_key(&mut a).map_err(|e| {
                if e == CKR_ATTRIBUTE_VALUE_INVALID {
                    CKR_WRAPPED_KEY_INVALID
                } else {
                    e
                }
            })?;
            check_writable(s, &a)?;
            t.insert(a, s.handle)
        })
    }
}
