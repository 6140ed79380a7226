//! A token whose metadata cannot be read is unusable, not blank: C_InitToken
//! must not wipe its objects without the SO PIN, and repairing the file
//! brings everything back.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use std::path::{Path, PathBuf};

fn load() -> Pkcs11 {
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn object_files(slot_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(slot_dir.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// With the module loaded on a damaged token: no token info, no session,
/// and C_InitToken (even with the right SO PIN) leaves every file alone.
fn assert_unusable(slot_dir: &Path, what: &str) {
    let before = object_files(slot_dir);
    let p = load();
    let s = p.get_all_slots().unwrap()[0];
    assert_eq!(rv(p.get_token_info(s)), RvError::TokenNotRecognized, "{what}");
    assert_eq!(rv(p.open_rw_session(s)), RvError::TokenNotRecognized, "{what}");
    assert_eq!(
        rv(p.init_token(s, &pin("attacker-pin"), "new")),
        RvError::TokenNotRecognized,
        "{what}"
    );
    assert_eq!(
        rv(p.init_token(s, &pin(SO_PIN), "new")),
        RvError::TokenNotRecognized,
        "{what}"
    );
    p.finalize().unwrap();
    assert_eq!(object_files(slot_dir), before, "{what}: object files changed");
    assert!(!before.is_empty());
}

#[test]
fn a_damaged_token_is_never_wiped() {
    let dir = temp_dir("damaged");
    let token_dir = dir.join("tokens");
    std::env::set_var("HSM_SIM_CONF", write_conf(&dir, &token_dir, ""));
    let slot_dir = token_dir.join("slot-0");
    let meta = slot_dir.join("token.json");
    {
        let p = load();
        let s = p.get_all_slots().unwrap()[0];
        p.init_token(s, &pin(SO_PIN), "damaged").unwrap();
        let sess = p.open_rw_session(s).unwrap();
        sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
        sess.init_pin(&pin(USER_PIN)).unwrap();
        sess.logout().unwrap();
        sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        sess.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![7; 32]),
            Attribute::Token(true),
            Attribute::Id(b"root".to_vec()),
        ])
        .unwrap();
        drop(sess);
        p.finalize().unwrap();
    }
    let good = std::fs::read(&meta).unwrap();

    // Truncated, unreadable (a directory: EISDIR) and missing metadata.
    std::fs::write(&meta, b"{").unwrap();
    assert_unusable(&slot_dir, "truncated token.json");
    assert_eq!(std::fs::read(&meta).unwrap(), b"{", "token.json was rewritten");
    std::fs::remove_file(&meta).unwrap();
    std::fs::create_dir(&meta).unwrap();
    assert_unusable(&slot_dir, "unreadable token.json");
    std::fs::remove_dir(&meta).unwrap();
    assert_unusable(&slot_dir, "missing token.json");
    assert!(!meta.exists(), "token.json was recreated");

    // Repaired: the token and its key are back.
    std::fs::write(&meta, &good).unwrap();
    let p = load();
    let s = p.get_all_slots().unwrap()[0];
    assert_eq!(p.get_token_info(s).unwrap().label(), "damaged");
    let sess = p.open_rw_session(s).unwrap();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    assert_eq!(sess.find_objects(&[Attribute::Id(b"root".to_vec())]).unwrap().len(), 1);
    drop(sess);
    p.finalize().unwrap();
}
