//! Asymmetric signing keys: Sign, Verify, GetPublicKey.

use super::crypto::check_grant_tokens;
use super::{Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::algorithms::{EncryptionAlgorithm, MessageType, SigningAlgorithm};
use crate::keys::dry_run::DryRun;
use crate::keys::key_ref::Accept;
use crate::keys::names;
use crate::keys::{KeyRecord, KeySpec, KeyUsage};
use crate::policy::keys as ck;
use zeroize::Zeroizing;

/// The length of ML-DSA's message representative mu (FIPS 204, 6.2), AWS's EXTERNAL_MU message.
const EXTERNAL_MU_LEN: usize = 64;

const MAX_MESSAGE: usize = 4096;
const MAX_SIGNATURE: usize = 6144;

pub struct Signed {
    pub key_arn: String,
    pub signature: Vec<u8>,
    pub algorithm: SigningAlgorithm,
}

pub struct PublicKeyInfo {
    pub key_arn: String,
    pub public_key: Vec<u8>,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub encryption_algorithms: Vec<EncryptionAlgorithm>,
    pub signing_algorithms: Vec<SigningAlgorithm>,
}

/// What to sign or verify: a message and how to read it, and whether this is a dry run.
pub struct SignInput<'a> {
    pub message: &'a [u8],
    pub message_type: Option<&'a str>,
    pub algorithm: &'a str,
    pub dry_run: DryRun,
}

impl Kms {
    pub async fn sign(
        &self,
        key_id: &str,
        input: SignInput<'_>,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<Signed> {
        check_grant_tokens(grant_tokens)?;
        let (key, algorithm, digest) = self
            .prepare_signature("kms:Sign", key_id, &input, grant_tokens, ev)
            .await?;
        input.dry_run.stop()?;
        let material = self.material(&key, key.current_material).await?;
        let signature = self.cpu(move || material.private()?.sign(algorithm, &digest)).await?;
        Ok(Signed {
            key_arn: self.key_arn(&key.key_id),
            signature,
            algorithm,
        })
    }

    /// Ok only for a valid signature; an invalid one is KMSInvalidSignatureException, as in AWS.
    /// A dry run checks the signature too: it is the real call's last check, and no secret.
    pub async fn verify(
        &self,
        key_id: &str,
        input: SignInput<'_>,
        signature: &[u8],
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<(String, SigningAlgorithm)> {
        check_grant_tokens(grant_tokens)?;
        names::length("signature", signature.len(), 1, MAX_SIGNATURE)?;
        let (key, algorithm, digest) = self
            .prepare_signature("kms:Verify", key_id, &input, grant_tokens, ev)
            .await?;
        let material = self.material(&key, key.current_material).await?;
        let signature_owned = signature.to_vec();
        let valid = self
            .cpu(move || Ok(material.private()?.verify(algorithm, &digest, &signature_owned)))
            .await?;
        if !valid {
            return Err(KmsError::InvalidSignature(
                "The signature is not valid for this message, key and signing algorithm".into(),
            ));
        }
        input.dry_run.stop()?;
        Ok((self.key_arn(&key.key_id), algorithm))
    }

    pub async fn get_public_key(
        &self,
        key_id: &str,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<PublicKeyInfo> {
        check_grant_tokens(grant_tokens)?;
        let key = self
            .resolve(
                Access::new("kms:GetPublicKey").grant_tokens(grant_tokens),
                "keyId",
                key_id,
                Accept::KeyOrAlias,
                ev,
            )
            .await?;
        self.enabled(&key)?;
        if key.key_spec == KeySpec::SymmetricDefault || key.key_spec.is_hmac() {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} is a {} key, which has no public key",
                self.key_arn(&key.key_id),
                key.key_spec.as_str()
            )));
        }
        let (id, material_id) = (key.key_id.clone(), key.current_material);
        let record = self.store(move |s| s.get_material(&id, material_id)).await?;
        let public_key = record
            .and_then(|r| r.public_key)
            .ok_or_else(|| KmsError::internal("the key's public key is missing from the store"))?;
        Ok(PublicKeyInfo {
            key_arn: self.key_arn(&key.key_id),
            public_key,
            key_spec: key.key_spec,
            key_usage: key.key_usage,
            encryption_algorithms: key.key_spec.encryption_algorithms(key.key_usage),
            signing_algorithms: key.key_spec.signing_algorithms(key.key_usage),
        })
    }

    /// Validates a Sign/Verify request against the key and returns the digest to sign.
    async fn prepare_signature(
        &self,
        action: &'static str,
        key_id: &str,
        input: &SignInput<'_>,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<(std::sync::Arc<KeyRecord>, SigningAlgorithm, Zeroizing<Vec<u8>>)> {
        names::length("message", input.message.len(), 1, MAX_MESSAGE)?;
        let message_type = match input.message_type {
            None => MessageType::Raw,
            Some(t) => MessageType::parse("messageType", t)?,
        };
        let algorithm = SigningAlgorithm::parse("signingAlgorithm", input.algorithm)?;
        // The request alone decides these, so they are checked before permissions: an
        // EXTERNAL_MU message is ML-DSA's 64-byte mu, and a digest is its hash's length.
        if message_type == MessageType::ExternalMu {
            if algorithm != SigningAlgorithm::MlDsaShake256 {
                return Err(KmsError::validation(format!(
                    "MessageType EXTERNAL_MU is only for ML_DSA_SHAKE_256, not {}",
                    algorithm.as_str()
                )));
            }
            if input.message.len() != EXTERNAL_MU_LEN {
                return Err(KmsError::validation(format!(
                    "An EXTERNAL_MU message must be {EXTERNAL_MU_LEN} bytes, got {}",
                    input.message.len()
                )));
            }
        }
        let hash = algorithm.hash();
        if let (MessageType::Digest, Some(hash)) = (message_type, hash) {
            if input.message.len() != hash.output_len() {
                return Err(KmsError::validation(format!(
                    "A DIGEST message for {} must be {} bytes, got {}",
                    algorithm.as_str(),
                    hash.output_len(),
                    input.message.len()
                )));
            }
        }
        let access = Access::new(action)
            .grant_tokens(grant_tokens)
            .with(ck::SIGNING_ALGORITHM, algorithm.as_str())
            .with(ck::MESSAGE_TYPE, message_type.as_str());
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOrAlias, ev).await?;
        self.usable(&key, KeyUsage::SignVerify)?;
        let allowed = key.key_spec.signing_algorithms(key.key_usage);
        if !allowed.contains(&algorithm) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "Signing algorithm {} is not valid for {} keys; valid: {}",
                algorithm.as_str(),
                key.key_spec.as_str(),
                allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        // Only the algorithms of a spec this server has get here, and each of those has a hash.
        let hash = hash.ok_or_else(|| KmsError::internal(format!("{} has no message hash", algorithm.as_str())))?;
        let digest = match message_type {
            MessageType::Raw => Zeroizing::new(hash.digest(input.message)),
            // Its length was checked above.
            MessageType::Digest => Zeroizing::new(input.message.to_vec()),
            MessageType::ExternalMu => {
                return Err(KmsError::validation("MessageType EXTERNAL_MU is only for ML-DSA keys"));
            }
        };
        Ok((key, algorithm, digest))
    }
}
