//! Encryption, signing and MAC algorithm names, as AWS spells them, and their parameters.

use super::spec::enum_error;
use crate::error::Result;

/// The hash functions the algorithms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha224 => 28,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

macro_rules! named_enum {
    ($name:ident, $field:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// ValidationException for names outside the AWS enumeration.
            pub fn parse(field: &str, s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(enum_error(field, other, Self::NAMES)),
                }
            }
        }
    };
}

named_enum!(EncryptionAlgorithm, "encryptionAlgorithm", {
    SymmetricDefault => "SYMMETRIC_DEFAULT",
    RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
    RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
    Sm2Pke => "SM2PKE",
});

named_enum!(SigningAlgorithm, "signingAlgorithm", {
    RsassaPssSha256 => "RSASSA_PSS_SHA_256",
    RsassaPssSha384 => "RSASSA_PSS_SHA_384",
    RsassaPssSha512 => "RSASSA_PSS_SHA_512",
    RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
    RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
    RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
    EcdsaSha256 => "ECDSA_SHA_256",
    EcdsaSha384 => "ECDSA_SHA_384",
    EcdsaSha512 => "ECDSA_SHA_512",
    Sm2Dsa => "SM2DSA",
    MlDsaShake256 => "ML_DSA_SHAKE_256",
    Ed25519Sha512 => "ED25519_SHA_512",
    Ed25519PhSha512 => "ED25519_PH_SHA_512",
});

named_enum!(MacAlgorithm, "macAlgorithm", {
    HmacSha224 => "HMAC_SHA_224",
    HmacSha256 => "HMAC_SHA_256",
    HmacSha384 => "HMAC_SHA_384",
    HmacSha512 => "HMAC_SHA_512",
});

named_enum!(KeyPairSpec, "keyPairSpec", {
    Rsa2048 => "RSA_2048",
    Rsa3072 => "RSA_3072",
    Rsa4096 => "RSA_4096",
    EccNistP256 => "ECC_NIST_P256",
    EccNistP384 => "ECC_NIST_P384",
    EccNistP521 => "ECC_NIST_P521",
    EccSecgP256k1 => "ECC_SECG_P256K1",
    Sm2 => "SM2",
    EccNistEdwards25519 => "ECC_NIST_EDWARDS25519",
});

named_enum!(MessageType, "messageType", {
    Raw => "RAW",
    Digest => "DIGEST",
    ExternalMu => "EXTERNAL_MU",
});

impl EncryptionAlgorithm {
    pub fn oaep_hash(self) -> Option<Hash> {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => Some(Hash::Sha1),
            EncryptionAlgorithm::RsaesOaepSha256 => Some(Hash::Sha256),
            _ => None,
        }
    }
}

impl SigningAlgorithm {
    /// The hash of a RAW message (and the length of a DIGEST one); None for ML-DSA, whose SHAKE256
    /// this server has no use for (it has no ML-DSA keys).
    pub fn hash(self) -> Option<Hash> {
        use SigningAlgorithm::*;
        match self {
            RsassaPssSha256 | RsassaPkcs1V15Sha256 | EcdsaSha256 | Sm2Dsa => Some(Hash::Sha256),
            RsassaPssSha384 | RsassaPkcs1V15Sha384 | EcdsaSha384 => Some(Hash::Sha384),
            RsassaPssSha512 | RsassaPkcs1V15Sha512 | EcdsaSha512 | Ed25519Sha512 | Ed25519PhSha512 => {
                Some(Hash::Sha512)
            }
            MlDsaShake256 => None,
        }
    }
}

impl MacAlgorithm {
    pub fn hash(self) -> Hash {
        match self {
            MacAlgorithm::HmacSha224 => Hash::Sha224,
            MacAlgorithm::HmacSha256 => Hash::Sha256,
            MacAlgorithm::HmacSha384 => Hash::Sha384,
            MacAlgorithm::HmacSha512 => Hash::Sha512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in SigningAlgorithm::ALL {
            assert_eq!(SigningAlgorithm::parse("s", a.as_str()).unwrap(), *a);
        }
        assert!(SigningAlgorithm::parse("s", "ECDSA_SHA_1").is_err());
        // AWS's newer names are known (so that using one on a key is InvalidKeyUsage, not Validation).
        for name in ["ML_DSA_SHAKE_256", "ED25519_SHA_512", "ED25519_PH_SHA_512"] {
            assert!(SigningAlgorithm::parse("s", name).is_ok());
        }
        assert!(KeyPairSpec::parse("k", "ECC_NIST_EDWARDS25519").is_ok());
        // ML-KEM is a CreateKey KeySpec only: AWS's DataKeyPairSpec has no such value.
        assert!(KeyPairSpec::parse("k", "ML_KEM_768").is_err());
        assert_eq!(Hash::Sha384.digest(b"abc").len(), 48);
        assert_eq!(MacAlgorithm::HmacSha224.hash().output_len(), 28);
    }
}
