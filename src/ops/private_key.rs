//! Asymmetric private keys in memory (RSA, ECDSA P-256/P-384), zeroized on drop by their crates,
//! and the operations done with them. Digests are computed by the caller; these functions sign and
//! verify digests.

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand_core::{CryptoRngCore, OsRng};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use crate::error::{KmsError, Result};
use crate::keys::algorithms::{EncryptionAlgorithm, SigningAlgorithm};
use crate::keys::KeySpec;

pub enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A freshly generated key pair: PKCS#8 DER private key and DER SubjectPublicKeyInfo.
pub struct GeneratedPair {
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub public_key: Vec<u8>,
}

fn encoding(e: impl std::fmt::Display) -> KmsError {
    KmsError::internal(format!("key encoding failed: {e}"))
}

/// Generates a key pair of `spec` with randomness from `rng`. CPU-heavy for RSA: call off the reactor.
pub fn generate(spec: KeySpec, rng: &mut impl CryptoRngCore) -> Result<GeneratedPair> {
    let (pkcs8, public_key) = match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let bits = spec.rsa_bits().unwrap_or(2048);
            let key = RsaPrivateKey::new(rng, bits).map_err(|e| KmsError::internal(format!("RSA keygen: {e}")))?;
            let public = key.to_public_key().to_public_key_der().map_err(encoding)?;
            (key.to_pkcs8_der().map_err(encoding)?, public)
        }
        KeySpec::EccNistP256 => {
            let key = p256::SecretKey::random(rng);
            (
                key.to_pkcs8_der().map_err(encoding)?,
                key.public_key().to_public_key_der().map_err(encoding)?,
            )
        }
        KeySpec::EccNistP384 => {
            let key = p384::SecretKey::random(rng);
            (
                key.to_pkcs8_der().map_err(encoding)?,
                key.public_key().to_public_key_der().map_err(encoding)?,
            )
        }
        other => {
            return Err(KmsError::internal(format!(
                "{} is not an asymmetric key spec",
                other.as_str()
            )))
        }
    };
    Ok(GeneratedPair {
        pkcs8: Zeroizing::new(pkcs8.as_bytes().to_vec()),
        public_key: public_key.as_bytes().to_vec(),
    })
}

impl PrivateKey {
    pub fn from_pkcs8(spec: KeySpec, der: &[u8]) -> Result<PrivateKey> {
        let bad = |_| KmsError::internal("stored private key is not valid PKCS#8");
        Ok(match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                PrivateKey::Rsa(Box::new(RsaPrivateKey::from_pkcs8_der(der).map_err(bad)?))
            }
            KeySpec::EccNistP256 => PrivateKey::P256(p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(bad)?),
            KeySpec::EccNistP384 => PrivateKey::P384(p384::ecdsa::SigningKey::from_pkcs8_der(der).map_err(bad)?),
            other => return Err(KmsError::internal(format!("{} has no private key", other.as_str()))),
        })
    }

    /// Signs a digest made with `algorithm`'s hash. PSS uses a salt as long as the hash.
    ///
    /// RSA always signs with blinding (`sign_with_rng`, `Pss::new_blinded`): the caller chooses
    /// the digest, and the rsa crate's unblinded private-key operation is variable-time. The
    /// signatures are ordinary PKCS#1 v1.5 / PSS signatures either way.
    pub fn sign(&self, algorithm: SigningAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        use SigningAlgorithm::*;
        let failed = |e: &dyn std::fmt::Display| KmsError::internal(format!("signing failed: {e}"));
        match (self, algorithm) {
            (PrivateKey::Rsa(k), RsassaPssSha256) => k.sign_with_rng(&mut OsRng, Pss::new_blinded::<Sha256>(), digest),
            (PrivateKey::Rsa(k), RsassaPssSha384) => k.sign_with_rng(&mut OsRng, Pss::new_blinded::<Sha384>(), digest),
            (PrivateKey::Rsa(k), RsassaPssSha512) => k.sign_with_rng(&mut OsRng, Pss::new_blinded::<Sha512>(), digest),
            (PrivateKey::Rsa(k), RsassaPkcs1V15Sha256) => {
                k.sign_with_rng(&mut OsRng, Pkcs1v15Sign::new::<Sha256>(), digest)
            }
            (PrivateKey::Rsa(k), RsassaPkcs1V15Sha384) => {
                k.sign_with_rng(&mut OsRng, Pkcs1v15Sign::new::<Sha384>(), digest)
            }
            (PrivateKey::Rsa(k), RsassaPkcs1V15Sha512) => {
                k.sign_with_rng(&mut OsRng, Pkcs1v15Sign::new::<Sha512>(), digest)
            }
            (PrivateKey::P256(k), EcdsaSha256) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).map_err(|e| failed(&e))?;
                return Ok(sig.to_der().as_bytes().to_vec());
            }
            (PrivateKey::P384(k), EcdsaSha384) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(digest).map_err(|e| failed(&e))?;
                return Ok(sig.to_der().as_bytes().to_vec());
            }
            _ => return Err(KmsError::internal("signing algorithm does not fit the key")),
        }
        .map_err(|e| failed(&e))
    }

    /// True when `signature` is valid for `digest`. Malformed signatures are simply invalid.
    pub fn verify(&self, algorithm: SigningAlgorithm, digest: &[u8], signature: &[u8]) -> bool {
        use SigningAlgorithm::*;
        match (self, algorithm) {
            (PrivateKey::Rsa(k), alg) => {
                let public: &RsaPublicKey = (**k).as_ref();
                // RFC 8017 8.1.2 (RSAVP1): a signature representative s must be below the modulus.
                // rsa 0.9 checks that for PKCS#1 v1.5 but not for PSS, where s + n (when it still
                // fits in the modulus' length) would verify as well as s: a second valid form of
                // every signature, which no other verifier accepts.
                if rsa::BigUint::from_bytes_be(signature) >= *public.n() {
                    return false;
                }
                match alg {
                    RsassaPssSha256 => public.verify(Pss::new::<Sha256>(), digest, signature),
                    RsassaPssSha384 => public.verify(Pss::new::<Sha384>(), digest, signature),
                    RsassaPssSha512 => public.verify(Pss::new::<Sha512>(), digest, signature),
                    RsassaPkcs1V15Sha256 => public.verify(Pkcs1v15Sign::new::<Sha256>(), digest, signature),
                    RsassaPkcs1V15Sha384 => public.verify(Pkcs1v15Sign::new::<Sha384>(), digest, signature),
                    RsassaPkcs1V15Sha512 => public.verify(Pkcs1v15Sign::new::<Sha512>(), digest, signature),
                    _ => return false,
                }
                .is_ok()
            }
            (PrivateKey::P256(k), EcdsaSha256) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| k.verifying_key().verify_prehash(digest, &sig).is_ok()),
            (PrivateKey::P384(k), EcdsaSha384) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| k.verifying_key().verify_prehash(digest, &sig).is_ok()),
            _ => false,
        }
    }

    fn rsa(&self) -> Result<&RsaPrivateKey> {
        match self {
            PrivateKey::Rsa(k) => Ok(k),
            _ => Err(KmsError::internal("not an RSA key")),
        }
    }

    pub fn modulus_len(&self) -> Result<usize> {
        Ok(self.rsa()?.size())
    }

    pub fn rsa_encrypt(&self, algorithm: EncryptionAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        let public = RsaPublicKey::from(self.rsa()?);
        let result = match algorithm {
            EncryptionAlgorithm::RsaesOaepSha1 => public.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), plaintext),
            EncryptionAlgorithm::RsaesOaepSha256 => public.encrypt(&mut OsRng, Oaep::new::<Sha256>(), plaintext),
            _ => return Err(KmsError::internal("not an OAEP algorithm")),
        };
        result.map_err(|e| KmsError::internal(format!("RSA encryption failed: {e}")))
    }

    /// RSAES-OAEP decryption with blinding. Any failure is InvalidCiphertext, with no detail.
    pub fn rsa_decrypt(&self, algorithm: EncryptionAlgorithm, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.rsa()?;
        let result = match algorithm {
            EncryptionAlgorithm::RsaesOaepSha1 => {
                key.decrypt_blinded(&mut OsRng, Oaep::new::<sha1::Sha1>(), ciphertext)
            }
            EncryptionAlgorithm::RsaesOaepSha256 => key.decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), ciphertext),
            _ => return Err(KmsError::internal("not an OAEP algorithm")),
        };
        result.map(Zeroizing::new).map_err(|_| {
            KmsError::InvalidCiphertext("The ciphertext could not be decrypted with this key and algorithm".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::algorithms::Hash;

    #[test]
    fn ec_sign_verify_round_trip() {
        let pair = generate(KeySpec::EccNistP256, &mut OsRng).unwrap();
        let key = PrivateKey::from_pkcs8(KeySpec::EccNistP256, &pair.pkcs8).unwrap();
        let digest = Hash::Sha256.digest(b"hello");
        let sig = key.sign(SigningAlgorithm::EcdsaSha256, &digest).unwrap();
        assert!(key.verify(SigningAlgorithm::EcdsaSha256, &digest, &sig));
        assert!(!key.verify(SigningAlgorithm::EcdsaSha256, &Hash::Sha256.digest(b"other"), &sig));
        assert!(!key.verify(SigningAlgorithm::EcdsaSha256, &digest, b"garbage"));
    }

    #[test]
    fn rsa_sign_and_encrypt_round_trip() {
        let pair = generate(KeySpec::Rsa2048, &mut OsRng).unwrap();
        let key = PrivateKey::from_pkcs8(KeySpec::Rsa2048, &pair.pkcs8).unwrap();
        let digest = Hash::Sha384.digest(b"hello");
        for alg in [
            SigningAlgorithm::RsassaPssSha384,
            SigningAlgorithm::RsassaPkcs1V15Sha384,
        ] {
            let sig = key.sign(alg, &digest).unwrap();
            assert!(key.verify(alg, &digest, &sig));
        }
        // The spec's OAEP limit (checked before the key is used) is exactly this key's.
        for alg in [EncryptionAlgorithm::RsaesOaepSha1, EncryptionAlgorithm::RsaesOaepSha256] {
            let limit = KeySpec::Rsa2048.oaep_limit(alg).unwrap();
            assert!(key.rsa_encrypt(alg, &vec![1u8; limit]).is_ok());
            assert!(key.rsa_encrypt(alg, &vec![1u8; limit + 1]).is_err());
        }
        let ct = key
            .rsa_encrypt(EncryptionAlgorithm::RsaesOaepSha256, b"secret")
            .unwrap();
        assert_eq!(
            &key.rsa_decrypt(EncryptionAlgorithm::RsaesOaepSha256, &ct).unwrap()[..],
            b"secret"
        );
        assert!(key.rsa_decrypt(EncryptionAlgorithm::RsaesOaepSha1, &ct).is_err());
    }

    /// s + n is the same residue as s, so only the range check tells it from the signature s.
    #[test]
    fn an_rsa_signature_plus_the_modulus_is_invalid() {
        // A modulus below 0xe0 << 2040, so that at least 1 in 8 signatures s has s + n < 2^2048.
        let key = std::iter::repeat_with(|| {
            let pair = generate(KeySpec::Rsa2048, &mut OsRng).unwrap();
            PrivateKey::from_pkcs8(KeySpec::Rsa2048, &pair.pkcs8).unwrap()
        })
        .find(|k| k.rsa().unwrap().n().to_bytes_be()[0] < 0xe0)
        .unwrap();
        let n = key.rsa().unwrap().n().clone();
        for alg in [
            SigningAlgorithm::RsassaPssSha256,
            SigningAlgorithm::RsassaPkcs1V15Sha256,
        ] {
            let (digest, sig, shifted) = (0..200u32)
                .find_map(|i| {
                    let digest = Hash::Sha256.digest(&i.to_be_bytes());
                    let sig = key.sign(alg, &digest).unwrap();
                    let shifted = (rsa::BigUint::from_bytes_be(&sig) + &n).to_bytes_be();
                    (shifted.len() == sig.len()).then_some((digest, sig, shifted))
                })
                .expect("no signature below 2^2048 - n in 200 tries");
            assert!(key.verify(alg, &digest, &sig), "{alg:?}");
            assert!(!key.verify(alg, &digest, &shifted), "{alg:?}: s + n verified");
        }
    }
}
