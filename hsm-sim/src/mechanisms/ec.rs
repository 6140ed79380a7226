//! ECDSA on P-256 and P-384 (p256/p384 crates). Signatures are raw r||s as
//! PKCS#11 specifies; CKA_EC_POINT is a DER OCTET STRING of the point.
use crate::attrs::{Attrs, Value};
use crate::Rv;
use cryptoki_sys::*;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::OsRng;
use zeroize::{Zeroize, Zeroizing};

pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    pub fn from_params(params: &[u8]) -> Rv<Curve> {
        match params {
            P256_OID => Ok(Curve::P256),
            P384_OID => Ok(Curve::P384),
            _ => Err(CKR_CURVE_NOT_SUPPORTED),
        }
    }
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => P256_OID,
            Curve::P384 => P384_OID,
        }
    }
    /// Field size in bytes.
    pub fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

pub enum EcPrivate {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

pub enum EcPublic {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// Wraps a SEC1 point in a DER OCTET STRING.
fn der_octets(point: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    if point.len() < 0x80 {
        out.push(point.len() as u8);
    } else {
        out.push(0x81);
        out.push(point.len() as u8);
    }
    out.extend_from_slice(point);
    out
}

/// Accepts a DER OCTET STRING or, leniently, a bare SEC1 point.
fn unwrap_octets(v: &[u8]) -> &[u8] {
    match v {
        [0x04, 0x81, n, rest @ ..] if *n as usize == rest.len() => rest,
        [0x04, n, rest @ ..] if *n as usize == rest.len() && *n < 0x80 => rest,
        _ => v,
    }
}

pub type Parts = Vec<(CK_ATTRIBUTE_TYPE, Value)>;

/// A secret scalar's bytes, wiped when dropped; the field-bytes array the
/// curve crates return is wiped too.
fn scalar(bytes: &mut [u8]) -> Value {
    let v = Zeroizing::new(bytes.to_vec());
    bytes.zeroize();
    v
}

pub fn generate(curve: Curve) -> (Parts, Parts) {
    let (point, d) = match curve {
        Curve::P256 => {
            let sk = p256::SecretKey::random(&mut OsRng);
            (sk.public_key().to_sec1_bytes().to_vec(), scalar(&mut sk.to_bytes()))
        }
        Curve::P384 => {
            let sk = p384::SecretKey::random(&mut OsRng);
            (sk.public_key().to_sec1_bytes().to_vec(), scalar(&mut sk.to_bytes()))
        }
    };
    parts(curve, point, d)
}

fn parts(curve: Curve, point: Vec<u8>, d: Value) -> (Parts, Parts) {
    (
        vec![
            (CKA_EC_PARAMS, curve.oid().to_vec().into()),
            (CKA_EC_POINT, der_octets(&point).into()),
        ],
        vec![(CKA_EC_PARAMS, curve.oid().to_vec().into()), (CKA_VALUE, d)],
    )
}

/// Private key attributes from PKCS#8 (unwrap).
pub fn from_pkcs8(der: &[u8]) -> Rv<Parts> {
    if let Ok(sk) = p256::SecretKey::from_pkcs8_der(der) {
        return Ok(parts(Curve::P256, Vec::new(), scalar(&mut sk.to_bytes())).1);
    }
    if let Ok(sk) = p384::SecretKey::from_pkcs8_der(der) {
        return Ok(parts(Curve::P384, Vec::new(), scalar(&mut sk.to_bytes())).1);
    }
    Err(CKR_WRAPPED_KEY_INVALID)
}

fn padded(v: &[u8], size: usize) -> Rv<Zeroizing<Vec<u8>>> {
    if v.len() > size {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let mut out = Zeroizing::new(vec![0u8; size - v.len()]);
    out.extend_from_slice(v);
    Ok(out)
}

impl EcPrivate {
    pub fn from_attrs(a: &Attrs) -> Rv<EcPrivate> {
        let curve = Curve::from_params(a.get(CKA_EC_PARAMS).ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
        let d = padded(a.get(CKA_VALUE).ok_or(CKR_TEMPLATE_INCOMPLETE)?, curve.size())?;
        let bad = |_| CKR_ATTRIBUTE_VALUE_INVALID;
        Ok(match curve {
            Curve::P256 => EcPrivate::P256(p256::ecdsa::SigningKey::from_slice(&d).map_err(bad)?),
            Curve::P384 => EcPrivate::P384(p384::ecdsa::SigningKey::from_slice(&d).map_err(bad)?),
        })
    }

    pub fn curve(&self) -> Curve {
        match self {
            EcPrivate::P256(_) => Curve::P256,
            EcPrivate::P384(_) => Curve::P384,
        }
    }

    /// Signs a digest; returns r || s.
    pub fn sign_prehash(&self, digest: &[u8]) -> Rv<Vec<u8>> {
        let r = match self {
            EcPrivate::P256(k) => {
                PrehashSigner::<p256::ecdsa::Signature>::sign_prehash(k, digest).map(|s| s.to_bytes().to_vec())
            }
            EcPrivate::P384(k) => {
                PrehashSigner::<p384::ecdsa::Signature>::sign_prehash(k, digest).map(|s| s.to_bytes().to_vec())
            }
        };
        r.map_err(|_| CKR_DATA_LEN_RANGE)
    }

    pub fn to_pkcs8(&self) -> Rv<Zeroizing<Vec<u8>>> {
        let doc = match self {
            EcPrivate::P256(k) => p256::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_der(),
            EcPrivate::P384(k) => p384::SecretKey::from(k.as_nonzero_scalar()).to_pkcs8_der(),
        };
        Ok(Zeroizing::new(doc.map_err(|_| CKR_GENERAL_ERROR)?.as_bytes().to_vec()))
    }
}

impl EcPublic {
    pub fn from_attrs(a: &Attrs) -> Rv<EcPublic> {
        let curve = Curve::from_params(a.get(CKA_EC_PARAMS).ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
        let point = unwrap_octets(a.get(CKA_EC_POINT).ok_or(CKR_TEMPLATE_INCOMPLETE)?);
        let bad = |_| CKR_ATTRIBUTE_VALUE_INVALID;
        Ok(match curve {
            Curve::P256 => EcPublic::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad)?),
            Curve::P384 => EcPublic::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad)?),
        })
    }

    pub fn curve(&self) -> Curve {
        match self {
            EcPublic::P256(_) => Curve::P256,
            EcPublic::P384(_) => Curve::P384,
        }
    }

    /// Verifies r || s over a digest.
    pub fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> Rv<()> {
        if sig.len() != 2 * self.curve().size() {
            return Err(CKR_SIGNATURE_LEN_RANGE);
        }
        let ok = match self {
            EcPublic::P256(k) => p256::ecdsa::Signature::from_slice(sig)
                .ok()
                .is_some_and(|s| k.verify_prehash(digest, &s).is_ok()),
            EcPublic::P384(k) => p384::ecdsa::Signature::from_slice(sig)
                .ok()
                .is_some_and(|s| k.verify_prehash(digest, &s).is_ok()),
        };
        if ok {
            Ok(())
        } else {
            Err(CKR_SIGNATURE_INVALID)
        }
    }
}
