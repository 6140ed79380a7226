//! PIN handling: PBKDF2-HMAC-SHA256 turns a PIN into a verifier and a
//! key-encryption key; AES-256-GCM seals the token key and object secrets.
//!
//! Sealing uses aes-gcm, which wipes its key schedule when dropped (ring's
//! would leave the token key in memory). PBKDF2 and HMAC stay on ring: their
//! states live only within one call, and no HMAC in the dependency tree
//! wipes its state either.
use crate::Rv;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use cryptoki_sys::*;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use zeroize::Zeroizing;

pub type Key32 = Zeroizing<[u8; 32]>;

/// What the token file keeps for one PIN: never the PIN itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRecord {
    pub salt: String,
    pub iterations: u32,
    /// HMAC(master, "verifier"), compared in constant time.
    pub verifier: String,
    /// The token key sealed under HMAC(master, "kek").
    pub wrapped_key: String,
}

pub fn random_bytes(buf: &mut [u8]) -> Rv<()> {
    SystemRandom::new().fill(buf).map_err(|_| CKR_FUNCTION_FAILED)
}

pub fn new_key() -> Rv<Key32> {
    let mut k = Zeroizing::new([0u8; 32]);
    random_bytes(&mut k[..])?;
    Ok(k)
}

struct Derived {
    verifier: [u8; 32],
    kek: Key32,
}

fn derive(pin: &[u8], salt: &[u8], iterations: u32) -> Derived {
    let mut master = Zeroizing::new([0u8; 32]);
    let iters = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iters, salt, pin, &mut master[..]);
    let mk = hmac::Key::new(hmac::HMAC_SHA256, &master[..]);
    let mut verifier = [0u8; 32];
    verifier.copy_from_slice(hmac::sign(&mk, b"hsm-sim pin verifier").as_ref());
    let mut kek = Zeroizing::new([0u8; 32]);
    kek.copy_from_slice(hmac::sign(&mk, b"hsm-sim key encryption key").as_ref());
    Derived { verifier, kek }
}

const TOKEN_KEY_AAD: &[u8] = b"hsm-sim token key";

impl PinRecord {
    /// Records `pin` as the one that unlocks `token_key`.
    pub fn new(pin: &[u8], token_key: &Key32, iterations: u32) -> Rv<PinRecord> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        let d = derive(pin, &salt, iterations);
        Ok(PinRecord {
            salt: hex(&salt),
            iterations,
            verifier: hex(&d.verifier),
            wrapped_key: hex(&seal(&d.kek, TOKEN_KEY_AAD, &token_key[..])?),
        })
    }

    /// Checks `pin`; on success returns the token key.
    pub fn unlock(&self, pin: &[u8]) -> Rv<Key32> {
        let salt = unhex(&self.salt)?;
        let d = derive(pin, &salt, self.iterations);
        let stored = unhex(&self.verifier)?;
        if !ct_eq(&stored, &d.verifier) {
            return Err(CKR_PIN_INCORRECT);
        }
        let raw = open(&d.kek, TOKEN_KEY_AAD, &unhex(&self.wrapped_key)?)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if raw.len() != 32 {
            return Err(CKR_GENERAL_ERROR);
        }
        key.copy_from_slice(&raw);
        Ok(key)
    }
}

/// Constant-time equality: compares HMAC tags instead of the raw bytes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, b"hsm-sim compare");
    let tag = hmac::sign(&k, a);
    hmac::verify(&k, b, tag.as_ref()).is_ok()
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// AES-256-GCM with a random nonce; output is nonce || ciphertext || tag.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Rv<Vec<u8>> {
    let k = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    // Room for the tag up front: growing the buffer would free a copy of
    // the plaintext unwiped; on error what is left is wiped.
    let mut out = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = k
        .encrypt_in_place_detached(&nonce.into(), aad, &mut out[NONCE_LEN..])
        .map_err(|_| CKR_GENERAL_ERROR)?;
    out.extend_from_slice(&tag);
    Ok(std::mem::take(&mut *out))
}

pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Rv<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CKR_GENERAL_ERROR);
    }
    let k = Aes256Gcm::new(key.into());
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let mut buf = Zeroizing::new(rest.to_vec());
    k.decrypt_in_place(nonce.into(), aad, &mut *buf)
        .map_err(|_| CKR_GENERAL_ERROR)?;
    Ok(buf)
}

/// Lower-case hex, built in one allocation (no per-byte temporaries left
/// behind: it encodes key material for sealing).
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// Decodes hex into one exactly sized buffer, wiped when dropped.
pub fn unhex(s: &str) -> Rv<Zeroizing<Vec<u8>>> {
    if !s.len().is_multiple_of(2) {
        return Err(CKR_GENERAL_ERROR);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 2));
    for i in (0..s.len()).step_by(2) {
        let pair = s.get(i..i + 2).ok_or(CKR_GENERAL_ERROR)?;
        out.push(u8::from_str_radix(pair, 16).map_err(|_| CKR_GENERAL_ERROR)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let h = hex(&all);
        assert_eq!(&h[..6], "000102");
        assert_eq!(&h[h.len() - 4..], "feff");
        assert_eq!(&unhex(&h).unwrap()[..], &all[..]);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn seal_opens() {
        let key = new_key().unwrap();
        let sealed = seal(&key, b"aad", b"secret").unwrap();
        assert_eq!(&open(&key, b"aad", &sealed).unwrap()[..], b"secret");
        assert!(open(&key, b"other", &sealed).is_err());
    }
}
