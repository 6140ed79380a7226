//! RSA (the `rsa` crate): key generation, OAEP, PKCS#1 v1.5 and PSS
//! signatures, PKCS#8 for wrapping private keys.
use super::digest::Hash;
use super::OaepParams;
use crate::attrs::{enc_ulong, Attrs, Value};
use crate::Rv;
use cryptoki_sys::*;
use rand_core::OsRng;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// Generated key: public and private attribute values.
pub type Parts = Vec<(CK_ATTRIBUTE_TYPE, Value)>;

/// A public exponent key generation can use: odd and 3 <= e <= 2^33 - 1,
/// the range the rsa crate accepts (it loops forever on an even e, and
/// refuses a larger one only after generating the primes).
fn public_exponent(exponent: Option<&[u8]>) -> Rv<BigUint> {
    let e = BigUint::from_bytes_be(exponent.unwrap_or(&[1, 0, 1]));
    let max = BigUint::from(RsaPublicKey::MAX_PUB_EXPONENT);
    let odd = e.to_bytes_le()[0] & 1 == 1;
    if e < BigUint::from(3u8) || e > max || !odd {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    Ok(e)
}

pub fn generate(bits: usize, exponent: Option<&[u8]>) -> Rv<(Parts, Parts)> {
    if !(2048..=4096).contains(&bits) {
        return Err(CKR_KEY_SIZE_RANGE);
    }
    let e = public_exponent(exponent)?;
    let key = RsaPrivateKey::new_with_exp(&mut OsRng, bits, &e).map_err(|_| CKR_TEMPLATE_INCONSISTENT)?;
    Ok(parts(&key))
}

/// Big-endian bytes, wiped when dropped.
fn bytes(v: &BigUint) -> Value {
    Zeroizing::new(v.to_bytes_be())
}

fn parts(key: &RsaPrivateKey) -> (Parts, Parts) {
    let n = bytes(key.n());
    let e = bytes(key.e());
    let public = vec![
        (CKA_MODULUS, n.clone()),
        (CKA_PUBLIC_EXPONENT, e.clone()),
        (CKA_MODULUS_BITS, enc_ulong(key.n().bits() as CK_ULONG).into()),
    ];
    let mut private = vec![
        (CKA_MODULUS, n),
        (CKA_PUBLIC_EXPONENT, e),
        (CKA_PRIVATE_EXPONENT, bytes(key.d())),
    ];
    if let [p, q] = key.primes() {
        private.push((CKA_PRIME_1, bytes(p)));
        private.push((CKA_PRIME_2, bytes(q)));
    }
    // The rsa crate returns dp and dq by reference but the coefficient as a
    // new number, which it does not wipe: it is wiped here.
    let qi = key.crt_coefficient().map(Zeroizing::new);
    if let (Some(dp), Some(dq), Some(qi)) = (key.dp(), key.dq(), qi) {
        private.push((CKA_EXPONENT_1, bytes(dp)));
        private.push((CKA_EXPONENT_2, bytes(dq)));
        private.push((CKA_COEFFICIENT, bytes(&qi)));
    }
    (public, private)
}

fn big(a: &Attrs, t: CK_ATTRIBUTE_TYPE) -> Rv<BigUint> {
    Ok(BigUint::from_bytes_be(a.get(t).ok_or(CKR_TEMPLATE_INCOMPLETE)?))
}

pub fn public_from_attrs(a: &Attrs) -> Rv<RsaPublicKey> {
    RsaPublicKey::new(big(a, CKA_MODULUS)?, big(a, CKA_PUBLIC_EXPONENT)?).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)
}

/// A private key number the rsa crate can take: 1 < v < 2^4096. It panics
/// on a zero modulus or private exponent and is slow on huge ones.
fn component(a: &Attrs, t: CK_ATTRIBUTE_TYPE) -> Rv<BigUint> {
    let v = big(a, t)?;
    if v <= BigUint::from(1u8) || v.bits() > RsaPublicKey::MAX_SIZE {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    Ok(v)
}

pub fn private_from_attrs(a: &Attrs) -> Rv<RsaPrivateKey> {
    let primes = match (a.get(CKA_PRIME_1), a.get(CKA_PRIME_2)) {
        (Some(_), Some(_)) => vec![component(a, CKA_PRIME_1)?, component(a, CKA_PRIME_2)?],
        _ => Vec::new(),
    };
    let mut key = RsaPrivateKey::from_components(
        component(a, CKA_MODULUS)?,
        big(a, CKA_PUBLIC_EXPONENT)?,
        component(a, CKA_PRIVATE_EXPONENT)?,
        primes,
    )
    .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    key.precompute().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    Ok(key)
}

/// Attributes of a private key object recovered from PKCS#8 (unwrap).
pub fn from_pkcs8(der: &[u8]) -> Rv<Parts> {
    let key = RsaPrivateKey::from_pkcs8_der(der).map_err(|_| CKR_WRAPPED_KEY_INVALID)?;
    Ok(parts(&key).1)
}

pub fn to_pkcs8(key: &RsaPrivateKey) -> Rv<Zeroizing<Vec<u8>>> {
    let doc = key.to_pkcs8_der().map_err(|_| CKR_GENERAL_ERROR)?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

/// OAEP padding; hash and MGF1 must agree, the label must be UTF-8
/// (a limit of the rsa crate).
fn oaep(p: &OaepParams) -> Rv<Oaep> {
    let hash = Hash::from_mech(p.hash)?;
    if p.mgf != hash.mgf() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let mut o = match hash {
        Hash::Sha1 => Oaep::new::<Sha1>(),
        Hash::Sha256 => Oaep::new::<Sha256>(),
        _ => return Err(CKR_MECHANISM_PARAM_INVALID),
    };
    if !p.label.is_empty() {
        o.label = Some(String::from_utf8(p.label.clone()).map_err(|_| CKR_MECHANISM_PARAM_INVALID)?);
    }
    Ok(o)
}

pub fn check_oaep(p: &OaepParams) -> Rv<()> {
    oaep(p).map(|_| ())
}

pub fn oaep_encrypt(key: &RsaPublicKey, p: &OaepParams, data: &[u8]) -> Rv<Vec<u8>> {
    key.encrypt(&mut OsRng, oaep(p)?, data).map_err(|_| CKR_DATA_LEN_RANGE)
}

pub fn oaep_decrypt(key: &RsaPrivateKey, p: &OaepParams, data: &[u8]) -> Rv<Zeroizing<Vec<u8>>> {
    if data.len() != key.size() {
        return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
    }
    key.decrypt_blinded(&mut OsRng, oaep(p)?, data)
        .map(Zeroizing::new)
        .map_err(|_| CKR_ENCRYPTED_DATA_INVALID)
}

/// An RSA signature scheme applied to a digest (or, for CKM_RSA_PKCS, to
/// the caller's DigestInfo).
#[derive(Debug, Clone, Copy)]
pub enum Scheme {
    Pkcs1(Option<Hash>),
    Pss { hash: Hash, salt: usize },
}

fn pkcs1(h: Option<Hash>) -> Pkcs1v15Sign {
    match h {
        None => Pkcs1v15Sign::new_unprefixed(),
        Some(Hash::Sha1) => Pkcs1v15Sign::new::<Sha1>(),
        Some(Hash::Sha256) => Pkcs1v15Sign::new::<Sha256>(),
        Some(Hash::Sha384) => Pkcs1v15Sign::new::<Sha384>(),
        Some(Hash::Sha512) => Pkcs1v15Sign::new::<Sha512>(),
    }
}

/// Largest PSS salt for a modulus of `bits` bits: RFC 8017 (9.1.1) needs
/// emLen >= hLen + sLen + 2 with emLen = ceil((modBits - 1) / 8).
pub fn pss_max_salt(bits: usize, hash: Hash) -> usize {
    bits.saturating_sub(1).div_ceil(8).saturating_sub(hash.output_len() + 2)
}

/// PSS padding for a key of `bits` bits; a salt that cannot fit is refused
/// before the rsa crate allocates it.
fn pss(hash: Hash, salt: usize, bits: usize) -> Rv<Pss> {
    if salt > pss_max_salt(bits, hash) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    Ok(match hash {
        Hash::Sha1 => Pss::new_with_salt::<Sha1>(salt),
        Hash::Sha256 => Pss::new_with_salt::<Sha256>(salt),
        Hash::Sha384 => Pss::new_with_salt::<Sha384>(salt),
        Hash::Sha512 => Pss::new_with_salt::<Sha512>(salt),
    })
}

pub fn sign(key: &RsaPrivateKey, scheme: Scheme, input: &[u8]) -> Rv<Vec<u8>> {
    let r = match scheme {
        Scheme::Pkcs1(h) => key.sign_with_rng(&mut OsRng, pkcs1(h), input),
        Scheme::Pss { hash, salt } => {
            if input.len() != hash.output_len() {
                return Err(CKR_DATA_LEN_RANGE);
            }
            key.sign_with_rng(&mut OsRng, pss(hash, salt, private_bits(key))?, input)
        }
    };
    r.map_err(|_| CKR_DATA_LEN_RANGE)
}

pub fn verify(key: &RsaPublicKey, scheme: Scheme, input: &[u8], sig: &[u8]) -> Rv<()> {
    if sig.len() != key.size() {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let r = match scheme {
        Scheme::Pkcs1(h) => key.verify(pkcs1(h), input, sig),
        Scheme::Pss { hash, salt } => {
            if input.len() != hash.output_len() {
                return Err(CKR_DATA_LEN_RANGE);
            }
            key.verify(pss(hash, salt, bits(key))?, input, sig)
        }
    };
    r.map_err(|_| CKR_SIGNATURE_INVALID)
}

pub fn size(key: &RsaPublicKey) -> usize {
    key.size()
}

pub fn private_size(key: &RsaPrivateKey) -> usize {
    key.size()
}

/// Modulus length in bits.
pub fn bits(key: &RsaPublicKey) -> usize {
    key.n().bits()
}

pub fn private_bits(key: &RsaPrivateKey) -> usize {
    key.n().bits()
}

pub fn public_of(key: &RsaPrivateKey) -> RsaPublicKey {
    key.to_public_key()
}
