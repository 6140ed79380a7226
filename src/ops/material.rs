//! Key material in memory and the AES-256-GCM envelope it seals data with.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::private_key::PrivateKey;
use crate::error::{KmsError, Result};
use crate::keys::ciphertext::{self, Blob, NONCE_LEN};
use crate::keys::context::EncryptionContext;
use crate::keys::KeySpec;

pub const MATERIAL_LEN: usize = 32;

/// Unwrapped key material of any key spec, ready to use; each form is zeroized when dropped.
pub enum Material {
    Symmetric(Box<SymmetricKey>),
    Private(PrivateKey),
    Hmac(Zeroizing<Vec<u8>>),
}

impl Material {
    /// Turns unwrapped bytes (raw AES or HMAC key, PKCS#8 private key) into the key they encode.
    pub fn from_plain(spec: KeySpec, bytes: &[u8]) -> Result<Material> {
        Ok(match spec {
            KeySpec::SymmetricDefault => Material::Symmetric(Box::new(SymmetricKey::new(bytes)?)),
            s if s.is_hmac() => Material::Hmac(Zeroizing::new(bytes.to_vec())),
            s => Material::Private(PrivateKey::from_pkcs8(s, bytes)?),
        })
    }

    pub fn symmetric(&self) -> Result<&SymmetricKey> {
        match self {
            Material::Symmetric(k) => Ok(k),
            _ => Err(KmsError::internal("key material is not a symmetric key")),
        }
    }

    pub fn private(&self) -> Result<&PrivateKey> {
        match self {
            Material::Private(k) => Ok(k),
            _ => Err(KmsError::internal("key material is not a private key")),
        }
    }

    pub fn hmac(&self) -> Result<&[u8]> {
        match self {
            Material::Hmac(k) => Ok(k),
            _ => Err(KmsError::internal("key material is not an HMAC key")),
        }
    }
}

/// An AES-256-GCM key, held as a ready cipher whose key schedule is zeroized on drop.
pub struct SymmetricKey {
    cipher: Aes256Gcm,
}

impl SymmetricKey {
    pub fn new(bytes: &[u8]) -> Result<SymmetricKey> {
        if bytes.len() != MATERIAL_LEN {
            return Err(KmsError::internal("unwrapped key material has the wrong length"));
        }
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| KmsError::internal("bad key material"))?;
        Ok(SymmetricKey { cipher })
    }

    /// Seals `plaintext` into a ciphertext blob naming `key_id` and `material_id`.
    pub fn seal(
        &self,
        rng: &SystemRandom,
        key_id: &str,
        material_id: u32,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)
            .map_err(|_| KmsError::internal("the system RNG failed"))?;
        self.seal_with_nonce(&nonce, key_id, material_id, context, plaintext)
    }

    /// `seal` with a fresh random nonce drawn by the caller (GenerateDataKey draws the data key
    /// and the nonce with one RNG call). Never call it twice with the same nonce.
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        key_id: &str,
        material_id: u32,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let header = ciphertext::header(key_id, material_id)?;
        let nonce = *nonce;
        let aad = aad(&header, context);
        let mut blob = Vec::with_capacity(ciphertext::OVERHEAD + plaintext.len());
        blob.extend_from_slice(&header);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let body = &mut blob[ciphertext::HEADER_LEN + NONCE_LEN..];
        let tag = self
            .cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), &aad, body)
            .map_err(|_| KmsError::internal("AES-GCM encryption failed"))?;
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    /// Opens a parsed blob. Any mismatch (a changed byte, another context) is InvalidCiphertext;
    /// the tag is checked in constant time by aes-gcm.
    pub fn open(&self, blob: &Blob<'_>, context: &EncryptionContext) -> Result<Zeroizing<Vec<u8>>> {
        let aad = aad(blob.header, context);
        let mut plaintext = Zeroizing::new(blob.ciphertext.to_vec());
        self.cipher
            .decrypt_in_place_detached(&Nonce::from(*blob.nonce), &aad, &mut plaintext, &Tag::from(*blob.tag))
            .map_err(|_| {
                KmsError::InvalidCiphertext(
                    "The ciphertext or its encryption context is not the one this key produced".into(),
                )
            })?;
        Ok(plaintext)
    }
}

fn aad(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 64);
    aad.extend_from_slice(header);
    context.append_canonical(&mut aad);
    aad
}

/// AAD that binds wrapped material to its key and material id inside the HSM.
pub fn wrap_aad(key_id: &str, material_id: u32) -> Vec<u8> {
    let mut aad = b"kms-material-v1|".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&material_id.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    fn ctx(v: &str) -> EncryptionContext {
        EncryptionContext::new("c", [("purpose".to_string(), v.to_string())]).unwrap()
    }

    #[test]
    fn seal_open_and_every_tampered_byte_fails() {
        let m = SymmetricKey::new(&[9u8; 32]).unwrap();
        let rng = SystemRandom::new();
        let blob = m.seal(&rng, ID, 1, &ctx("a"), b"secret data").unwrap();
        let parsed = ciphertext::parse(&blob).unwrap();
        assert_eq!(&m.open(&parsed, &ctx("a")).unwrap()[..], b"secret data");
        assert!(matches!(
            m.open(&parsed, &ctx("b")),
            Err(KmsError::InvalidCiphertext(_))
        ));
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let ok = ciphertext::parse(&bad).and_then(|p| m.open(&p, &ctx("a")));
            assert!(ok.is_err(), "flipping byte {i} went unnoticed");
        }
        assert!(SymmetricKey::new(&[0u8; 16]).is_err());
    }
}
