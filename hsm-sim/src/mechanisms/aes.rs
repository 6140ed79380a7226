//! AES: GCM (aes-gcm, whose AES round keys and GHASH key are wiped on drop)
//! and key wrap (aes-kw: RFC 3394 and RFC 5649).
use crate::Rv;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use aes_kw::{KekAes128, KekAes192, KekAes256};
use cryptoki_sys::*;
use zeroize::Zeroizing;

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

pub const TAG_LEN: usize = 16;
pub const IV_LEN: usize = 12;

/// Not ring: ring never wipes its key schedules (AES-256's first two round
/// keys are the raw key), so every dropped copy would leave the key in
/// freed memory. Boxed so moving an AesKey leaves no copy of a schedule.
enum Gcm {
    Aes128(Box<Aes128Gcm>),
    Aes192(Box<Aes192Gcm>),
    Aes256(Box<Aes256Gcm>),
}

/// An AES key with its GCM key schedule computed once.
pub struct AesKey {
    raw: Zeroizing<Vec<u8>>,
    gcm: Gcm,
}

impl AesKey {
    pub fn new(raw: &[u8]) -> Rv<AesKey> {
        let bad = |_| CKR_KEY_SIZE_RANGE;
        let gcm = match raw.len() {
            16 => Gcm::Aes128(Box::new(Aes128Gcm::new_from_slice(raw).map_err(bad)?)),
            24 => Gcm::Aes192(Box::new(Aes192Gcm::new_from_slice(raw).map_err(bad)?)),
            32 => Gcm::Aes256(Box::new(Aes256Gcm::new_from_slice(raw).map_err(bad)?)),
            _ => return Err(CKR_KEY_SIZE_RANGE),
        };
        Ok(AesKey {
            raw: Zeroizing::new(raw.to_vec()),
            gcm,
        })
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Returns ciphertext || 16-byte tag, in a buffer sized for the tag so
    /// it never reallocates with the plaintext in it (wiped if sealing fails).
    pub fn gcm_seal(&self, iv: &[u8; IV_LEN], aad: &[u8], data: &[u8]) -> Rv<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(Vec::with_capacity(data.len() + TAG_LEN));
        buf.extend_from_slice(data);
        let r = match &self.gcm {
            Gcm::Aes128(k) => k.encrypt_in_place(iv.into(), aad, &mut *buf),
            Gcm::Aes192(k) => k.encrypt_in_place(iv.into(), aad, &mut *buf),
            Gcm::Aes256(k) => k.encrypt_in_place(iv.into(), aad, &mut *buf),
        };
        r.map_err(|_| CKR_DATA_LEN_RANGE)?;
        Ok(buf)
    }

    /// Takes ciphertext || tag; a wrong tag is CKR_ENCRYPTED_DATA_INVALID.
    /// The plaintext is wiped when dropped (kms unwraps data keys here).
    pub fn gcm_open(&self, iv: &[u8; IV_LEN], aad: &[u8], data: &[u8]) -> Rv<Zeroizing<Vec<u8>>> {
        if data.len() < TAG_LEN {
            return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
        }
        let mut buf = Zeroizing::new(data.to_vec());
        let r = match &self.gcm {
            Gcm::Aes128(k) => k.decrypt_in_place(iv.into(), aad, &mut *buf),
            Gcm::Aes192(k) => k.decrypt_in_place(iv.into(), aad, &mut *buf),
            Gcm::Aes256(k) => k.decrypt_in_place(iv.into(), aad, &mut *buf),
        };
        r.map_err(|_| CKR_ENCRYPTED_DATA_INVALID)?;
        Ok(buf)
    }

    /// RFC 3394 (pad = false) or RFC 5649 (pad = true) key wrap.
    pub fn wrap(&self, data: &[u8], pad: bool) -> Rv<Vec<u8>> {
        if !pad && (!data.len().is_multiple_of(8) || data.len() < 16) {
            return Err(CKR_KEY_SIZE_RANGE);
        }
        let r = match self.raw.len() {
            16 => kw::<KekAes128>(&self.raw, data, pad, true),
            24 => kw::<KekAes192>(&self.raw, data, pad, true),
            _ => kw::<KekAes256>(&self.raw, data, pad, true),
        };
        r.map_err(|_| CKR_KEY_SIZE_RANGE)
    }

    pub fn unwrap(&self, data: &[u8], pad: bool) -> Rv<Zeroizing<Vec<u8>>> {
        let r = match self.raw.len() {
            16 => kw::<KekAes128>(&self.raw, data, pad, false),
            24 => kw::<KekAes192>(&self.raw, data, pad, false),
            _ => kw::<KekAes256>(&self.raw, data, pad, false),
        };
        r.map(Zeroizing::new).map_err(|_| CKR_WRAPPED_KEY_INVALID)
    }
}

trait Kw: for<'a> TryFrom<&'a [u8]> {
    fn wrap_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error>;
    fn unwrap_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error>;
    fn wrap_pad_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error>;
    fn unwrap_pad_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error>;
}

macro_rules! impl_kw {
    ($t:ty) => {
        impl Kw for $t {
            fn wrap_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error> {
                <$t>::wrap_vec(self, d)
            }
            fn unwrap_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error> {
                <$t>::unwrap_vec(self, d)
            }
            fn wrap_pad_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error> {
                <$t>::wrap_with_padding_vec(self, d)
            }
            fn unwrap_pad_vec(&self, d: &[u8]) -> Result<Vec<u8>, aes_kw::Error> {
                <$t>::unwrap_with_padding_vec(self, d)
            }
        }
    };
}
impl_kw!(KekAes128);
impl_kw!(KekAes192);
impl_kw!(KekAes256);

fn kw<K: Kw>(key: &[u8], data: &[u8], pad: bool, wrap: bool) -> Result<Vec<u8>, ()> {
    let kek = K::try_from(key).map_err(|_| ())?;
    let r = match (pad, wrap) {
        (false, true) => kek.wrap_vec(data),
        (false, false) => kek.unwrap_vec(data),
        (true, true) => kek.wrap_pad_vec(data),
        (true, false) => kek.unwrap_pad_vec(data),
    };
    r.map_err(|_| ())
}
