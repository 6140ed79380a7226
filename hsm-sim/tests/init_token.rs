//! C_InitToken replaces a token in one step: a crash before the new
//! token.json is saved leaves every object of the old token; once it is
//! saved, none is left. (A save that fails puts the objects back the same
//! way, `Store::restore_objects`; no test makes only that save fail.)
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use std::path::Path;

fn load() -> Pkcs11 {
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

fn set_up_token(p: &Pkcs11, s: Slot, label: &str) {
    p.init_token(s, &pin(SO_PIN), label).unwrap();
    let sess = p.open_rw_session(s).unwrap();
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    sess.init_pin(&pin(USER_PIN)).unwrap();
}

/// The token objects the user sees.
fn objects(p: &Pkcs11, s: Slot) -> usize {
    let sess = p.open_rw_session(s).unwrap();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    sess.find_objects(&[Attribute::Token(true)]).unwrap().len()
}

fn set_aside(slot_dir: &Path) -> Vec<String> {
    std::fs::read_dir(slot_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".objects-of-"))
        .collect()
}

#[test]
fn init_token_replaces_the_token_in_one_step() {
    let dir = temp_dir("init-token");
    let token_dir = dir.join("tokens");
    std::env::set_var("HSM_SIM_CONF", write_conf(&dir, &token_dir, ""));
    let slot_dir = token_dir.join("slot-0");
    let mut p = load();
    let s = p.get_all_slots().unwrap()[0];
    set_up_token(&p, s, "old");
    {
        let sess = p.open_rw_session(s).unwrap();
        sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        for _ in 0..3 {
            sess.create_object(&[Attribute::Class(ObjectClass::DATA), Attribute::Token(true)])
                .unwrap();
        }
    }

    // A crash after the objects were set aside, before the new token.json
    // was saved: the next C_Initialize puts them back.
    p.finalize().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(slot_dir.join("token.json")).unwrap()).unwrap();
    let serial = meta["serial"].as_str().unwrap();
    std::fs::rename(slot_dir.join("objects"), slot_dir.join(format!(".objects-of-{serial}"))).unwrap();
    p = load();
    assert_eq!(objects(&p, s), 3, "objects set aside by the current token are put back");

    // A crash after the new token.json was saved: what the replaced token
    // set aside is deleted at the next open.
    p.finalize().unwrap();
    let replaced = slot_dir.join(".objects-of-0011223344556677");
    std::fs::create_dir(&replaced).unwrap();
    std::fs::write(replaced.join("00.json"), b"{}").unwrap();
    p = load();
    assert!(set_aside(&slot_dir).is_empty(), "{:?}", set_aside(&slot_dir));
    assert_eq!(objects(&p, s), 3);

    // A C_InitToken that completes leaves no object and nothing set aside.
    set_up_token(&p, s, "new");
    assert_eq!(objects(&p, s), 0);
    assert!(set_aside(&slot_dir).is_empty(), "{:?}", set_aside(&slot_dir));
}
