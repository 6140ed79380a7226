//! Key material in memory and the AES-256-GCM envelope it seals data with.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use ring::hkdf;
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

/// A symmetric key's material. Each blob is sealed under its own key, derived from the material
/// and the blob's random 128-bit nonce with HKDF-SHA256 (as AWS KMS derives a key per request), so
/// the number of encryptions under one material is not bounded by AES-GCM's random-IV limit
/// (2^32 per key, NIST SP 800-38D), which a busy key would reach in days.
pub struct SymmetricKey {
    material: Zeroizing<[u8; MATERIAL_LEN]>,
}

impl SymmetricKey {
    pub fn new(bytes: &[u8]) -> Result<SymmetricKey> {
        let material: [u8; MATERIAL_LEN] = bytes
            .try_into()
            .map_err(|_| KmsError::internal("unwrapped key material has the wrong length"))?;
        Ok(SymmetricKey {
            material: Zeroizing::new(material),
        })
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
        let aad = aad(&header, context);
        let mut blob = Vec::with_capacity(ciphertext::OVERHEAD + plaintext.len());
        blob.extend_from_slice(&header);
        blob.extend_from_slice(nonce);
        blob.extend_from_slice(plaintext);
        let body = &mut blob[ciphertext::HEADER_LEN + NONCE_LEN..];
        let tag = self
            .message_cipher(&header, nonce)?
            .encrypt_in_place_detached(&Nonce::from(MESSAGE_IV), &aad, body)
            .map_err(|_| KmsError::internal("AES-GCM encryption failed"))?;
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    /// Opens a parsed blob. Any mismatch (a changed byte, another context) is InvalidCiphertext;
    /// the tag is checked in constant time by aes-gcm.
    pub fn open(&self, blob: &Blob<'_>, context: &EncryptionContext) -> Result<Zeroizing<Vec<u8>>> {
        let aad = aad(blob.header, context);
        let (cipher, iv) = match blob.version {
            ciphertext::VERSION => (self.message_cipher(blob.header, blob.nonce)?, MESSAGE_IV),
            // Version 1: the material itself, the nonce as IV.
            _ => (
                Aes256Gcm::new_from_slice(&self.material[..]).map_err(|_| KmsError::internal("bad key material"))?,
                blob.nonce
                    .try_into()
                    .map_err(|_| KmsError::internal("a version 1 nonce is 12 bytes"))?,
            ),
        };
        let mut plaintext = Zeroizing::new(blob.ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(&Nonce::from(iv), &aad, &mut plaintext, &Tag::from(*blob.tag))
            .map_err(|_| {
                KmsError::InvalidCiphertext(
                    "The ciphertext or its encryption context is not the one this key produced".into(),
                )
            })?;
        Ok(plaintext)
    }

    /// The key of one version 2 blob: HKDF-SHA256-Expand with the material as the PRK (it is
    /// uniformly random already, RFC 5869 section 3.3) and the blob's header and nonce as info.
    fn message_cipher(&self, header: &[u8], nonce: &[u8]) -> Result<Aes256Gcm> {
        let failed = |_| KmsError::internal("message key derivation failed");
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &self.material[..]);
        let info = [MESSAGE_KEY_LABEL, header, nonce];
        let okm = prk.expand(&info, MessageKeyLen).map_err(failed)?;
        let mut key = Zeroizing::new([0u8; MATERIAL_LEN]);
        okm.fill(&mut key[..]).map_err(failed)?;
        Aes256Gcm::new_from_slice(&key[..]).map_err(|_| KmsError::internal("bad message key"))
    }
}

/// Domain separation for the per-message key derivation.
const MESSAGE_KEY_LABEL: &[u8] = b"kms blob v2";
/// Every version 2 message key seals exactly one message, so its IV can be fixed.
const MESSAGE_IV: [u8; 12] = [0u8; 12];

/// The length of a message key, as ring's HKDF wants it said.
struct MessageKeyLen;

impl hkdf::KeyType for MessageKeyLen {
    fn len(&self) -> usize {
        MATERIAL_LEN
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

    #[test]
    fn version_1_blobs_still_open() {
        // Made as version 1 did: AES-256-GCM under the material itself, a 12-byte nonce as IV.
        let material = [7u8; 32];
        let mut header = ciphertext::header(ID, 3).unwrap();
        header[0] = ciphertext::VERSION_1;
        let iv = [5u8; ciphertext::NONCE_LEN_V1];
        let mut body = b"old data".to_vec();
        let tag = Aes256Gcm::new_from_slice(&material)
            .unwrap()
            .encrypt_in_place_detached(&Nonce::from(iv), &aad(&header, &ctx("a")), &mut body)
            .unwrap();
        let blob = [&header[..], &iv, &body, &tag].concat();
        let m = SymmetricKey::new(&material).unwrap();
        let parsed = ciphertext::parse(&blob).unwrap();
        assert_eq!(&m.open(&parsed, &ctx("a")).unwrap()[..], b"old data");
        assert!(m.open(&parsed, &ctx("b")).is_err());
    }

    #[test]
    fn each_blob_has_its_own_key() {
        let material = [9u8; 32];
        let m = SymmetricKey::new(&material).unwrap();
        let nonce = [4u8; NONCE_LEN];
        let blob = m.seal_with_nonce(&nonce, ID, 1, &ctx("a"), b"secret data").unwrap();
        assert_eq!(blob[0], ciphertext::VERSION);
        assert_eq!(blob.len(), ciphertext::OVERHEAD + 11);
        let parsed = ciphertext::parse(&blob).unwrap();
        // Not sealed under the material itself (with any IV the blob could carry) ...
        let direct = Aes256Gcm::new_from_slice(&material).unwrap();
        for iv in [MESSAGE_IV, nonce[..12].try_into().unwrap()] {
            let mut body = parsed.ciphertext.to_vec();
            let tag = Tag::from(*parsed.tag);
            let aad = aad(parsed.header, &ctx("a"));
            assert!(direct
                .decrypt_in_place_detached(&Nonce::from(iv), &aad, &mut body, &tag)
                .is_err());
        }
        // ... and another nonce gives another key: the same plaintext encrypts differently.
        let other = m
            .seal_with_nonce(&[5u8; NONCE_LEN], ID, 1, &ctx("a"), b"secret data")
            .unwrap();
        let body = ciphertext::HEADER_LEN + NONCE_LEN..blob.len();
        assert_ne!(blob[body.clone()], other[body]);
        assert_eq!(&m.open(&parsed, &ctx("a")).unwrap()[..], b"secret data");
    }
}
