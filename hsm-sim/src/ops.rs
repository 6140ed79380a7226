//! Operation state for encrypt/decrypt, sign/verify and digest, including
//! multi-part accumulation.
use crate::mechanisms::digest::{digest_hash, Hash};
use crate::mechanisms::{aes, hmac as hm, require, rsa, Material, Mechanism, OaepParams, Param};
use crate::object::Object;
use crate::pin::ct_eq;
use crate::Rv;
use cryptoki_sys::*;
use ring::{digest, hmac};
use std::sync::Arc;
use zeroize::Zeroizing;

enum Cipher {
    Gcm { iv: [u8; aes::IV_LEN], aad: Vec<u8> },
    Oaep(OaepParams),
}

pub struct CipherOp {
    key: Arc<Material>,
    cipher: Cipher,
    encrypt: bool,
    /// Multi-part input: GCM and OAEP both need the whole message. It may
    /// be plaintext, so it is wiped, and grown only by `append`.
    buf: Zeroizing<Vec<u8>>,
    updated: bool,
}

/// An operation that an Update call has made multi-part: the single-part
/// call (C_Encrypt, C_Sign, ...) may no longer end it.
pub trait MultiPart {
    fn updated(&self) -> bool;
}

impl MultiPart for CipherOp {
    fn updated(&self) -> bool {
        self.updated
    }
}

impl MultiPart for SignOp {
    fn updated(&self) -> bool {
        self.updated
    }
}

impl MultiPart for DigestOp {
    fn updated(&self) -> bool {
        self.updated
    }
}

/// The most multi-part input one operation buffers (C_EncryptUpdate, C_SignUpdate, ...): the
/// token keeps it in the caller's memory, so without a bound a caller could exhaust it. Beyond it
/// the update is refused (CKR_DATA_LEN_RANGE; CKR_ENCRYPTED_DATA_LEN_RANGE when decrypting, which
/// also takes the GCM tag of 16 MiB encrypted) and the operation ends.
pub const MAX_BUFFERED: usize = 16 << 20;

/// `append`, refused (with `rv`) past `max`.
fn append_bounded(buf: &mut Zeroizing<Vec<u8>>, data: &[u8], max: usize, rv: CK_RV) -> Rv<()> {
    if buf.len().saturating_add(data.len()) > max {
        return Err(rv);
    }
    append(buf, data);
    Ok(())
}

/// Appends to a buffer of secrets. When it must grow, the bytes move to a
/// new buffer and the old one is wiped (Vec's own growth would free it
/// unwiped); capacity doubles, as Vec's does.
fn append(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * buf.capacity())));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

/// Validated GCM parameters: 96-bit IV, 128-bit tag.
pub fn gcm_params(p: &Param) -> Rv<([u8; aes::IV_LEN], Vec<u8>)> {
    match p {
        Param::Gcm { iv, aad, tag_bits } => {
            if *tag_bits != 128 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            let iv: [u8; aes::IV_LEN] = iv.as_slice().try_into().map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
            Ok((iv, aad.clone()))
        }
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

pub fn oaep_params(p: &Param) -> Rv<OaepParams> {
    match p {
        Param::Oaep(o) => {
            rsa::check_oaep(o)?;
            Ok(o.clone())
        }
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

impl CipherOp {
    pub fn init(m: &Mechanism, obj: &Object, encrypt: bool) -> Rv<CipherOp> {
        require(&obj.attrs, if encrypt { CKA_ENCRYPT } else { CKA_DECRYPT }, m.mech)?;
        let key = obj.material()?;
        let cipher = match m.mech {
            CKM_AES_GCM => {
                if !matches!(*key, Material::Aes(_)) {
                    return Err(CKR_KEY_TYPE_INCONSISTENT);
                }
                let (iv, aad) = gcm_params(&m.param)?;
                Cipher::Gcm { iv, aad }
            }
            CKM_RSA_PKCS_OAEP => {
                match (&*key, encrypt) {
                    (Material::RsaPublic(_), true) | (Material::RsaPrivate(_), false) => {}
                    _ => return Err(CKR_KEY_TYPE_INCONSISTENT),
                }
                Cipher::Oaep(oaep_params(&m.param)?)
            }
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        Ok(CipherOp {
            key,
            cipher,
            encrypt,
            buf: Zeroizing::new(Vec::new()),
            updated: false,
        })
    }

    /// Output size that suffices for `more` further input bytes.
    pub fn hint(&self, more: usize) -> usize {
        let n = self.buf.len() + more;
        match (&self.cipher, &*self.key) {
            (Cipher::Gcm { .. }, _) if self.encrypt => n + aes::TAG_LEN,
            (Cipher::Gcm { .. }, _) => n.saturating_sub(aes::TAG_LEN),
            (Cipher::Oaep(_), Material::RsaPublic(k)) => rsa::size(k),
            (Cipher::Oaep(_), Material::RsaPrivate(k)) => rsa::private_size(k),
            _ => n,
        }
    }

    pub fn update(&mut self, data: &[u8]) -> Rv<()> {
        self.updated = true;
        let (max, rv) = if self.encrypt {
            (MAX_BUFFERED, CKR_DATA_LEN_RANGE)
        } else {
            (MAX_BUFFERED + aes::TAG_LEN, CKR_ENCRYPTED_DATA_LEN_RANGE)
        };
        append_bounded(&mut self.buf, data, max, rv)
    }

    /// Processes buffered input plus `data`, leaving the state untouched so
    /// a too-small buffer can be retried. The output is wiped when dropped:
    /// it is plaintext when decrypting.
    pub fn compute(&self, data: &[u8]) -> Rv<Zeroizing<Vec<u8>>> {
        let joined;
        let input = if self.buf.is_empty() {
            data
        } else {
            joined = Zeroizing::new([self.buf.as_slice(), data].concat());
            &joined
        };
        match (&self.cipher, &*self.key) {
            (Cipher::Gcm { iv, aad }, Material::Aes(k)) => {
                if self.encrypt {
                    k.gcm_seal(iv, aad, input)
                } else {
                    k.gcm_open(iv, aad, input)
                }
            }
            (Cipher::Oaep(p), Material::RsaPublic(k)) => rsa::oaep_encrypt(k, p, input).map(Zeroizing::new),
            (Cipher::Oaep(p), Material::RsaPrivate(k)) => rsa::oaep_decrypt(k, p, input),
            _ => Err(CKR_GENERAL_ERROR),
        }
    }
}

#[derive(Clone)]
enum Accum {
    Digest(digest::Context),
    /// Wiped: the message (or the HMAC input) may be secret.
    Raw(Zeroizing<Vec<u8>>),
}

#[derive(Clone, Copy)]
enum Signer {
    /// HMAC input is buffered and the ring key made only for the one call
    /// that computes the tag: ring never wipes its HMAC states, which are as
    /// good as the key, so none may outlive a call.
    Hmac(hmac::Algorithm),
    Rsa(rsa::Scheme),
    Ecdsa,
}

pub struct SignOp {
    key: Arc<Material>,
    signer: Signer,
    acc: Accum,
    updated: bool,
}

fn hashed(m: CK_MECHANISM_TYPE) -> Option<Hash> {
    match m {
        CKM_SHA256_RSA_PKCS | CKM_SHA256_RSA_PKCS_PSS | CKM_ECDSA_SHA256 => Some(Hash::Sha256),
        CKM_SHA384_RSA_PKCS | CKM_SHA384_RSA_PKCS_PSS | CKM_ECDSA_SHA384 => Some(Hash::Sha384),
        CKM_SHA512_RSA_PKCS | CKM_SHA512_RSA_PKCS_PSS => Some(Hash::Sha512),
        _ => None,
    }
}

/// Validated PSS parameters: a known hash (the mechanism's own for
/// CKM_SHAx_RSA_PKCS_PSS), the MGF1 of that hash, and a salt that fits the
/// key's modulus (sLen <= emLen - hLen - 2).
fn pss_scheme(p: &Param, expect: Option<Hash>, key: &Material) -> Rv<rsa::Scheme> {
    let Param::Pss { hash, mgf, salt_len } = p else {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    };
    let hash = Hash::from_mech(*hash)?;
    if *mgf != hash.mgf() || expect.is_some_and(|e| e != hash) || hash == Hash::Sha1 {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let bits = match key {
        Material::RsaPrivate(k) => rsa::private_bits(k),
        Material::RsaPublic(k) => rsa::bits(k),
        _ => return Err(CKR_KEY_TYPE_INCONSISTENT),
    };
    let salt = usize::try_from(*salt_len).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
    if salt > rsa::pss_max_salt(bits, hash) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    Ok(rsa::Scheme::Pss { hash, salt })
}

impl SignOp {
    pub fn init(m: &Mechanism, obj: &Object, sign: bool) -> Rv<SignOp> {
        require(&obj.attrs, if sign { CKA_SIGN } else { CKA_VERIFY }, m.mech)?;
        let key = obj.material()?;
        let prehash = hashed(m.mech);
        let acc = match prehash {
            Some(h) => Accum::Digest(digest::Context::new(h.ring())),
            None => Accum::Raw(Zeroizing::new(Vec::new())),
        };
        let (signer, acc) = match m.mech {
            CKM_SHA256_HMAC | CKM_SHA384_HMAC | CKM_SHA512_HMAC => {
                hm::key_type_ok(obj.attrs.key_type())?;
                let alg = hm::algorithm(m.mech).ok_or(CKR_MECHANISM_INVALID)?;
                hmac_raw(&key)?;
                (Signer::Hmac(alg), acc)
            }
            CKM_ECDSA | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 => {
                match (&*key, sign) {
                    (Material::EcPrivate(_), true) | (Material::EcPublic(_), false) => {}
                    _ => return Err(CKR_KEY_TYPE_INCONSISTENT),
                }
                (Signer::Ecdsa, acc)
            }
            CKM_RSA_PKCS | CKM_SHA256_RSA_PKCS | CKM_SHA384_RSA_PKCS | CKM_SHA512_RSA_PKCS => {
                rsa_key_ok(&key, sign)?;
                (Signer::Rsa(rsa::Scheme::Pkcs1(prehash)), acc)
            }
            CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS | CKM_SHA384_RSA_PKCS_PSS | CKM_SHA512_RSA_PKCS_PSS => {
                rsa_key_ok(&key, sign)?;
                (Signer::Rsa(pss_scheme(&m.param, prehash, &key)?), acc)
            }
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        Ok(SignOp {
            key,
            signer,
            acc,
            updated: false,
        })
    }

    pub fn update(&mut self, data: &[u8]) -> Rv<()> {
        self.updated = true;
        match &mut self.acc {
            Accum::Digest(c) => c.update(data),
            Accum::Raw(v) => append_bounded(v, data, MAX_BUFFERED, CKR_DATA_LEN_RANGE)?,
        }
        Ok(())
    }

    /// Signature length.
    pub fn len(&self) -> usize {
        match (self.signer, &*self.key) {
            (Signer::Hmac(alg), _) => alg.digest_algorithm().output_len(),
            (_, Material::RsaPrivate(k)) => rsa::private_size(k),
            (_, Material::RsaPublic(k)) => rsa::size(k),
            (_, Material::EcPrivate(k)) => 2 * k.curve().size(),
            (_, Material::EcPublic(k)) => 2 * k.curve().size(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the signature covers: HMAC tag, digest or raw input.
    fn input(&self, data: &[u8]) -> Rv<Zeroizing<Vec<u8>>> {
        let input = match &self.acc {
            Accum::Digest(c) => {
                let mut c = c.clone();
                c.update(data);
                Zeroizing::new(c.finish().as_ref().to_vec())
            }
            Accum::Raw(v) => {
                let mut joined = Zeroizing::new(Vec::with_capacity(v.len() + data.len()));
                joined.extend_from_slice(v);
                joined.extend_from_slice(data);
                joined
            }
        };
        match self.signer {
            Signer::Hmac(alg) => {
                let k = hmac::Key::new(alg, hmac_raw(&self.key)?);
                Ok(Zeroizing::new(hmac::sign(&k, &input).as_ref().to_vec()))
            }
            _ => Ok(input),
        }
    }

    pub fn sign(&self, data: &[u8]) -> Rv<Vec<u8>> {
        let input = self.input(data)?;
        match (self.signer, &*self.key) {
            (Signer::Hmac(_), _) => Ok(input.to_vec()),
            (Signer::Rsa(s), Material::RsaPrivate(k)) => rsa::sign(k, s, &input),
            (Signer::Ecdsa, Material::EcPrivate(k)) => k.sign_prehash(&input),
            _ => Err(CKR_GENERAL_ERROR),
        }
    }

    pub fn verify(&self, data: &[u8], sig: &[u8]) -> Rv<()> {
        if let Signer::Hmac(alg) = self.signer {
            if sig.len() != alg.digest_algorithm().output_len() {
                return Err(CKR_SIGNATURE_LEN_RANGE);
            }
        }
        let input = self.input(data)?;
        match (self.signer, &*self.key) {
            (Signer::Hmac(_), _) => {
                if ct_eq(&input, sig) {
                    Ok(())
                } else {
                    Err(CKR_SIGNATURE_INVALID)
                }
            }
            (Signer::Rsa(s), Material::RsaPublic(k)) => rsa::verify(k, s, &input, sig),
            (Signer::Ecdsa, Material::EcPublic(k)) => k.verify_prehash(&input, sig),
            _ => Err(CKR_GENERAL_ERROR),
        }
    }
}

/// The raw bytes of a key usable for HMAC.
fn hmac_raw(key: &Material) -> Rv<&[u8]> {
    match key {
        Material::Aes(k) => Ok(k.raw()),
        Material::Generic(v) => Ok(v),
        _ => Err(CKR_KEY_TYPE_INCONSISTENT),
    }
}

fn rsa_key_ok(key: &Material, sign: bool) -> Rv<()> {
    match (key, sign) {
        (Material::RsaPrivate(_), true) | (Material::RsaPublic(_), false) => Ok(()),
        _ => Err(CKR_KEY_TYPE_INCONSISTENT),
    }
}

#[derive(Clone)]
pub struct DigestOp {
    ctx: digest::Context,
    updated: bool,
}

impl DigestOp {
    pub fn init(m: &Mechanism) -> Rv<DigestOp> {
        Ok(DigestOp {
            ctx: digest::Context::new(digest_hash(m.mech)?.ring()),
            updated: false,
        })
    }
    pub fn len(&self) -> usize {
        self.ctx.algorithm().output_len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn update(&mut self, data: &[u8]) {
        self.updated = true;
        self.ctx.update(data)
    }
    pub fn compute(&self, data: &[u8]) -> Vec<u8> {
        let mut c = self.ctx.clone();
        c.update(data);
        c.finish().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_keeps_every_byte_across_growth() {
        let mut buf = Zeroizing::new(Vec::new());
        let mut expect = Vec::new();
        for i in 0..100u8 {
            let part = vec![i; usize::from(i % 7)];
            append(&mut buf, &part);
            expect.extend_from_slice(&part);
        }
        assert_eq!(&buf[..], &expect[..]);
    }
}
