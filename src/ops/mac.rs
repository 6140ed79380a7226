//! HMAC keys: GenerateMac and VerifyMac. Verification compares in constant time.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Sha224, Sha256, Sha384, Sha512};

use super::crypto::check_grant_tokens;
use super::{Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::algorithms::MacAlgorithm;
use crate::keys::dry_run::DryRun;
use crate::keys::key_ref::Accept;
use crate::keys::names;
use crate::keys::{KeyRecord, KeyUsage};
use crate::policy::keys as ck;

const MAX_MESSAGE: usize = 4096;
const MAX_MAC: usize = 6144;

impl Kms {
    pub async fn generate_mac(
        &self,
        key_id: &str,
        message: &[u8],
        algorithm: &str,
        grant_tokens: &[String],
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<(String, Vec<u8>, MacAlgorithm)> {
        check_grant_tokens(grant_tokens)?;
        let (key, algorithm) = self
            .mac_key("kms:GenerateMac", key_id, message, algorithm, grant_tokens, ev)
            .await?;
        dry_run.stop()?;
        let mac = self.hmac(&key, algorithm, message).await?;
        Ok((self.key_arn(&key.key_id), mac.finalize(), algorithm))
    }

    /// Ok only when `mac` matches; otherwise KMSInvalidMacException, as in AWS. A dry run checks
    /// the MAC too: it is the real call's last check, and no secret.
    #[allow(clippy::too_many_arguments)]
    pub async fn verify_mac(
        &self,
        key_id: &str,
        message: &[u8],
        algorithm: &str,
        mac: &[u8],
        grant_tokens: &[String],
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<(String, MacAlgorithm)> {
        check_grant_tokens(grant_tokens)?;
        names::length("mac", mac.len(), 1, MAX_MAC)?;
        let (key, algorithm) = self
            .mac_key("kms:VerifyMac", key_id, message, algorithm, grant_tokens, ev)
            .await?;
        let computed = self.hmac(&key, algorithm, message).await?;
        computed
            .verify_slice(mac)
            .map_err(|_| KmsError::InvalidMac("The MAC does not match this message, key and algorithm".into()))?;
        dry_run.stop()?;
        Ok((self.key_arn(&key.key_id), algorithm))
    }

    /// Validates the request: the authorized key and the algorithm, which fits it.
    async fn mac_key(
        &self,
        action: &'static str,
        key_id: &str,
        message: &[u8],
        algorithm: &str,
        grant_tokens: &[String],
        ev: &mut AuditEvent,
    ) -> Result<(Arc<KeyRecord>, MacAlgorithm)> {
        names::length("message", message.len(), 1, MAX_MESSAGE)?;
        let algorithm = MacAlgorithm::parse("macAlgorithm", algorithm)?;
        let access = Access::new(action)
            .grant_tokens(grant_tokens)
            .with(ck::MAC_ALGORITHM, algorithm.as_str());
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOrAlias, ev).await?;
        self.usable(&key, KeyUsage::GenerateVerifyMac)?;
        if !key.key_spec.mac_algorithms().contains(&algorithm) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "MAC algorithm {} is not valid for {} keys; valid: {}",
                algorithm.as_str(),
                key.key_spec.as_str(),
                key.key_spec
                    .mac_algorithms()
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok((key, algorithm))
    }

    /// The HMAC state with the message absorbed.
    async fn hmac(&self, key: &KeyRecord, algorithm: MacAlgorithm, message: &[u8]) -> Result<AnyHmac> {
        let material = self.material(key, key.current_material).await?;
        let mut mac = AnyHmac::new(algorithm, material.hmac()?)?;
        mac.update(message);
        Ok(mac)
    }
}

/// An HMAC over one of the SHA-2 hashes.
enum AnyHmac {
    Sha224(Hmac<Sha224>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

impl AnyHmac {
    fn new(algorithm: MacAlgorithm, key: &[u8]) -> Result<AnyHmac> {
        let bad = |_| KmsError::internal("bad HMAC key");
        Ok(match algorithm {
            MacAlgorithm::HmacSha224 => AnyHmac::Sha224(Hmac::new_from_slice(key).map_err(bad)?),
            MacAlgorithm::HmacSha256 => AnyHmac::Sha256(Hmac::new_from_slice(key).map_err(bad)?),
            MacAlgorithm::HmacSha384 => AnyHmac::Sha384(Hmac::new_from_slice(key).map_err(bad)?),
            MacAlgorithm::HmacSha512 => AnyHmac::Sha512(Hmac::new_from_slice(key).map_err(bad)?),
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            AnyHmac::Sha224(m) => m.update(data),
            AnyHmac::Sha256(m) => m.update(data),
            AnyHmac::Sha384(m) => m.update(data),
            AnyHmac::Sha512(m) => m.update(data),
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            AnyHmac::Sha224(m) => m.finalize().into_bytes().to_vec(),
            AnyHmac::Sha256(m) => m.finalize().into_bytes().to_vec(),
            AnyHmac::Sha384(m) => m.finalize().into_bytes().to_vec(),
            AnyHmac::Sha512(m) => m.finalize().into_bytes().to_vec(),
        }
    }

    /// Constant-time comparison (the hmac crate's `verify_slice`).
    fn verify_slice(self, tag: &[u8]) -> std::result::Result<(), hmac::digest::MacError> {
        match self {
            AnyHmac::Sha224(m) => m.verify_slice(tag),
            AnyHmac::Sha256(m) => m.verify_slice(tag),
            AnyHmac::Sha384(m) => m.verify_slice(tag),
            AnyHmac::Sha512(m) => m.verify_slice(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let mut m = AnyHmac::new(MacAlgorithm::HmacSha256, b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = m.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        let mut m = AnyHmac::new(MacAlgorithm::HmacSha256, b"Jefe").unwrap();
        m.update(b"what do ya want for nothing!");
        assert!(m.verify_slice(&[0u8; 32]).is_err());
    }
}
