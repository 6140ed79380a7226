//! Domain types of KMS keys: metadata, specs, states, identifiers, the ciphertext format.

pub mod ciphertext;
pub mod context;
pub mod key_ref;
pub mod names;

use crate::error::{KmsError, Result};

/// AWS KMS key states this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "Enabled" => Ok(KeyState::Enabled),
            "Disabled" => Ok(KeyState::Disabled),
            "PendingDeletion" => Ok(KeyState::PendingDeletion),
            other => Err(KmsError::internal(format!("unknown key state {other:?} in the store"))),
        }
    }
}

/// Key specs. Only symmetric keys are implemented so far; the other AWS specs are recognised so that
/// asking for one gets a clear UnsupportedOperationException rather than a "no such value".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    SymmetricDefault,
}

pub const AWS_KEY_SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
];

impl KeySpec {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Self> {
        match s {
            "SYMMETRIC_DEFAULT" => Ok(KeySpec::SymmetricDefault),
            other if AWS_KEY_SPECS.contains(&other) => Err(KmsError::UnsupportedOperation(format!(
                "{field} {other} is not supported by this server yet; supported: SYMMETRIC_DEFAULT"
            ))),
            other => Err(enum_error(field, other, AWS_KEY_SPECS)),
        }
    }

    pub fn encryption_algorithms(self) -> &'static [&'static str] {
        match self {
            KeySpec::SymmetricDefault => &["SYMMETRIC_DEFAULT"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    EncryptDecrypt,
}

pub const AWS_KEY_USAGES: &[&str] = &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"];

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ENCRYPT_DECRYPT" => Ok(KeyUsage::EncryptDecrypt),
            other if AWS_KEY_USAGES.contains(&other) => Err(KmsError::validation(format!(
                "KeyUsage {other} is not valid for KeySpec SYMMETRIC_DEFAULT; valid: ENCRYPT_DECRYPT"
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
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
         Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

/// A KMS key's metadata as stored. The ARN is derived from the server's region and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub creation_date: i64,
    pub description: String,
    pub state: KeyState,
    pub deletion_date: Option<i64>,
    pub pending_window_days: Option<i32>,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub origin: Origin,
    /// The material new ciphertexts are made with; older materials still decrypt.
    pub current_material: u32,
    /// Bumped by every update; lets caches tell a newer record from an older one.
    pub version: u64,
}

/// One key material, as persisted: only ever wrapped under the HSM's root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialRecord {
    pub key_id: String,
    pub material_id: u32,
    pub wrapped: Vec<u8>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    pub name: String,
    pub target_key_id: String,
    pub creation_date: i64,
    pub last_updated_date: i64,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
