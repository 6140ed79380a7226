//! Mechanisms: parameters, key material, and the table behind
//! C_GetMechanismList / C_GetMechanismInfo.
pub mod aes;
pub mod digest;
pub mod ec;
pub mod hmac;
pub mod rsa;

use crate::attrs::{dec_ulong, Attrs};
use crate::Rv;
use cryptoki_sys::*;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Default)]
pub struct OaepParams {
    pub hash: CK_MECHANISM_TYPE,
    pub mgf: CK_RSA_PKCS_MGF_TYPE,
    pub label: Vec<u8>,
}

/// Mechanism parameters, copied out of the caller's CK_MECHANISM.
#[derive(Debug, Clone)]
pub enum Param {
    None,
    Gcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: CK_ULONG,
    },
    Oaep(OaepParams),
    Pss {
        hash: CK_MECHANISM_TYPE,
        mgf: CK_RSA_PKCS_MGF_TYPE,
        salt_len: CK_ULONG,
    },
    RsaAesWrap {
        aes_bits: CK_ULONG,
        oaep: OaepParams,
    },
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Mechanism {
    pub mech: CK_MECHANISM_TYPE,
    pub param: Param,
}

/// Key material parsed from an object's attributes, cached per object.
#[allow(clippy::large_enum_variant)] // cached once per object
pub enum Material {
    Aes(aes::AesKey),
    Generic(Zeroizing<Vec<u8>>),
    RsaPrivate(Box<::rsa::RsaPrivateKey>),
    RsaPublic(Box<::rsa::RsaPublicKey>),
    EcPrivate(ec::EcPrivate),
    EcPublic(ec::EcPublic),
}

impl Material {
    pub fn from_attrs(a: &Attrs) -> Rv<Material> {
        match (a.class(), a.key_type()) {
            (CKO_SECRET_KEY, CKK_AES) => Ok(Material::Aes(aes::AesKey::new(
                a.get(CKA_VALUE).ok_or(CKR_KEY_HANDLE_INVALID)?,
            )?)),
            (CKO_SECRET_KEY, _) => Ok(Material::Generic(Zeroizing::new(
                a.get(CKA_VALUE).ok_or(CKR_KEY_HANDLE_INVALID)?.to_vec(),
            ))),
            (CKO_PRIVATE_KEY, CKK_RSA) => Ok(Material::RsaPrivate(Box::new(rsa::private_from_attrs(a)?))),
            (CKO_PUBLIC_KEY, CKK_RSA) => Ok(Material::RsaPublic(Box::new(rsa::public_from_attrs(a)?))),
            (CKO_PRIVATE_KEY, CKK_EC) => Ok(Material::EcPrivate(ec::EcPrivate::from_attrs(a)?)),
            (CKO_PUBLIC_KEY, CKK_EC) => Ok(Material::EcPublic(ec::EcPublic::from_attrs(a)?)),
            _ => Err(CKR_KEY_TYPE_INCONSISTENT),
        }
    }
}

const ENC: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT;
const SIG: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
const WRAP: CK_FLAGS = CKF_WRAP | CKF_UNWRAP;
const EC: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// Every implemented mechanism: (type, min key size, max key size, flags).
/// Sizes are bytes for AES/HMAC keys and bits for RSA, EC and generic
/// secret generation, as the standard specifies per mechanism.
pub const MECHANISMS: &[(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS)] = &[
    (CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE),
    (CKM_GENERIC_SECRET_KEY_GEN, 8, 4096, CKF_GENERATE),
    (CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096, CKF_GENERATE_KEY_PAIR),
    (CKM_EC_KEY_PAIR_GEN, 256, 384, CKF_GENERATE_KEY_PAIR | EC),
    (CKM_AES_GCM, 16, 32, ENC),
    (CKM_RSA_PKCS_OAEP, 2048, 4096, ENC | WRAP),
    (CKM_AES_KEY_WRAP, 16, 32, WRAP),
    (CKM_AES_KEY_WRAP_PAD, 16, 32, WRAP),
    (CKM_RSA_AES_KEY_WRAP, 2048, 4096, WRAP),
    (CKM_ECDSA, 256, 384, SIG | EC),
    (CKM_ECDSA_SHA256, 256, 384, SIG | EC),
    (CKM_ECDSA_SHA384, 256, 384, SIG | EC),
    (CKM_RSA_PKCS, 2048, 4096, SIG),
    (CKM_SHA256_RSA_PKCS, 2048, 4096, SIG),
    (CKM_SHA384_RSA_PKCS, 2048, 4096, SIG),
    (CKM_SHA512_RSA_PKCS, 2048, 4096, SIG),
    (CKM_RSA_PKCS_PSS, 2048, 4096, SIG),
    (CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, SIG),
    (CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, SIG),
    (CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, SIG),
    (CKM_SHA256_HMAC, 16, 512, SIG),
    (CKM_SHA384_HMAC, 16, 512, SIG),
    (CKM_SHA512_HMAC, 16, 512, SIG),
    (CKM_SHA256, 0, 0, CKF_DIGEST),
    (CKM_SHA384, 0, 0, CKF_DIGEST),
    (CKM_SHA512, 0, 0, CKF_DIGEST),
];

pub fn info(mech: CK_MECHANISM_TYPE) -> Rv<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
    MECHANISMS
        .iter()
        .find(|m| m.0 == mech)
        .map(|m| (m.1, m.2, m.3))
        .ok_or(CKR_MECHANISM_INVALID)
}

/// Requires a usage attribute (CKA_ENCRYPT, CKA_SIGN, ...) to be true and,
/// when the key has a non-empty CKA_ALLOWED_MECHANISMS, `mech` to be in it
/// (else CKR_MECHANISM_INVALID, as SoftHSM2 answers).
pub fn require(a: &Attrs, usage: CK_ATTRIBUTE_TYPE, mech: CK_MECHANISM_TYPE) -> Rv<()> {
    if !a.bool(usage) {
        return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
    }
    match a.get(CKA_ALLOWED_MECHANISMS) {
        None | Some([]) => Ok(()),
        Some(list) => {
            let mut allowed = list.chunks_exact(std::mem::size_of::<CK_ULONG>()).map(dec_ulong);
            if allowed.any(|m| m == Some(mech)) {
                Ok(())
            } else {
                Err(CKR_MECHANISM_INVALID)
            }
        }
    }
}
