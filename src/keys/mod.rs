//! Domain types of KMS keys: metadata, specs, states, identifiers, the ciphertext format.

pub mod algorithms;
pub mod ciphertext;
pub mod context;
pub mod dry_run;
pub mod key_ref;
pub mod names;
pub mod spec;

pub use spec::{enum_error, KeySpec, KeyUsage, Origin};

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
    /// DER SubjectPublicKeyInfo of an asymmetric key; public, so stored in the clear.
    pub public_key: Option<Vec<u8>>,
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
