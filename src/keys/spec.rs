//! Key specs, key usages and origins, and which combinations AWS KMS allows.

use super::algorithms::{EncryptionAlgorithm, MacAlgorithm, SigningAlgorithm};
use crate::error::{KmsError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    SymmetricDefault,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccNistP256,
    EccNistP384,
    Hmac224,
    Hmac256,
    Hmac384,
    Hmac512,
}

/// Every spec AWS defines, in its order; the ones this server lacks get UnsupportedOperationException.
pub const AWS_KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

const SPECS: &[(KeySpec, &str)] = &[
    (KeySpec::SymmetricDefault, "SYMMETRIC_DEFAULT"),
    (KeySpec::Rsa2048, "RSA_2048"),
    (KeySpec::Rsa3072, "RSA_3072"),
    (KeySpec::Rsa4096, "RSA_4096"),
    (KeySpec::EccNistP256, "ECC_NIST_P256"),
    (KeySpec::EccNistP384, "ECC_NIST_P384"),
    (KeySpec::Hmac224, "HMAC_224"),
    (KeySpec::Hmac256, "HMAC_256"),
    (KeySpec::Hmac384, "HMAC_384"),
    (KeySpec::Hmac512, "HMAC_512"),
];

impl KeySpec {
    pub fn as_str(self) -> &'static str {
        SPECS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, s)| *s)
            .unwrap_or("SYMMETRIC_DEFAULT")
    }

    pub fn parse(field: &str, s: &str) -> Result<Self> {
        if let Some((k, _)) = SPECS.iter().find(|(_, name)| *name == s) {
            return Ok(*k);
        }
        if AWS_KEY_SPECS.contains(&s) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{field} {s} is not supported by this server"
            )));
        }
        Err(enum_error(field, s, AWS_KEY_SPECS))
    }

    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512
        )
    }

    /// The key type UpdateAlias compares: "symmetric", "asymmetric" or "HMAC".
    pub fn key_type(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "symmetric",
            _ if self.is_hmac() => "HMAC",
            _ => "asymmetric",
        }
    }

    /// The usages AWS allows for this spec, but KEY_AGREEMENT (see `allows_key_agreement`).
    pub fn usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::SymmetricDefault => &[KeyUsage::EncryptDecrypt],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[KeyUsage::EncryptDecrypt, KeyUsage::SignVerify],
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => &[KeyUsage::SignVerify],
            _ => &[KeyUsage::GenerateVerifyMac],
        }
    }

    /// AWS allows KEY_AGREEMENT for NIST ECC keys (and SM2, which this server lacks); this server
    /// has no key agreement (DeriveSharedSecret).
    pub fn allows_key_agreement(self) -> bool {
        matches!(self, KeySpec::EccNistP256 | KeySpec::EccNistP384)
    }

    /// CreateKey's KeyUsage for this spec: SYMMETRIC_DEFAULT defaults to ENCRYPT_DECRYPT; other
    /// specs need one, as in AWS. A usage AWS doesn't allow with the spec is a ValidationException;
    /// KEY_AGREEMENT where AWS allows it is UnsupportedOperationException (not implemented).
    pub fn usage(self, requested: Option<&str>) -> Result<KeyUsage> {
        let names = || {
            let mut names: Vec<&str> = self.usages().iter().map(|u| u.as_str()).collect();
            if self.allows_key_agreement() {
                names.push(KEY_AGREEMENT);
            }
            names.join(", ")
        };
        let invalid = |usage: &str| {
            KmsError::validation(format!(
                "KeyUsage {usage} is not valid for KeySpec {}; valid: {}",
                self.as_str(),
                names()
            ))
        };
        match requested {
            None if self == KeySpec::SymmetricDefault => Ok(KeyUsage::EncryptDecrypt),
            None => Err(KmsError::validation(format!(
                "KeyUsage is required for KeySpec {}; valid: {}",
                self.as_str(),
                names()
            ))),
            Some(KEY_AGREEMENT) if self.allows_key_agreement() => Err(KmsError::UnsupportedOperation(format!(
                "KeyUsage KEY_AGREEMENT (for {}) is not supported by this server",
                self.as_str()
            ))),
            Some(KEY_AGREEMENT) => Err(invalid(KEY_AGREEMENT)),
            // Only ML-KEM keys, which this server lacks, take it.
            Some(ENCAPSULATE_DECAPSULATE) => Err(invalid(ENCAPSULATE_DECAPSULATE)),
            Some(u) => match KeyUsage::parse(u)? {
                usage if self.usages().contains(&usage) => Ok(usage),
                usage => Err(invalid(usage.as_str())),
            },
        }
    }

    /// The largest plaintext RSAES-OAEP with `algorithm` takes under this RSA spec: k - 2 hLen - 2.
    pub fn oaep_limit(self, algorithm: EncryptionAlgorithm) -> Option<usize> {
        let k = self.rsa_bits()? / 8;
        let h = algorithm.oaep_hash()?.output_len();
        Some(k.saturating_sub(2 * h + 2))
    }

    pub fn encryption_algorithms(self, usage: KeyUsage) -> Vec<EncryptionAlgorithm> {
        match (self, usage) {
            (KeySpec::SymmetricDefault, _) => vec![EncryptionAlgorithm::SymmetricDefault],
            (_, KeyUsage::EncryptDecrypt) if self.rsa_bits().is_some() => {
                vec![EncryptionAlgorithm::RsaesOaepSha1, EncryptionAlgorithm::RsaesOaepSha256]
            }
            _ => Vec::new(),
        }
    }

    pub fn signing_algorithms(self, usage: KeyUsage) -> Vec<SigningAlgorithm> {
        use SigningAlgorithm::*;
        match (self, usage) {
            (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, KeyUsage::SignVerify) => vec![
                RsassaPssSha256,
                RsassaPssSha384,
                RsassaPssSha512,
                RsassaPkcs1V15Sha256,
                RsassaPkcs1V15Sha384,
                RsassaPkcs1V15Sha512,
            ],
            (KeySpec::EccNistP256, _) => vec![EcdsaSha256],
            (KeySpec::EccNistP384, _) => vec![EcdsaSha384],
            _ => Vec::new(),
        }
    }

    pub fn mac_algorithms(self) -> Vec<MacAlgorithm> {
        match self {
            KeySpec::Hmac224 => vec![MacAlgorithm::HmacSha224],
            KeySpec::Hmac256 => vec![MacAlgorithm::HmacSha256],
            KeySpec::Hmac384 => vec![MacAlgorithm::HmacSha384],
            KeySpec::Hmac512 => vec![MacAlgorithm::HmacSha512],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    EncryptDecrypt,
    SignVerify,
    GenerateVerifyMac,
}

pub const AWS_KEY_USAGES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    KEY_AGREEMENT,
    ENCAPSULATE_DECAPSULATE,
];
const KEY_AGREEMENT: &str = "KEY_AGREEMENT";
const ENCAPSULATE_DECAPSULATE: &str = "ENCAPSULATE_DECAPSULATE";

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ENCRYPT_DECRYPT" => Ok(KeyUsage::EncryptDecrypt),
            "SIGN_VERIFY" => Ok(KeyUsage::SignVerify),
            "GENERATE_VERIFY_MAC" => Ok(KeyUsage::GenerateVerifyMac),
            KEY_AGREEMENT | ENCAPSULATE_DECAPSULATE => Err(KmsError::UnsupportedOperation(format!(
                "KeyUsage {s} is not supported by this server"
            ))),
            other => Err(enum_error("keyUsage", other, AWS_KEY_USAGES)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    AwsKms,
}

pub const AWS_ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::AwsKms => "AWS_KMS",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "AWS_KMS" => Ok(Origin::AwsKms),
            other if AWS_ORIGINS.contains(&other) => Err(KmsError::UnsupportedOperation(format!(
                "Origin {other} is not supported by this server yet; supported: AWS_KMS"
            ))),
            other => Err(enum_error("origin", other, AWS_ORIGINS)),
        }
    }
}

/// The ValidationException AWS gives for a value outside an enumeration.
pub fn enum_error(field: &str, value: &str, allowed: &[&str]) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value '{}' at '{field}' failed to satisfy constraint: \
         Member must satisfy enum value set: [{}]",
        crate::error::quoted(value),
        allowed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_usage_rules() {
        assert_eq!(KeySpec::SymmetricDefault.usage(None).unwrap(), KeyUsage::EncryptDecrypt);
        assert!(KeySpec::Rsa2048.usage(None).is_err());
        assert_eq!(
            KeySpec::Rsa2048.usage(Some("SIGN_VERIFY")).unwrap(),
            KeyUsage::SignVerify
        );
        assert!(KeySpec::EccNistP256.usage(Some("ENCRYPT_DECRYPT")).is_err());
        assert!(KeySpec::Hmac256.usage(Some("SIGN_VERIFY")).is_err());
        // KEY_AGREEMENT: valid (but not implemented) for NIST ECC only.
        for spec in [KeySpec::EccNistP256, KeySpec::EccNistP384] {
            assert!(matches!(
                spec.usage(Some("KEY_AGREEMENT")),
                Err(KmsError::UnsupportedOperation(_))
            ));
        }
        for spec in [KeySpec::SymmetricDefault, KeySpec::Rsa4096, KeySpec::Hmac512] {
            assert!(matches!(
                spec.usage(Some("KEY_AGREEMENT")),
                Err(KmsError::Validation(_))
            ));
        }
        assert!(matches!(
            KeySpec::Rsa2048.usage(Some("SIGN")),
            Err(KmsError::Validation(_))
        ));
        assert_eq!(
            KeySpec::Rsa2048.oaep_limit(EncryptionAlgorithm::RsaesOaepSha256),
            Some(190)
        );
        assert_eq!(
            KeySpec::Rsa4096.oaep_limit(EncryptionAlgorithm::RsaesOaepSha1),
            Some(470)
        );
        assert_eq!(KeySpec::Rsa3072.oaep_limit(EncryptionAlgorithm::SymmetricDefault), None);
        for (k, s) in SPECS {
            assert_eq!(KeySpec::parse("keySpec", s).unwrap(), *k);
            assert_eq!(k.as_str(), *s);
        }
        for unsupported in ["SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519"] {
            assert!(matches!(
                KeySpec::parse("keySpec", unsupported),
                Err(KmsError::UnsupportedOperation(_))
            ));
        }
        assert!(matches!(
            KeySpec::parse("keySpec", "RSA_1024"),
            Err(KmsError::Validation(_))
        ));
    }
}
