//! Every mechanism through cryptoki, with published known-answer vectors
//! where they are short (RFC 4231 HMAC, FIPS 180 digests).
mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn aes_key(sess: &Session, len: u64, extractable: bool) -> ObjectHandle {
    sess.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::ValueLen(len.into()),
            Attribute::Extractable(extractable),
            Attribute::Sensitive(!extractable),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ],
    )
    .unwrap()
}

#[test]
fn aes_gcm_all_key_sizes_single_and_multi_part() {
    let sess = user_session(init_token(0, "aes"));
    for len in [16u64, 24, 32] {
        let k = aes_key(&sess, len, false);
        let mut iv = [9u8; 12];
        let data: Vec<u8> = (0..100u8).collect();
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
        let ct = sess.encrypt(&m, k, &data).unwrap();
        sess.encrypt_init(&m, k).unwrap();
        let mut multi = sess.encrypt_update(&data[..40]).unwrap();
        multi.extend(sess.encrypt_update(&data[40..]).unwrap());
        multi.extend(sess.encrypt_final().unwrap());
        assert_eq!(multi, ct, "multi-part == single-part for AES-{}", len * 8);
        sess.decrypt_init(&m, k).unwrap();
        let mut pt = sess.decrypt_update(&ct[..70]).unwrap();
        pt.extend(sess.decrypt_update(&ct[70..]).unwrap());
        pt.extend(sess.decrypt_final().unwrap());
        assert_eq!(pt, data);
    }
}

/// Multi-part input is buffered up to 16 MiB per operation (and a GCM tag when decrypting): one
/// byte more is CKR_DATA_LEN_RANGE (CKR_ENCRYPTED_DATA_LEN_RANGE when decrypting) and ends the
/// operation (the next update finds none), for ciphers and for signatures alike.
#[test]
fn multi_part_input_is_bounded_and_past_the_bound_ends_the_operation() {
    let sess = user_session(init_token(8, "bounded"));
    let k = aes_key(&sess, 32, false);
    let mac_key = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value(vec![7; 32]),
            Attribute::Sign(true),
        ])
        .unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut iv = [9u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    sess.encrypt_init(&gcm, k).unwrap();
    for _ in 0..16 {
        sess.encrypt_update(&chunk).unwrap();
    }
    match sess.encrypt_update(&[0]) {
        Err(Error::Pkcs11(RvError::DataLenRange, _)) => {}
        other => panic!("the byte past 16 MiB gave {other:?}"),
    }
    match sess.encrypt_update(&[0]) {
        Err(Error::Pkcs11(RvError::OperationNotInitialized, _)) => {}
        other => panic!("the operation went on: {other:?}"),
    }
    // 16 MiB encrypted multi-part (16 MiB and its tag) decrypts multi-part; a byte more is
    // CKR_ENCRYPTED_DATA_LEN_RANGE.
    sess.encrypt_init(&gcm, k).unwrap();
    for _ in 0..16 {
        sess.encrypt_update(&chunk).unwrap();
    }
    let ct = sess.encrypt_final().unwrap();
    assert_eq!(ct.len(), (16 << 20) + 16);
    sess.decrypt_init(&gcm, k).unwrap();
    for part in ct.chunks(1 << 20) {
        sess.decrypt_update(part).unwrap();
    }
    assert_eq!(sess.decrypt_final().unwrap().len(), 16 << 20);
    sess.decrypt_init(&gcm, k).unwrap();
    sess.decrypt_update(&ct).unwrap();
    match sess.decrypt_update(&[0]) {
        Err(Error::Pkcs11(RvError::EncryptedDataLenRange, _)) => {}
        other => panic!("the byte past 16 MiB and a tag gave {other:?}"),
    }
    sess.sign_init(&Mechanism::Sha256Hmac, mac_key).unwrap();
    for _ in 0..16 {
        sess.sign_update(&chunk).unwrap();
    }
    match sess.sign_update(&[0]) {
        Err(Error::Pkcs11(RvError::DataLenRange, _)) => {}
        other => panic!("the byte past 16 MiB gave {other:?}"),
    }
    match sess.sign_final() {
        Err(Error::Pkcs11(RvError::OperationNotInitialized, _)) => {}
        other => panic!("the operation went on: {other:?}"),
    }
}

#[test]
fn hmac_rfc4231_and_generic_secret_keygen() {
    let sess = user_session(init_token(1, "hmac"));
    // RFC 4231 test case 2.
    let key = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value(b"Jefe".to_vec()),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ])
        .unwrap();
    let data = b"what do ya want for nothing?";
    let cases = [
        (Mechanism::Sha256Hmac, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (
            Mechanism::Sha384Hmac,
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        ),
        (
            Mechanism::Sha512Hmac,
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        ),
    ];
    for (m, expect) in &cases {
        let mac = sess.sign(m, key, data).unwrap();
        assert_eq!(mac, unhex(expect));
        sess.verify(m, key, data, &mac).unwrap();
        let mut bad = mac.clone();
        bad[0] ^= 1;
        assert!(sess.verify(m, key, data, &bad).is_err());
        // Multi-part gives the same tag.
        sess.sign_init(m, key).unwrap();
        sess.sign_update(&data[..10]).unwrap();
        sess.sign_update(&data[10..]).unwrap();
        assert_eq!(sess.sign_final().unwrap(), mac);
    }
    let g = sess
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::ValueLen(48.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .unwrap();
    let mac = sess.sign(&Mechanism::Sha384Hmac, g, b"x").unwrap();
    sess.verify(&Mechanism::Sha384Hmac, g, b"x", &mac).unwrap();
}

#[test]
fn digests_fips180_abc() {
    let sess = user_session(init_token(2, "digest"));
    let cases = [
        (Mechanism::Sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            Mechanism::Sha384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            Mechanism::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ];
    for (m, expect) in &cases {
        assert_eq!(sess.digest(m, b"abc").unwrap(), unhex(expect));
        sess.digest_init(m).unwrap();
        sess.digest_update(b"a").unwrap();
        sess.digest_update(b"bc").unwrap();
        assert_eq!(sess.digest_final().unwrap(), unhex(expect));
    }
}

fn rsa_pair(sess: &Session, bits: u64) -> (ObjectHandle, ObjectHandle) {
    sess.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::ModulusBits(bits.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Encrypt(true),
            Attribute::Verify(true),
            Attribute::Wrap(true),
        ],
        &[
            Attribute::Decrypt(true),
            Attribute::Sign(true),
            Attribute::Unwrap(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(true),
        ],
    )
    .unwrap()
}

fn oaep(hash: MechanismType, mgf: PkcsMgfType, label: &[u8]) -> Mechanism<'_> {
    let src = if label.is_empty() {
        PkcsOaepSource::empty()
    } else {
        PkcsOaepSource::data_specified(label)
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, src))
}

#[test]
fn rsa_oaep_pkcs1_pss() {
    let sess = user_session(init_token(3, "rsa"));
    let (pubk, privk) = rsa_pair(&sess, 2048);
    let attrs = sess.get_attributes(pubk, &[AttributeType::ModulusBits]).unwrap();
    assert_eq!(attrs, vec![Attribute::ModulusBits(2048.into())]);

    for (h, mgf) in [
        (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    ] {
        for label in [&b""[..], b"a label"] {
            let m = oaep(h, mgf, label);
            let ct = sess.encrypt(&m, pubk, b"secret message").unwrap();
            assert_eq!(ct.len(), 256);
            assert_eq!(sess.decrypt(&m, privk, &ct).unwrap(), b"secret message");
        }
    }
    // Mismatched MGF is refused.
    assert!(sess
        .encrypt(&oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA1, b""), pubk, b"x")
        .is_err());

    let digest = sess.digest(&Mechanism::Sha256, b"message").unwrap();
    let mut digest_info = unhex("3031300d060960864801650304020105000420");
    digest_info.extend_from_slice(&digest);
    let sig = sess.sign(&Mechanism::RsaPkcs, privk, &digest_info).unwrap();
    let sig2 = sess.sign(&Mechanism::Sha256RsaPkcs, privk, b"message").unwrap();
    assert_eq!(sig, sig2, "CKM_RSA_PKCS over DigestInfo == CKM_SHA256_RSA_PKCS");
    for m in [
        Mechanism::Sha256RsaPkcs,
        Mechanism::Sha384RsaPkcs,
        Mechanism::Sha512RsaPkcs,
    ] {
        let s = sess.sign(&m, privk, b"message").unwrap();
        sess.verify(&m, pubk, b"message", &s).unwrap();
        assert!(sess.verify(&m, pubk, b"messagE", &s).is_err());
    }
    let pss = |h, mgf, salt: u64| PkcsPssParams {
        hash_alg: h,
        mgf,
        s_len: salt.into(),
    };
    let p256 = pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32);
    let p384 = pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48);
    let p512 = pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64);
    let s = sess.sign(&Mechanism::RsaPkcsPss(p256), privk, &digest).unwrap();
    sess.verify(&Mechanism::RsaPkcsPss(p256), pubk, &digest, &s).unwrap();
    sess.verify(&Mechanism::Sha256RsaPkcsPss(p256), pubk, b"message", &s)
        .unwrap();
    for m in [
        Mechanism::Sha256RsaPkcsPss(p256),
        Mechanism::Sha384RsaPkcsPss(p384),
        Mechanism::Sha512RsaPkcsPss(p512),
    ] {
        let s = sess.sign(&m, privk, b"message").unwrap();
        sess.verify(&m, pubk, b"message", &s).unwrap();
        assert!(sess.verify(&m, pubk, b"other", &s).is_err());
    }
}

/// sLen is a number from the caller, not a buffer length: one that cannot
/// fit the modulus (sLen > emLen - hLen - 2) is CKR_MECHANISM_PARAM_INVALID
/// at C_SignInit/C_VerifyInit, never an allocation of sLen bytes at C_Sign.
#[test]
fn pss_salt_length_is_bounded() {
    let sess = user_session(init_token(7, "pss-salt"));
    let (pubk, privk) = rsa_pair(&sess, 2048);
    let pss = |h, mgf, salt: u64| PkcsPssParams {
        hash_alg: h,
        mgf,
        s_len: salt.into(),
    };
    let sha256 = |salt| pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, salt);
    let digest = sess.digest(&Mechanism::Sha256, b"message").unwrap();
    let param_invalid = |r: cryptoki::error::Result<()>| match r {
        Err(Error::Pkcs11(RvError::MechanismParamInvalid, _)) => {}
        r => panic!("expected CKR_MECHANISM_PARAM_INVALID, got {r:?}"),
    };
    // 2048-bit modulus, SHA-256: at most 256 - 32 - 2 = 222 bytes of salt.
    for salt in [1 << 40, u64::MAX, 223] {
        for m in [
            Mechanism::RsaPkcsPss(sha256(salt)),
            Mechanism::Sha256RsaPkcsPss(sha256(salt)),
        ] {
            param_invalid(sess.sign_init(&m, privk));
            param_invalid(sess.verify_init(&m, pubk));
        }
    }
    // The session is still usable, and salts that fit work: the hash length
    // (the usual choice), none, and the largest.
    for salt in [32, 0, 222] {
        for (m, input) in [
            (Mechanism::RsaPkcsPss(sha256(salt)), &digest[..]),
            (Mechanism::Sha256RsaPkcsPss(sha256(salt)), b"message"),
        ] {
            let sig = sess.sign(&m, privk, input).unwrap();
            sess.verify(&m, pubk, input, &sig).unwrap();
        }
    }
    // A signature made with one salt length does not verify with another.
    let sig = sess.sign(&Mechanism::RsaPkcsPss(sha256(32)), privk, &digest).unwrap();
    assert!(sess
        .verify(&Mechanism::RsaPkcsPss(sha256(20)), pubk, &digest, &sig)
        .is_err());
    // hashAlg and MGF must agree, and match the mechanism's own hash.
    let bad = [
        Mechanism::RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA384, 32)),
        Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48)),
        Mechanism::RsaPkcsPss(pss(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 20)),
        Mechanism::RsaPkcsPss(pss(MechanismType::AES_KEY_GEN, PkcsMgfType::MGF1_SHA256, 32)),
    ];
    for m in bad {
        param_invalid(sess.sign_init(&m, privk));
        param_invalid(sess.verify_init(&m, pubk));
    }
}

fn ec_pair(sess: &Session, oid: &[u8]) -> (ObjectHandle, ObjectHandle) {
    sess.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[Attribute::EcParams(oid.to_vec()), Attribute::Verify(true)],
        &[Attribute::Sign(true), Attribute::Extractable(true)],
    )
    .unwrap()
}

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

#[test]
fn ecdsa_p256_p384() {
    let sess = user_session(init_token(4, "ec"));
    for (oid, size) in [(P256, 32usize), (P384, 48)] {
        let (pubk, privk) = ec_pair(&sess, oid);
        let point = sess.get_attributes(pubk, &[AttributeType::EcPoint]).unwrap();
        let Attribute::EcPoint(point) = &point[0] else { panic!() };
        assert_eq!(point.len(), 2 + 1 + 2 * size);
        let digest = sess.digest(&Mechanism::Sha256, b"msg").unwrap();
        let sig = sess.sign(&Mechanism::Ecdsa, privk, &digest).unwrap();
        assert_eq!(sig.len(), 2 * size);
        sess.verify(&Mechanism::Ecdsa, pubk, &digest, &sig).unwrap();
        sess.verify(&Mechanism::EcdsaSha256, pubk, b"msg", &sig).unwrap();
        for m in [Mechanism::EcdsaSha256, Mechanism::EcdsaSha384] {
            let s = sess.sign(&m, privk, b"msg").unwrap();
            sess.verify(&m, pubk, b"msg", &s).unwrap();
            assert!(sess.verify(&m, pubk, b"msh", &s).is_err());
        }
    }
}

#[test]
fn wrap_and_unwrap() {
    let sess = user_session(init_token(5, "wrap"));
    let kek = aes_key(&sess, 32, false);
    let target = aes_key(&sess, 32, true);
    let mut iv = [3u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    let ct = sess.encrypt(&gcm, target, b"wrapped key test").unwrap();
    let tmpl = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Decrypt(true),
    ];
    for m in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
        let w = sess.wrap_key(&m, kek, target).unwrap();
        assert_eq!(w.len(), 40);
        let k2 = sess.unwrap_key(&m, kek, &w, &tmpl).unwrap();
        assert_eq!(sess.decrypt(&gcm, k2, &ct).unwrap(), b"wrapped key test");
        let a = sess
            .get_attributes(k2, &[AttributeType::Local, AttributeType::NeverExtractable])
            .unwrap();
        assert_eq!(a, vec![Attribute::Local(false), Attribute::NeverExtractable(false)]);
    }
    let (pubk, privk) = rsa_pair(&sess, 2048);
    let m = oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, b"");
    let w = sess.wrap_key(&m, pubk, target).unwrap();
    let k3 = sess.unwrap_key(&m, privk, &w, &tmpl).unwrap();
    assert_eq!(sess.decrypt(&gcm, k3, &ct).unwrap(), b"wrapped key test");

    // An EC private key travels as PKCS#8 under AES key wrap with padding.
    let (ec_pub, ec_priv) = ec_pair(&sess, P256);
    let w = sess.wrap_key(&Mechanism::AesKeyWrapPad, kek, ec_priv).unwrap();
    let ec2 = sess
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &w,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Sign(true),
            ],
        )
        .unwrap();
    let sig = sess.sign(&Mechanism::EcdsaSha256, ec2, b"m").unwrap();
    sess.verify(&Mechanism::EcdsaSha256, ec_pub, b"m", &sig).unwrap();

    // Rules: a non-extractable key can't be wrapped; neither can a
    // wrap-with-trusted key under an untrusted wrapping key.
    let locked = aes_key(&sess, 16, false);
    let e = sess.wrap_key(&Mechanism::AesKeyWrap, kek, locked).unwrap_err();
    assert!(format!("{e:?}").contains("KeyUnextractable"), "{e:?}");
    let wwt = sess
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(true),
                Attribute::WrapWithTrusted(true),
            ],
        )
        .unwrap();
    let e = sess.wrap_key(&Mechanism::AesKeyWrap, kek, wwt).unwrap_err();
    assert!(format!("{e:?}").contains("KeyNotWrappable"), "{e:?}");
    // Only the SO may set CKA_TRUSTED.
    let e = sess
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(16.into()), Attribute::Trusted(true)],
        )
        .unwrap_err();
    assert!(format!("{e:?}").contains("AttributeReadOnly"), "{e:?}");
    let _ = privk;
}

#[test]
fn attribute_rules() {
    let sess = user_session(init_token(6, "attrs"));
    let k = aes_key(&sess, 32, false);
    let e = sess.get_attributes(k, &[AttributeType::Value]).unwrap();
    assert!(e.is_empty(), "sensitive CKA_VALUE must not be returned: {e:?}");
    // Read-only attributes refuse changes; one-way ones only go one way.
    assert!(sess.update_attributes(k, &[Attribute::Local(false)]).is_err());
    assert!(sess.update_attributes(k, &[Attribute::Sensitive(false)]).is_err());
    assert!(sess.update_attributes(k, &[Attribute::Extractable(true)]).is_err());
    sess.update_attributes(k, &[Attribute::Label(b"renamed".to_vec())])
        .unwrap();
    assert_eq!(
        sess.find_objects(&[Attribute::Label(b"renamed".to_vec())]).unwrap(),
        vec![k]
    );
    // An extractable, non-sensitive key reveals its value.
    let open = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![5; 16]),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ])
        .unwrap();
    let v = sess
        .get_attributes(open, &[AttributeType::Value, AttributeType::ValueLen])
        .unwrap();
    assert_eq!(v, vec![Attribute::Value(vec![5; 16]), Attribute::ValueLen(16.into())]);
    // Copy may tighten but not loosen.
    let c = sess.copy_object(open, &[Attribute::Sensitive(true)]).unwrap();
    assert!(sess.get_attributes(c, &[AttributeType::Value]).unwrap().is_empty());
    assert!(sess.copy_object(c, &[Attribute::Sensitive(false)]).is_err());
}

#[test]
fn mechanism_list_is_exact() {
    let p = &env().pkcs11;
    let s = slot(7);
    let mut list: Vec<String> = p.get_mechanism_list(s).unwrap().iter().map(|m| m.to_string()).collect();
    list.sort();
    // cryptoki drops CKM_RSA_AES_KEY_WRAP (unknown to it); the raw test checks it.
    let mut expect = vec![
        "CKM_AES_GCM",
        "CKM_AES_KEY_GEN",
        "CKM_AES_KEY_WRAP",
        "CKM_AES_KEY_WRAP_PAD",
        "CKM_ECDSA",
        "CKM_ECDSA_SHA256",
        "CKM_ECDSA_SHA384",
        "CKM_EC_KEY_PAIR_GEN",
        "CKM_GENERIC_SECRET_KEY_GEN",
        "CKM_RSA_PKCS",
        "CKM_RSA_PKCS_KEY_PAIR_GEN",
        "CKM_RSA_PKCS_OAEP",
        "CKM_RSA_PKCS_PSS",
        "CKM_SHA256",
        "CKM_SHA256_HMAC",
        "CKM_SHA256_RSA_PKCS",
        "CKM_SHA256_RSA_PKCS_PSS",
        "CKM_SHA384",
        "CKM_SHA384_HMAC",
        "CKM_SHA384_RSA_PKCS",
        "CKM_SHA384_RSA_PKCS_PSS",
        "CKM_SHA512",
        "CKM_SHA512_HMAC",
        "CKM_SHA512_RSA_PKCS",
        "CKM_SHA512_RSA_PKCS_PSS",
    ];
    expect.sort();
    assert_eq!(list, expect);
    let info = p.get_mechanism_info(s, MechanismType::AES_GCM).unwrap();
    assert!(info.encrypt() && info.decrypt() && !info.sign());
    assert_eq!((info.min_key_size(), info.max_key_size()), (16, 32));
    let info = p.get_mechanism_info(s, MechanismType::RSA_PKCS_KEY_PAIR_GEN).unwrap();
    assert!(info.generate_key_pair());
    assert_eq!((info.min_key_size(), info.max_key_size()), (2048, 4096));
    assert!(p.get_mechanism_info(s, MechanismType::AES_CBC).is_err());
}
