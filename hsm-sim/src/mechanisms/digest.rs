//! SHA-2 digests (ring) and the hash choices used inside RSA/ECDSA schemes.
use crate::Rv;
use cryptoki_sys::*;
use ring::digest;

/// The hash algorithms the module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Maps CKM_SHA* (as used in OAEP/PSS parameters).
    pub fn from_mech(m: CK_MECHANISM_TYPE) -> Rv<Hash> {
        match m {
            CKM_SHA_1 => Ok(Hash::Sha1),
            CKM_SHA256 => Ok(Hash::Sha256),
            CKM_SHA384 => Ok(Hash::Sha384),
            CKM_SHA512 => Ok(Hash::Sha512),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        }
    }

    /// The MGF1 generator that goes with this hash.
    pub fn mgf(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            Hash::Sha1 => CKG_MGF1_SHA1,
            Hash::Sha256 => CKG_MGF1_SHA256,
            Hash::Sha384 => CKG_MGF1_SHA384,
            Hash::Sha512 => CKG_MGF1_SHA512,
        }
    }

    pub fn ring(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    pub fn output_len(self) -> usize {
        self.ring().output_len()
    }
}

/// Digest mechanisms offered through C_Digest*.
pub fn digest_hash(m: CK_MECHANISM_TYPE) -> Rv<Hash> {
    match m {
        CKM_SHA256 => Ok(Hash::Sha256),
        CKM_SHA384 => Ok(Hash::Sha384),
        CKM_SHA512 => Ok(Hash::Sha512),
        _ => Err(CKR_MECHANISM_INVALID),
    }
}
