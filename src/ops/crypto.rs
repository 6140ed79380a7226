//! Cryptographic operations on symmetric keys: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
//! GenerateRandom. The hot path (GenerateDataKey, Decrypt) touches no disk and no HSM when the key's
//! record and material are cached.

use std::sync::Arc;

use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::material::{wrap_aad, Material};
use super::Kms;
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::ciphertext;
use crate::keys::context::EncryptionContext;
use crate::keys::key_ref::Accept;
use crate::keys::{enum_error, KeyRecord, KeyState, KeyUsage};

pub const MAX_PLAINTEXT: usize = 4096;
const MAX_GRANT_TOKENS: usize = 10;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
const ENCRYPTION_ALGORITHMS: &[&str] = &[SYMMETRIC_DEFAULT, "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"];

/// The length of a data key: KeySpec AES_128 / AES_256, or NumberOfBytes 1-1024; exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKeySpec(pub usize);

impl DataKeySpec {
    pub fn from_request(key_spec: Option<&str>, number_of_bytes: Option<i32>) -> Result<DataKeySpec> {
        match (key_spec, number_of_bytes) {
            (Some(_), Some(_)) => Err(KmsError::validation("Give either KeySpec or NumberOfBytes, not both")),
            (None, None) => Err(KmsError::validation(
                "Give KeySpec (AES_128 or AES_256) or NumberOfBytes (1-1024)",
            )),
            (Some("AES_128"), None) => Ok(DataKeySpec(16)),
            (Some("AES_256"), None) => Ok(DataKeySpec(32)),
            (Some(other), None) => Err(enum_error("keySpec", other, &["AES_256", "AES_128"])),
            (None, Some(n @ 1..=1024)) => Ok(DataKeySpec(n as usize)),
            (None, Some(n)) => Err(KmsError::validation(format!(
                "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: \
                 Member must have value between 1 and 1024"
            ))),
        }
    }
}

pub struct Decrypted {
    pub key_arn: String,
    pub plaintext: Zeroizing<Vec<u8>>,
}

pub struct ReEncrypted {
    pub ciphertext: Vec<u8>,
    pub source_key_arn: String,
    pub key_arn: String,
}

pub struct DataKey {
    pub ciphertext: Vec<u8>,
    pub plaintext: Zeroizing<Vec<u8>>,
    pub key_arn: String,
}

impl Kms {
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: Zeroizing<Vec<u8>>,
        context: &EncryptionContext,
        algorithm: Option<&str>,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<(Vec<u8>, String)> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: \
                 Member must have length between 1 and {MAX_PLAINTEXT}, got {}",
                plaintext.len()
            )));
        }
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = context.keys();
        let key = self.resolve("keyId", key_id, Accept::KeyOrAlias, ev).await?;
        self.usable(&key)?;
        check_algorithm("encryptionAlgorithm", algorithm)?;
        let blob = self.seal(&key, context, &plaintext).await?;
        Ok((blob, self.key_arn(&key.key_id)))
    }

    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        key_id: Option<&str>,
        algorithm: Option<&str>,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<Decrypted> {
        check_grant_tokens(grant_tokens)?;
        check_algorithm("encryptionAlgorithm", algorithm)?;
        ev.encryption_context_keys = context.keys();
        let (key, plaintext) = self.open_blob(blob, context, "keyId", key_id, ev).await?;
        Ok(Decrypted {
            key_arn: self.key_arn(&key.key_id),
            plaintext,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        source_key_id: Option<&str>,
        destination_key_id: &str,
        destination_context: &EncryptionContext,
        algorithms: (Option<&str>, Option<&str>),
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<ReEncrypted> {
        check_grant_tokens(grant_tokens)?;
        check_algorithm("sourceEncryptionAlgorithm", algorithms.0)?;
        check_algorithm("destinationEncryptionAlgorithm", algorithms.1)?;
        ev.encryption_context_keys = destination_context.keys();
        let (source, plaintext) = self
            .open_blob(blob, source_context, "sourceKeyId", source_key_id, ev)
            .await?;
        let source_key_arn = self.key_arn(&source.key_id);
        ev.source_key_arn = Some(source_key_arn.clone());
        let destination = self
            .resolve("destinationKeyId", destination_key_id, Accept::KeyOrAlias, ev)
            .await?;
        self.usable(&destination)?;
        let ciphertext = self.seal(&destination, destination_context, &plaintext).await?;
        Ok(ReEncrypted {
            ciphertext,
            source_key_arn,
            key_arn: self.key_arn(&destination.key_id),
        })
    }

    pub async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
        spec: DataKeySpec,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<DataKey> {
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = context.keys();
        let key = self.resolve("keyId", key_id, Accept::KeyOrAlias, ev).await?;
        self.usable(&key)?;
        let mut plaintext = Zeroizing::new(vec![0u8; spec.0]);
        self.rng
            .fill(&mut plaintext)
            .map_err(|_| KmsError::internal("the system RNG failed"))?;
        let ciphertext = self.seal(&key, context, &plaintext).await?;
        Ok(DataKey {
            ciphertext,
            plaintext,
            key_arn: self.key_arn(&key.key_id),
        })
    }

    /// Random bytes from the HSM's RNG.
    pub async fn generate_random(&self, number_of_bytes: Option<i32>) -> Result<Zeroizing<Vec<u8>>> {
        let n = match number_of_bytes {
            Some(n @ 1..=1024) => n as usize,
            other => {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: Value '{}' at 'numberOfBytes' failed to satisfy constraint: \
                     Member must have value between 1 and 1024",
                    other.map(|n| n.to_string()).unwrap_or_else(|| "null".into())
                )))
            }
        };
        self.hsm.call(move |h| h.random(n)).await
    }

    /// Crypto needs an Enabled key whose usage is ENCRYPT_DECRYPT.
    fn usable(&self, key: &KeyRecord) -> Result<()> {
        let arn = self.key_arn(&key.key_id);
        match key.state {
            KeyState::Enabled => {}
            KeyState::Disabled => return Err(KmsError::Disabled(format!("{arn} is disabled."))),
            KeyState::PendingDeletion => return Err(KmsError::InvalidState(format!("{arn} is pending deletion."))),
        }
        if key.key_usage != KeyUsage::EncryptDecrypt {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{arn} has key usage {}; this operation needs ENCRYPT_DECRYPT",
                key.key_usage.as_str()
            )));
        }
        Ok(())
    }

    async fn seal(&self, key: &KeyRecord, context: &EncryptionContext, plaintext: &[u8]) -> Result<Vec<u8>> {
        let material = self.material(&key.key_id, key.current_material).await?;
        material.seal(&self.rng, &key.key_id, key.current_material, context, plaintext)
    }

    /// Parses and opens a blob; the blob names its key. A key id the caller gave must match it.
    async fn open_blob(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        field: &str,
        expected: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<(Arc<KeyRecord>, Zeroizing<Vec<u8>>)> {
        let parsed = ciphertext::parse(blob)?;
        if let Some(expected) = expected {
            let named = self.resolve(field, expected, Accept::KeyOrAlias, ev).await?;
            if named.key_id != parsed.key_id {
                return Err(KmsError::IncorrectKey(format!(
                    "The ciphertext was not encrypted under {}",
                    self.key_arn(&named.key_id)
                )));
            }
        }
        ev.key_arn = Some(self.key_arn(&parsed.key_id));
        // A blob naming an unknown key or material was not made here (or was changed): the caller
        // learns only that the ciphertext is invalid.
        let invalid =
            || KmsError::InvalidCiphertext("The ciphertext refers to a key or key material that does not exist".into());
        let key = self.key(&parsed.key_id).await?.ok_or_else(invalid)?;
        self.usable(&key)?;
        if parsed.material_id == 0 || parsed.material_id > key.current_material {
            return Err(invalid());
        }
        let material = self.material(&key.key_id, parsed.material_id).await?;
        let plaintext = material.open(&parsed, context)?;
        Ok((key, plaintext))
    }

    /// The unwrapped material, from the cache or unwrapped in the HSM.
    pub(super) async fn material(&self, key_id: &str, material_id: u32) -> Result<Arc<Material>> {
        let cache_key = (key_id.to_string(), material_id);
        if let Some(m) = self.materials.get(&cache_key) {
            return Ok(m);
        }
        let seen = self.materials.generation(&cache_key);
        let owned = key_id.to_string();
        let record = self
            .store(move |s| s.get_material(&owned, material_id))
            .await?
            .ok_or_else(|| {
                KmsError::InvalidCiphertext("The ciphertext refers to key material that does not exist".into())
            })?;
        let aad = wrap_aad(key_id, material_id);
        let plain = self.hsm.call(move |h| h.unwrap(&record.wrapped, &aad)).await?;
        let material = Arc::new(Material::new(&plain)?);
        self.materials.insert_if_unchanged(cache_key, seen, material.clone());
        Ok(material)
    }
}

fn check_algorithm(field: &str, algorithm: Option<&str>) -> Result<()> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) if ENCRYPTION_ALGORITHMS.contains(&a) => Err(KmsError::InvalidKeyUsage(format!(
            "{field} {a} is not valid for a symmetric key; valid: SYMMETRIC_DEFAULT"
        ))),
        Some(a) => Err(enum_error(field, a, ENCRYPTION_ALGORITHMS)),
    }
}

fn check_grant_tokens(tokens: &[String]) -> Result<()> {
    if tokens.len() > MAX_GRANT_TOKENS {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: \
             Member must have length less than or equal to {MAX_GRANT_TOKENS}"
        )));
    }
    if tokens.iter().any(|t| t.is_empty() || t.len() > 8192) {
        return Err(KmsError::validation("Each grant token must be 1 to 8192 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_spec_rules() {
        assert_eq!(
            DataKeySpec::from_request(Some("AES_256"), None).unwrap(),
            DataKeySpec(32)
        );
        assert_eq!(
            DataKeySpec::from_request(Some("AES_128"), None).unwrap(),
            DataKeySpec(16)
        );
        assert_eq!(DataKeySpec::from_request(None, Some(1024)).unwrap(), DataKeySpec(1024));
        for bad in [
            DataKeySpec::from_request(Some("AES_256"), Some(32)),
            DataKeySpec::from_request(None, None),
            DataKeySpec::from_request(Some("AES_512"), None),
            DataKeySpec::from_request(None, Some(0)),
            DataKeySpec::from_request(None, Some(1025)),
        ] {
            assert!(matches!(bad, Err(KmsError::Validation(_))));
        }
    }

    #[test]
    fn algorithms() {
        assert!(check_algorithm("a", None).is_ok());
        assert!(check_algorithm("a", Some("SYMMETRIC_DEFAULT")).is_ok());
        assert!(matches!(
            check_algorithm("a", Some("RSAES_OAEP_SHA_1")),
            Err(KmsError::InvalidKeyUsage(_))
        ));
        assert!(matches!(
            check_algorithm("a", Some("ROT13")),
            Err(KmsError::Validation(_))
        ));
    }
}
