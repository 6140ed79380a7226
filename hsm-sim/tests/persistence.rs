//! Token objects survive C_Finalize/C_Initialize, private ones need a
//! login, C_SetPIN keeps them, and no key material is stored in plaintext.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;

const SECRET: [u8; 32] = [
    0x3c, 0x81, 0x5e, 0x07, 0xa9, 0x11, 0xd4, 0x62, 0x9f, 0x20, 0x4b, 0xee, 0x73, 0x05, 0xc8, 0x1a, 0x66, 0xb2, 0x0d,
    0x94, 0x2f, 0xe1, 0x57, 0x38, 0xca, 0x7e, 0x13, 0xbd, 0x40, 0x89, 0xf6, 0x2c,
];

fn load() -> Pkcs11 {
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

fn key_template(id: &[u8], private: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(SECRET.to_vec()),
        Attribute::Token(true),
        Attribute::Private(private),
        Attribute::Sensitive(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Id(id.to_vec()),
    ]
}

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn objects_persist_sealed_under_the_pin() {
    let dir = temp_dir("persist");
    let token_dir = dir.join("tokens");
    std::env::set_var("HSM_SIM_CONF", write_conf(&dir, &token_dir, ""));

    let mut iv = [1u8; 12];
    let pt = b"persistent plaintext 32 bytes!!!";
    let ct;
    {
        let p = load();
        let s = p.get_all_slots().unwrap()[0];
        p.init_token(s, &pin(SO_PIN), "persist").unwrap();
        let sess = p.open_rw_session(s).unwrap();
        sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
        sess.init_pin(&pin(USER_PIN)).unwrap();
        sess.logout().unwrap();
        sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        let k = sess.create_object(&key_template(b"private", true)).unwrap();
        sess.create_object(&key_template(b"public", false)).unwrap();
        // A public key whose value may be read: it is sealed on disk all the same.
        let mut readable = key_template(b"public-readable", false);
        readable.retain(|a| !matches!(a, Attribute::Sensitive(_)));
        readable.extend([Attribute::Sensitive(false), Attribute::Extractable(true)]);
        sess.create_object(&readable).unwrap();
        sess.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Id(b"gen".to_vec()),
            ],
        )
        .unwrap();
        ct = sess
            .encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
                k,
                pt,
            )
            .unwrap();
        drop(sess);
        p.finalize().unwrap();
    }

    // Nothing on disk holds the key or a PIN, raw or hex-encoded.
    let mut all = Vec::new();
    files(&token_dir, &mut all);
    assert!(all.len() >= 4, "{all:?}");
    let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!bytes.windows(32).any(|w| w == SECRET), "{f:?} holds the raw key");
        assert!(!text.contains(&hex), "{f:?} holds the hex key");
        assert!(!text.contains(USER_PIN) && !text.contains(SO_PIN), "{f:?} holds a PIN");
    }

    {
        let p = load();
        let s = p.get_all_slots().unwrap()[0];
        assert_eq!(p.get_token_info(s).unwrap().label(), "persist");
        let sess = p.open_rw_session(s).unwrap();
        // Before login: the public object is visible, the private ones are not.
        assert_eq!(
            sess.find_objects(&[Attribute::Id(b"public".to_vec())]).unwrap().len(),
            1
        );
        assert!(sess
            .find_objects(&[Attribute::Id(b"private".to_vec())])
            .unwrap()
            .is_empty());
        // Its value is still sealed before login: there, but not revealed yet.
        let readable = sess
            .find_objects(&[Attribute::Id(b"public-readable".to_vec())])
            .unwrap()[0];
        let info = sess.get_attribute_info(readable, &[AttributeType::Value]).unwrap();
        assert!(
            matches!(info[..], [AttributeInfo::Sensitive]),
            "a sealed value before login is sensitive, not an attribute the key lacks: {info:?}"
        );
        sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        let k = sess.find_objects(&[Attribute::Id(b"private".to_vec())]).unwrap()[0];
        assert_eq!(sess.find_objects(&[Attribute::Id(b"gen".to_vec())]).unwrap().len(), 1);
        let readable = sess
            .find_objects(&[Attribute::Id(b"public-readable".to_vec())])
            .unwrap()[0];
        assert_eq!(
            sess.get_attributes(readable, &[AttributeType::Value]).unwrap(),
            [Attribute::Value(SECRET.to_vec())],
            "after login the value is unsealed"
        );
        let back = sess
            .decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
                k,
                &ct,
            )
            .unwrap();
        assert_eq!(back, pt);
        sess.set_pin(&pin(USER_PIN), &pin("changed-pin")).unwrap();
        drop(sess);
        p.finalize().unwrap();
    }

    {
        let p = load();
        let s = p.get_all_slots().unwrap()[0];
        let sess = p.open_rw_session(s).unwrap();
        assert!(sess.login(UserType::User, Some(&pin(USER_PIN))).is_err());
        sess.login(UserType::User, Some(&pin("changed-pin"))).unwrap();
        let k = sess.find_objects(&[Attribute::Id(b"private".to_vec())]).unwrap()[0];
        let back = sess
            .decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
                k,
                &ct,
            )
            .unwrap();
        assert_eq!(back, pt);
        drop(sess);
        p.finalize().unwrap();
    }
}
