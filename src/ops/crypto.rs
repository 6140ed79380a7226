//! Encryption operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
//! GenerateRandom. Symmetric keys seal into the self-describing blob; RSA keys use RSAES-OAEP.
//! The hot path (GenerateDataKey, Decrypt) touches no disk and no HSM when the key's record and
//! material are cached.

use std::sync::Arc;

use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::material::{wrap_aad, Material};
use super::{Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::algorithms::EncryptionAlgorithm;
use crate::keys::ciphertext::{self, MAX_BLOB, NONCE_LEN};
use crate::keys::context::EncryptionContext;
use crate::keys::dry_run::DryRun;
use crate::keys::key_ref::{check_key_id_length, Accept};
use crate::keys::names;
use crate::keys::{enum_error, KeyRecord, KeySpec, KeyState, KeyUsage, MaterialRecord};
use crate::policy::keys as ck;

pub const MAX_PLAINTEXT: usize = 4096;
const MAX_GRANT_TOKENS: usize = 10;

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
    pub algorithm: EncryptionAlgorithm,
}

pub struct ReEncrypted {
    pub ciphertext: Vec<u8>,
    pub source_key_arn: String,
    pub key_arn: String,
    pub source_algorithm: EncryptionAlgorithm,
    pub destination_algorithm: EncryptionAlgorithm,
}

pub struct DataKey {
    pub ciphertext: Vec<u8>,
    pub plaintext: Zeroizing<Vec<u8>>,
    pub key_arn: String,
}

impl Kms {
    #[allow(clippy::too_many_arguments)]
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: Zeroizing<Vec<u8>>,
        context: &EncryptionContext,
        algorithm: Option<&str>,
        grant_tokens: &[String],
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<(Vec<u8>, String, EncryptionAlgorithm)> {
        names::length("plaintext", plaintext.len(), 1, MAX_PLAINTEXT)?;
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = context.keys();
        parse_name("encryptionAlgorithm", algorithm)?;
        let access = Access::new("kms:Encrypt")
            .grant_tokens(grant_tokens)
            .context(context)
            .with(ck::ENCRYPTION_ALGORITHM, algorithm.unwrap_or("SYMMETRIC_DEFAULT"));
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOrAlias, ev).await?;
        self.usable(&key, KeyUsage::EncryptDecrypt)?;
        let algorithm = encryption_algorithm(&key, "encryptionAlgorithm", algorithm)?;
        check_encryption(&key, algorithm, (context, "EncryptionContext"), Some(plaintext.len()))?;
        dry_run.stop()?;
        let blob = self.encrypt_with(&key, algorithm, context, &plaintext).await?;
        Ok((blob, self.key_arn(&key.key_id), algorithm))
    }

    /// A dry run decrypts too, to check the ciphertext (the plaintext is dropped, zeroized), unless
    /// it says IGNORE_CIPHERTEXT.
    #[allow(clippy::too_many_arguments)]
    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        key_id: Option<&str>,
        algorithm: Option<&str>,
        grant_tokens: &[String],
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<Decrypted> {
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = context.keys();
        let source = Source {
            action: "kms:Decrypt",
            field: "keyId",
            algorithm_field: "encryptionAlgorithm",
            context_field: "EncryptionContext",
            key_id,
            algorithm,
            grant_tokens,
            destination_key_id: None,
        };
        if dry_run == DryRun::IgnoreCiphertext {
            self.check_source_key(blob, context, source, ev).await?;
            return Err(KmsError::dry_run());
        }
        let (key, plaintext, algorithm) = self.decrypt_any(blob, context, source, ev).await?;
        dry_run.stop()?;
        Ok(Decrypted {
            key_arn: self.key_arn(&key.key_id),
            plaintext,
            algorithm,
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
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<ReEncrypted> {
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = destination_context.keys();
        ev.source_encryption_context_keys = source_context.keys();
        parse_name("sourceEncryptionAlgorithm", algorithms.0)?;
        parse_name("destinationEncryptionAlgorithm", algorithms.1)?;
        // Before any key is looked up, as AWS checks it (a dry run that ignores it may be empty).
        let min_blob = usize::from(dry_run != DryRun::IgnoreCiphertext);
        names::length("ciphertextBlob", blob.len(), min_blob, MAX_BLOB)?;
        check_key_id_length("destinationKeyId", destination_key_id)?;
        if let Some(source) = source_key_id {
            check_key_id_length("sourceKeyId", source)?;
        }
        // The destination key, looked up once before anything is decided: kms:ReEncryptOnSameKey
        // is part of both decisions (ReEncryptFrom and ReEncryptTo), which must see the same key.
        let destination = self
            .lookup("destinationKeyId", destination_key_id, Accept::KeyOrAlias, ev)
            .await?;
        let destination_alias = ev.request_alias.take();
        let destination_id = destination.key_id.clone();
        let source = Source {
            action: "kms:ReEncryptFrom",
            field: "sourceKeyId",
            algorithm_field: "sourceEncryptionAlgorithm",
            context_field: "SourceEncryptionContext",
            key_id: source_key_id,
            algorithm: algorithms.0,
            grant_tokens,
            destination_key_id: Some(&destination_id),
        };
        let (source, plaintext, source_algorithm) = if dry_run == DryRun::IgnoreCiphertext {
            let (key, algorithm) = self.check_source_key(blob, source_context, source, ev).await?;
            (key, None, algorithm)
        } else {
            let (key, plaintext, algorithm) = self.decrypt_any(blob, source_context, source, ev).await?;
            (key, Some(plaintext), algorithm)
        };
        let source_key_arn = self.key_arn(&source.key_id);
        ev.source_key_arn = Some(source_key_arn.clone());
        let access = Access::new("kms:ReEncryptTo")
            .grant_tokens(grant_tokens)
            .context(destination_context)
            .with(ck::ENCRYPTION_ALGORITHM, algorithms.1.unwrap_or("SYMMETRIC_DEFAULT"))
            .with(ck::RE_ENCRYPT_ON_SAME_KEY, same_key(&source.key_id, &destination_id));
        // The destination's decision sees the destination's alias and is audited under its ARN.
        ev.request_alias = destination_alias;
        ev.key_arn = Some(self.key_arn(&destination.key_id));
        self.authorize(ev, &access, &destination).await?;
        self.usable(&destination, KeyUsage::EncryptDecrypt)?;
        let destination_algorithm = encryption_algorithm(&destination, "destinationEncryptionAlgorithm", algorithms.1)?;
        let plaintext_len = plaintext.as_ref().map(|p| p.len());
        let destination_context_named = (destination_context, "DestinationEncryptionContext");
        check_encryption(
            &destination,
            destination_algorithm,
            destination_context_named,
            plaintext_len,
        )?;
        dry_run.stop()?;
        // Only a dry run (IGNORE_CIPHERTEXT) has no plaintext, and it stopped above.
        let plaintext = plaintext.ok_or_else(KmsError::dry_run)?;
        let ciphertext = self
            .encrypt_with(&destination, destination_algorithm, destination_context, &plaintext)
            .await?;
        Ok(ReEncrypted {
            ciphertext,
            source_key_arn,
            key_arn: self.key_arn(&destination.key_id),
            source_algorithm,
            destination_algorithm,
        })
    }

    /// GenerateDataKey and GenerateDataKeyWithoutPlaintext (`action` tells which).
    #[allow(clippy::too_many_arguments)]
    pub async fn generate_data_key(
        &self,
        action: &'static str,
        key_id: &str,
        context: &EncryptionContext,
        spec: DataKeySpec,
        grant_tokens: &[String],
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<DataKey> {
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = context.keys();
        let key = self
            .resolve(
                Access::new(action)
                    .context(context)
                    .grant_tokens(grant_tokens)
                    // As AWS: the data key is protected with SYMMETRIC_DEFAULT (a policy may require it).
                    .with(ck::ENCRYPTION_ALGORITHM, "SYMMETRIC_DEFAULT"),
                "keyId",
                key_id,
                Accept::KeyOrAlias,
                ev,
            )
            .await?;
        self.symmetric_encryption_key(&key)?;
        dry_run.stop()?;
        // The data key and the seal's nonce from one RNG call (one syscall fewer per request).
        let mut random = Zeroizing::new(vec![0u8; spec.0 + NONCE_LEN]);
        self.rng
            .fill(&mut random)
            .map_err(|_| KmsError::internal("the system RNG failed"))?;
        let (plaintext, nonce) = random.split_at(spec.0);
        let nonce: &[u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| KmsError::internal("nonce of the wrong length"))?;
        let material = self.material(&key, key.current_material).await?;
        let ciphertext =
            material
                .symmetric()?
                .seal_with_nonce(nonce, &key.key_id, key.current_material, context, plaintext)?;
        let plaintext = Zeroizing::new(plaintext.to_vec());
        Ok(DataKey {
            ciphertext,
            plaintext,
            key_arn: self.key_arn(&key.key_id),
        })
    }

    /// Random bytes from the HSM's RNG.
    pub async fn generate_random(
        &self,
        number_of_bytes: Option<i32>,
        ev: &mut AuditEvent,
    ) -> Result<Zeroizing<Vec<u8>>> {
        // Input first, as AWS and every other operation here: a bad length is a
        // ValidationException whoever asks.
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
        self.authorize_account(ev, &Access::new("kms:GenerateRandom"))?;
        self.hsm.call(move |h| h.random(n)).await
    }

    /// Crypto needs an Enabled key of the right usage.
    pub(super) fn usable(&self, key: &KeyRecord, usage: KeyUsage) -> Result<()> {
        self.enabled(key)?;
        if key.key_usage != usage {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{} has key usage {}; this operation needs {}",
                self.key_arn(&key.key_id),
                key.key_usage.as_str(),
                usage.as_str()
            )));
        }
        Ok(())
    }

    /// Disabled keys refuse with DisabledException, keys pending deletion with KMSInvalidStateException.
    pub(super) fn enabled(&self, key: &KeyRecord) -> Result<()> {
        let arn = || self.key_arn(&key.key_id);
        match key.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!("{} is disabled.", arn()))),
            KeyState::PendingDeletion => Err(KmsError::InvalidState(format!("{} is pending deletion.", arn()))),
        }
    }

    /// Data keys and data key pairs are encrypted only under symmetric encryption keys.
    pub(super) fn symmetric_encryption_key(&self, key: &KeyRecord) -> Result<()> {
        self.usable(key, KeyUsage::EncryptDecrypt)?;
        if key.key_spec != KeySpec::SymmetricDefault {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{} is a {} key; this operation needs a SYMMETRIC_DEFAULT key",
                self.key_arn(&key.key_id),
                key.key_spec.as_str()
            )));
        }
        Ok(())
    }

    pub(super) async fn seal(&self, key: &KeyRecord, context: &EncryptionContext, plaintext: &[u8]) -> Result<Vec<u8>> {
        let material = self.material(key, key.current_material).await?;
        material
            .symmetric()?
            .seal(&self.rng, &key.key_id, key.current_material, context, plaintext)
    }

    /// Encrypts what `check_encryption` accepted.
    async fn encrypt_with(
        &self,
        key: &KeyRecord,
        algorithm: EncryptionAlgorithm,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        if algorithm == EncryptionAlgorithm::SymmetricDefault {
            return self.seal(key, context, plaintext).await;
        }
        let material = self.material(key, key.current_material).await?;
        let plaintext = Zeroizing::new(plaintext.to_vec());
        self.cpu(move || material.private()?.rsa_encrypt(algorithm, &plaintext))
            .await
    }

    /// Decrypts a symmetric blob (which names its key) or, when the named key is RSA, an RSAES-OAEP
    /// ciphertext (which names nothing, so the caller must).
    async fn decrypt_any<'a>(
        &self,
        blob: &[u8],
        context: &'a EncryptionContext,
        source: Source<'a>,
        ev: &mut AuditEvent,
    ) -> Result<(Arc<KeyRecord>, Zeroizing<Vec<u8>>, EncryptionAlgorithm)> {
        names::length("ciphertextBlob", blob.len(), 1, MAX_BLOB)?;
        parse_name(source.algorithm_field, source.algorithm)?;
        // The access asked for on the source key (known from KeyId or, failing that, the blob).
        let access = |source_key_id: &str| source.access(context, source_key_id);
        let named = match source.key_id {
            Some(k) => Some(self.lookup(source.field, k, Accept::KeyOrAlias, ev).await?),
            None => None,
        };
        if let Some(key) = &named {
            self.authorize(ev, &access(&key.key_id), key).await?;
        }
        let incorrect_key = |named: &KeyRecord| {
            KmsError::IncorrectKey(format!(
                "The ciphertext was not encrypted under {}",
                self.key_arn(&named.key_id)
            ))
        };
        if let Some(key) = named.as_ref().filter(|k| k.key_spec != KeySpec::SymmetricDefault) {
            // A symmetric blob (no algorithm or SYMMETRIC_DEFAULT) names its key: decrypted with
            // KeyId naming a key that doesn't encrypt (HMAC, signing, key agreement), it is the
            // wrong key before that key's usage is looked at, as AWS answers for an HMAC key. Not
            // for an RSA encryption key: one OAEP ciphertext in ~128 parses as a symmetric blob,
            // and its answer must not depend on that.
            let symmetric = source
                .algorithm
                .is_none_or(|a| a == EncryptionAlgorithm::SymmetricDefault.as_str());
            if symmetric
                && key.key_usage != KeyUsage::EncryptDecrypt
                && ciphertext::parse(blob).is_ok_and(|parsed| parsed.key_id != key.key_id)
            {
                return Err(incorrect_key(key));
            }
            self.usable(key, KeyUsage::EncryptDecrypt)?;
            let algorithm = encryption_algorithm(key, source.algorithm_field, source.algorithm)?;
            refuse_context_for_asymmetric(context, source.context_field)?;
            let material = self.material(key, key.current_material).await?;
            let private = material.private()?;
            if blob.len() != private.modulus_len()? {
                return Err(KmsError::InvalidCiphertext(format!(
                    "An {} ciphertext is {} bytes long",
                    key.key_spec.as_str(),
                    private.modulus_len()?
                )));
            }
            let ciphertext = blob.to_vec();
            let plaintext = self
                .cpu(move || material.private()?.rsa_decrypt(algorithm, &ciphertext))
                .await?;
            return Ok((key.clone(), plaintext, algorithm));
        }
        let algorithm = source
            .algorithm
            .map(|a| EncryptionAlgorithm::parse(source.algorithm_field, a))
            .transpose()?;
        let parsed = ciphertext::parse(blob)?;
        if let Some(named) = &named {
            if named.key_id != parsed.key_id {
                return Err(incorrect_key(named));
            }
        }
        // A blob naming an unknown key or material was not made here (or was changed): the caller
        // learns only that the ciphertext is invalid, and the audit record names no key (a forged
        // header must not attribute the failure to a key of the forger's choosing).
        let invalid =
            || KmsError::InvalidCiphertext("The ciphertext refers to a key or key material that does not exist".into());
        let key = self.key(&parsed.key_id).await?.ok_or_else(invalid)?;
        ev.key_arn = Some(self.key_arn(&key.key_id));
        if named.is_none() {
            self.authorize(ev, &access(&key.key_id), &key).await?;
        }
        // Only symmetric keys make these blobs: one naming another kind of key was changed (its
        // key usage is none of the caller's business).
        if key.key_spec != KeySpec::SymmetricDefault {
            return Err(invalid());
        }
        // Checked only once the blob is known to name a real key: a random RSA ciphertext can look
        // like a symmetric header, and must still be called an invalid ciphertext.
        if algorithm.is_some_and(|a| a != EncryptionAlgorithm::SymmetricDefault) {
            return Err(KmsError::InvalidKeyUsage(
                "This is a SYMMETRIC_DEFAULT ciphertext; RSAES_OAEP_* apply to RSA keys, named with KeyId".into(),
            ));
        }
        self.usable(&key, KeyUsage::EncryptDecrypt)?;
        if parsed.material_id == 0 || parsed.material_id > key.current_material {
            return Err(invalid());
        }
        let material = self.material(&key, parsed.material_id).await?;
        let plaintext = material.symmetric()?.open(&parsed, context)?;
        Ok((key, plaintext, EncryptionAlgorithm::SymmetricDefault))
    }

    /// A dry run with IGNORE_CIPHERTEXT: the source key, which KeyId must name, is authorized and
    /// checked as for decrypting with it; the ciphertext is not looked at (it may be empty).
    async fn check_source_key<'a>(
        &self,
        blob: &[u8],
        context: &'a EncryptionContext,
        source: Source<'a>,
        ev: &mut AuditEvent,
    ) -> Result<(Arc<KeyRecord>, EncryptionAlgorithm)> {
        names::length("ciphertextBlob", blob.len(), 0, MAX_BLOB)?;
        parse_name(source.algorithm_field, source.algorithm)?;
        let key_id = source.key_id.ok_or_else(|| {
            KmsError::validation(format!(
                "{} is required when DryRun is true and DryRunModifiers includes IGNORE_CIPHERTEXT",
                source.field
            ))
        })?;
        let key = self.lookup(source.field, key_id, Accept::KeyOrAlias, ev).await?;
        self.authorize(ev, &source.access(context, &key.key_id), &key).await?;
        self.usable(&key, KeyUsage::EncryptDecrypt)?;
        let algorithm = encryption_algorithm(&key, source.algorithm_field, source.algorithm)?;
        if algorithm != EncryptionAlgorithm::SymmetricDefault {
            refuse_context_for_asymmetric(context, source.context_field)?;
        }
        Ok((key, algorithm))
    }

    /// The unwrapped material, from the cache or unwrapped in the HSM.
    pub(super) async fn material(&self, key: &KeyRecord, material_id: u32) -> Result<Arc<Material>> {
        let cache_key = (key.key_id.clone(), material_id);
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let unwrap = async {
            loaded.store(true, std::sync::atomic::Ordering::Relaxed);
            let record = self.wrapped_material(&cache_key, key.current_material).await?;
            let aad = wrap_aad(&key.key_id, material_id);
            let plain = self.hsm.call(move |h| h.unwrap(&record.wrapped, &aad)).await?;
            Ok(Arc::new(self.material_from_plain(key.key_spec, plain).await?))
        };
        let material = self.materials.get_or_load(&cache_key, unwrap).await?;
        // With the cache off nothing was kept, so there is nothing to drop.
        if loaded.load(std::sync::atomic::Ordering::Relaxed) && self.materials.is_enabled() {
            self.drop_material_unless_enabled(&key.key_id).await;
        }
        Ok(material)
    }

    /// The key `plain` encodes. A private key's PKCS#8 is parsed and checked (recomputing an EC
    /// public key, RSA's precomputation: up to milliseconds for P-384 and RSA 4096) on the
    /// private-key pool, not a runtime worker: with the material cache off, every Sign does it.
    async fn material_from_plain(&self, spec: KeySpec, plain: Zeroizing<Vec<u8>>) -> Result<Material> {
        if spec == KeySpec::SymmetricDefault || spec.is_hmac() {
            return Material::from_plain(spec, &plain);
        }
        self.cpu(move || Material::from_plain(spec, &plain)).await
    }

    /// The stored (wrapped) material, from memory when it was read before.
    async fn wrapped_material(&self, cache_key: &(String, u32), current: u32) -> Result<Arc<MaterialRecord>> {
        // Lazy: nothing below runs (or allocates) on a cache hit.
        let read = async {
            let (key_id, material_id) = cache_key.clone();
            let stored = self.store(move |s| s.get_material(&key_id, material_id)).await?;
            stored.map(Arc::new).ok_or_else(|| {
                if material_id == current {
                    // Every key has its current material: the store is damaged (a partial
                    // restore), not the caller's input. Encrypt or Sign never get InvalidCiphertext.
                    KmsError::internal("the key's current key material is missing from the store")
                } else {
                    KmsError::InvalidCiphertext("The ciphertext refers to key material that does not exist".into())
                }
            })
        };
        self.wrapped.get_or_load(cache_key, read).await
    }
}

/// Where a ciphertext is said to come from: the KeyId parameter's name and value, and the algorithm.
struct Source<'a> {
    action: &'static str,
    field: &'a str,
    /// The request's names of the algorithm and context parameters, for messages.
    algorithm_field: &'static str,
    context_field: &'static str,
    key_id: Option<&'a str>,
    algorithm: Option<&'a str>,
    grant_tokens: &'a [String],
    /// ReEncrypt: the destination key's id (for kms:ReEncryptOnSameKey).
    destination_key_id: Option<&'a str>,
}

impl<'a> Source<'a> {
    /// The access asked for on the source key.
    fn access(&self, context: &'a EncryptionContext, source_key_id: &str) -> Access<'a> {
        let access = Access::new(self.action)
            .grant_tokens(self.grant_tokens)
            .context(context)
            .with(ck::ENCRYPTION_ALGORITHM, self.algorithm.unwrap_or("SYMMETRIC_DEFAULT"));
        match self.destination_key_id {
            Some(destination) => access.with(ck::RE_ENCRYPT_ON_SAME_KEY, same_key(source_key_id, destination)),
            None => access,
        }
    }
}

/// kms:ReEncryptOnSameKey's value.
fn same_key(source_key_id: &str, destination_key_id: &str) -> &'static str {
    if source_key_id == destination_key_id {
        "true"
    } else {
        "false"
    }
}

/// Unknown algorithm names are refused before anything else, as AWS validates enumerations first.
fn parse_name(field: &str, algorithm: Option<&str>) -> Result<()> {
    algorithm
        .map(|a| EncryptionAlgorithm::parse(field, a))
        .transpose()
        .map(|_| ())
}

/// The algorithm to use with `key`. As in AWS, an absent algorithm is SYMMETRIC_DEFAULT for every
/// key, so an RSA key without one is refused like one given SYMMETRIC_DEFAULT.
fn encryption_algorithm(key: &KeyRecord, field: &str, requested: Option<&str>) -> Result<EncryptionAlgorithm> {
    let algorithm = match requested {
        None => EncryptionAlgorithm::SymmetricDefault,
        Some(a) => EncryptionAlgorithm::parse(field, a)?,
    };
    let allowed = key.key_spec.encryption_algorithms(key.key_usage);
    if !allowed.contains(&algorithm) {
        // AWS's message, then the algorithms the key does take.
        return Err(KmsError::InvalidKeyUsage(format!(
            "Algorithm {} is incompatible with key spec {}. Valid {field} values for this key: {}",
            algorithm.as_str(),
            key.key_spec.as_str(),
            allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(algorithm)
}

/// The checks of an encryption before the key is used: RSA keys take no encryption context and
/// at most their OAEP limit of plaintext (`plaintext_len`: None when not known, in a dry run).
/// `context` comes with the request's name for it.
fn check_encryption(
    key: &KeyRecord,
    algorithm: EncryptionAlgorithm,
    context: (&EncryptionContext, &str),
    plaintext_len: Option<usize>,
) -> Result<()> {
    if algorithm == EncryptionAlgorithm::SymmetricDefault {
        return Ok(());
    }
    refuse_context_for_asymmetric(context.0, context.1)?;
    let limit = key
        .key_spec
        .oaep_limit(algorithm)
        .ok_or_else(|| KmsError::internal(format!("{} has no OAEP limit", key.key_spec.as_str())))?;
    match plaintext_len {
        Some(len) if len > limit => Err(KmsError::validation(format!(
            "Plaintext is {len} bytes; {} with {} takes at most {limit}",
            algorithm.as_str(),
            key.key_spec.as_str()
        ))),
        _ => Ok(()),
    }
}

/// `field`: the request's name of the context parameter (ReEncrypt has two).
fn refuse_context_for_asymmetric(context: &EncryptionContext, field: &str) -> Result<()> {
    if !context.is_empty() {
        return Err(KmsError::validation(format!(
            "{field} is not supported with asymmetric KMS keys"
        )));
    }
    Ok(())
}

pub(super) fn check_grant_tokens(tokens: &[String]) -> Result<()> {
    if tokens.len() > MAX_GRANT_TOKENS {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: \
             Member must have length less than or equal to {MAX_GRANT_TOKENS}"
        )));
    }
    // Characters, as AWS counts them (a byte count first: no char may take more than 4).
    let too_long = |t: &str| t.len() > 8192 && (t.len() > 4 * 8192 || t.chars().count() > 8192);
    if tokens.iter().any(|t| t.is_empty() || too_long(t)) {
        return Err(KmsError::validation("Each grant token must be 1 to 8192 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_tokens_are_measured_in_characters() {
        let tokens = |t: String| check_grant_tokens(&[t]);
        tokens("€".repeat(8192)).expect("8192 characters of 3 bytes");
        tokens("a".repeat(8192)).expect("8192 characters");
        assert!(tokens("a".repeat(8193)).is_err());
        assert!(tokens("€".repeat(8193)).is_err());
        assert!(tokens(String::new()).is_err());
        assert!(check_grant_tokens(&vec!["t".to_string(); 11]).is_err());
    }

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
}
