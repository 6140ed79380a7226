//! The subset the kms service relies on, end to end through cryptoki.
mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;

fn aes_template(id: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

#[test]
fn find_slot_login_generate_encrypt_decrypt() {
    let p = &env().pkcs11;
    init_token(0, "kms-main");
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label() == "kms-main")
        .expect("slot by label");
    let info = p.get_token_info(slot).unwrap();
    assert!(info.token_initialized() && info.user_pin_initialized());

    let sess = user_session(slot);
    let id = b"master-key-1";
    assert!(sess.find_objects(&[Attribute::Id(id.to_vec())]).unwrap().is_empty());
    let key = sess
        .generate_key(&Mechanism::AesKeyGen, &aes_template(id, "master"))
        .unwrap();

    let found = sess
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Id(id.to_vec()),
            Attribute::Label(b"master".to_vec()),
        ])
        .unwrap();
    assert_eq!(found, vec![key]);

    let attrs = sess
        .get_attributes(
            key,
            &[
                AttributeType::Local,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::ValueLen,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Local(true)));
    assert!(attrs.contains(&Attribute::NeverExtractable(true)));
    assert!(attrs.contains(&Attribute::AlwaysSensitive(true)));
    assert!(attrs.contains(&Attribute::ValueLen(32.into())));

    let mut iv = [7u8; 12];
    let aad = b"context";
    let pt = [0x42u8; 32];
    let ct = sess
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            key,
            &pt,
        )
        .unwrap();
    assert_eq!(ct.len(), 48);
    let back = sess
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            key,
            &ct,
        )
        .unwrap();
    assert_eq!(back, pt);

    // A flipped tag bit is CKR_ENCRYPTED_DATA_INVALID.
    let mut bad = ct.clone();
    bad[47] ^= 1;
    let err = sess
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            key,
            &bad,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Pkcs11(RvError::EncryptedDataInvalid, _)), "{err}");

    let r = sess.generate_random_vec(32).unwrap();
    assert_eq!(r.len(), 32);

    // Private objects vanish on logout and come back after login, under a new
    // handle (the old one stays invalid, as C_Logout requires).
    sess.logout().unwrap();
    assert!(sess.find_objects(&[Attribute::Id(id.to_vec())]).unwrap().is_empty());
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let found = sess.find_objects(&[Attribute::Id(id.to_vec())]).unwrap();
    assert_eq!(found.len(), 1);
    assert_ne!(found[0], key);
    let key = found[0];

    sess.destroy_object(key).unwrap();
    assert!(sess.find_objects(&[Attribute::Id(id.to_vec())]).unwrap().is_empty());
}

#[test]
fn many_threads_one_session_each() {
    let s = init_token(1, "kms-threads");
    // The login lasts while this session is open (closing the last one logs out).
    let sess = user_session(s);
    let key = sess
        .generate_key(&Mechanism::AesKeyGen, &aes_template(b"t", "t"))
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            scope.spawn(move || {
                let sess = env().pkcs11.open_rw_session(s).unwrap();
                for i in 0..200u32 {
                    let mut iv = [t; 12];
                    iv[..4].copy_from_slice(&i.to_be_bytes());
                    let aad = [t, 1, 2];
                    let pt = [t ^ (i as u8); 32];
                    let m = Mechanism::AesGcm(GcmParams::new(&mut iv, &aad, 128.into()).unwrap());
                    let ct = sess.encrypt(&m, key, &pt).unwrap();
                    let back = sess.decrypt(&m, key, &ct).unwrap();
                    assert_eq!(back, pt);
                }
            });
        }
    });
}

#[test]
fn wrong_pin_and_lockout() {
    let p = &env().pkcs11;
    let s = init_token(2, "lockout");
    let sess = p.open_rw_session(s).unwrap();
    for _ in 0..9 {
        let e = sess.login(UserType::User, Some(&pin("00000000"))).unwrap_err();
        assert!(matches!(e, Error::Pkcs11(RvError::PinIncorrect, _)), "{e}");
    }
    assert!(p.get_token_info(s).unwrap().user_pin_final_try());
    let e = sess.login(UserType::User, Some(&pin("00000000"))).unwrap_err();
    assert!(matches!(e, Error::Pkcs11(RvError::PinIncorrect, _)), "{e}");
    let e = sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap_err();
    assert!(matches!(e, Error::Pkcs11(RvError::PinLocked, _)), "{e}");
    assert!(p.get_token_info(s).unwrap().user_pin_locked());
    // The SO resets the user PIN.
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    sess.init_pin(&pin("newpin12")).unwrap();
    sess.logout().unwrap();
    sess.login(UserType::User, Some(&pin("newpin12"))).unwrap();
    let e = sess.login(UserType::User, Some(&pin("newpin12"))).unwrap_err();
    assert!(matches!(e, Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)), "{e}");
    sess.set_pin(&pin("newpin12"), &pin(USER_PIN)).unwrap();
}
