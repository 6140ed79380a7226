//! Key material cannot be confirmed by guessing: C_SetAttributeValue and
//! C_FindObjectsInit never compare it with a caller's value.
mod common;

use common::*;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;

const VALUE: [u8; 32] = [0x41; 32];
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn keys(sess: &Session) -> [cryptoki::object::ObjectHandle; 2] {
    let aes = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(VALUE.to_vec()),
            Attribute::Label(b"guess".to_vec()),
        ])
        .unwrap();
    let ec = sess
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::Value(VALUE.to_vec()),
            Attribute::Label(b"guess".to_vec()),
        ])
        .unwrap();
    [aes, ec]
}

#[test]
fn setting_key_material_never_compares_it() {
    let sess = user_session(init_token(0, "secrecy-set"));
    for k in keys(&sess) {
        for guess in [[0x42; 32], VALUE] {
            let e = sess
                .update_attributes(k, &[Attribute::Value(guess.to_vec())])
                .unwrap_err();
            assert!(format!("{e:?}").contains("AttributeReadOnly"), "{e:?}");
        }
    }
}

#[test]
fn find_never_matches_on_key_material() {
    let sess = user_session(init_token(1, "secrecy-find"));
    let [aes, ec] = keys(&sess);
    let label = Attribute::Label(b"guess".to_vec());
    let mut both = sess.find_objects(std::slice::from_ref(&label)).unwrap();
    both.sort_by_key(|h| h.handle());
    assert_eq!(both, vec![aes, ec]);
    for guess in [[0x42; 32], VALUE] {
        let found = sess
            .find_objects(&[label.clone(), Attribute::Value(guess.to_vec())])
            .unwrap();
        assert!(found.is_empty(), "a guess of CKA_VALUE matched: {found:?}");
    }
    // CKA_VALUE of a data object is no key material: still searchable.
    let data = sess
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Value(VALUE.to_vec()),
            label.clone(),
        ])
        .unwrap();
    assert_eq!(
        sess.find_objects(&[label, Attribute::Value(VALUE.to_vec())]).unwrap(),
        vec![data]
    );
}
