//! GenerateDataKeyPair(WithoutPlaintext): a key pair for use outside the service, its private key
//! encrypted under a symmetric KMS key.

use rand_core::OsRng;
use zeroize::Zeroizing;

use super::crypto::check_grant_tokens;
use super::private_key::generate;
use super::{Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::algorithms::KeyPairSpec;
use crate::keys::context::EncryptionContext;
use crate::keys::dry_run::DryRun;
use crate::keys::key_ref::Accept;
use crate::keys::KeySpec;
use crate::policy::keys as ck;

pub struct DataKeyPair {
    pub private_key_ciphertext: Vec<u8>,
    pub private_key_plaintext: Zeroizing<Vec<u8>>,
    pub public_key: Vec<u8>,
    pub key_arn: String,
    pub spec: KeyPairSpec,
}

impl Kms {
    /// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext (`action` tells which).
    #[allow(clippy::too_many_arguments)]
    pub async fn generate_data_key_pair(
        &self,
        action: &'static str,
        key_id: &str,
        context: &EncryptionContext,
        key_pair_spec: &str,
        grant_tokens: &[String],
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<DataKeyPair> {
        check_grant_tokens(grant_tokens)?;
        ev.encryption_context_keys = context.keys();
        let spec = KeyPairSpec::parse("keyPairSpec", key_pair_spec)?;
        let key_spec = match spec {
            KeyPairSpec::Rsa2048 => KeySpec::Rsa2048,
            KeyPairSpec::Rsa3072 => KeySpec::Rsa3072,
            KeyPairSpec::Rsa4096 => KeySpec::Rsa4096,
            KeyPairSpec::EccNistP256 => KeySpec::EccNistP256,
            KeyPairSpec::EccNistP384 => KeySpec::EccNistP384,
            other => {
                return Err(KmsError::UnsupportedOperation(format!(
                    "KeyPairSpec {} is not supported by this server",
                    other.as_str()
                )))
            }
        };
        let access = Access::new(action)
            .grant_tokens(grant_tokens)
            .context(context)
            .with(ck::DATA_KEY_PAIR_SPEC, spec.as_str())
            // As AWS: the algorithm that protects the private key (a policy may require it).
            .with(ck::ENCRYPTION_ALGORITHM, "SYMMETRIC_DEFAULT");
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOrAlias, ev).await?;
        self.symmetric_encryption_key(&key)?;
        dry_run.stop()?;
        // Like data keys, from the OS CSPRNG; RSA generation is CPU-heavy, so off the reactor.
        let pair = self.generation(move || generate(key_spec, &mut OsRng)).await?;
        let private_key_ciphertext = self.seal(&key, context, &pair.pkcs8).await?;
        Ok(DataKeyPair {
            private_key_ciphertext,
            private_key_plaintext: pair.pkcs8,
            public_key: pair.public_key,
            key_arn: self.key_arn(&key.key_id),
            spec,
        })
    }
}
