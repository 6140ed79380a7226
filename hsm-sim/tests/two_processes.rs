//! Two processes on one token directory (kms and pkcs11-tool, say): a PIN
//! change or a wrong PIN counted by one is in force in the other, neither
//! writes back what the other has since changed, and token objects one
//! creates or destroys are found, or no longer found, by the other.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use std::process::{Child, Command};

const NEW_PIN: &str = "changed-elsewhere";
/// hsm-sim's default `max_pin_attempts`.
const MAX_ATTEMPTS: usize = 10;

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// This test binary re-executed as another process on the same token
/// directory, doing `role` on `slot` (see `child`).
fn other_process(role: &str, slot: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env("HSM_SIM_CONF", env().dir.join("hsm-sim.toml"))
        .env("HSM_SIM_OTHER_PROCESS", format!("{role} {slot}"))
        .spawn()
        .expect("start the other process")
}

fn wait(mut child: Child, role: &str) {
    let status = child.wait().unwrap();
    assert!(status.success(), "the other process failed at {role}: {status}");
}

/// The other process's part: a no-op unless HSM_SIM_OTHER_PROCESS is set.
/// "set-pin" changes the user PIN to NEW_PIN; "login PIN" logs in with PIN;
/// "wrong N" makes N logins with a wrong PIN, each refused as incorrect;
/// "replace-key" destroys the token's shared keys and makes one with CKA_ID 2.
#[test]
fn child() {
    let Ok(task) = std::env::var("HSM_SIM_OTHER_PROCESS") else {
        return;
    };
    let words: Vec<&str> = task.split(' ').collect();
    let slot_index: usize = words.last().unwrap().parse().unwrap();
    let p = Pkcs11::new(module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[slot_index];
    let s = p.open_rw_session(slot).unwrap();
    match words[..] {
        ["set-pin", _] => {
            s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
            s.set_pin(&pin(USER_PIN), &pin(NEW_PIN)).unwrap();
        }
        ["login", with, _] => s.login(UserType::User, Some(&pin(with))).unwrap(),
        ["wrong", n, _] => {
            for _ in 0..n.parse::<usize>().unwrap() {
                assert_eq!(
                    rv(s.login(UserType::User, Some(&pin("wrong-pin")))),
                    RvError::PinIncorrect
                );
            }
        }
        ["replace-key", _] => {
            s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
            for h in shared_keys(&s) {
                s.destroy_object(h).unwrap();
            }
            make_shared_key(&s, 2);
        }
        _ => panic!("unknown role {task:?}"),
    }
}

#[test]
fn a_pin_changed_by_another_process_is_the_one_in_force_here() {
    let p = &env().pkcs11;
    let slot = init_token(0, "pin-elsewhere");
    let sess = p.open_rw_session(slot).unwrap();
    wait(other_process("set-pin", 0), "set-pin");
    assert_eq!(
        rv(sess.login(UserType::User, Some(&pin(USER_PIN)))),
        RvError::PinIncorrect,
        "the PIN this process read at start no longer opens the token"
    );
    sess.login(UserType::User, Some(&pin(NEW_PIN))).unwrap();
    sess.logout().unwrap();
    // Nothing this process saved since (two counted attempts) undid the change.
    wait(other_process(&format!("login {NEW_PIN}"), 0), "login with the new PIN");
}

#[test]
fn wrong_pins_from_several_processes_add_up_to_the_lockout() {
    let p = &env().pkcs11;
    let slot = init_token(1, "lockout-elsewhere");
    let sess = p.open_rw_session(slot).unwrap();
    // Two processes at once, then this one: 4 + 4 + 2 wrong PINs.
    let others = [other_process("wrong 4", 1), other_process("wrong 4", 1)];
    for other in others {
        wait(other, "wrong 4");
    }
    for _ in 0..MAX_ATTEMPTS - 8 {
        assert_eq!(
            rv(sess.login(UserType::User, Some(&pin("wrong-here")))),
            RvError::PinIncorrect
        );
    }
    assert_eq!(
        rv(sess.login(UserType::User, Some(&pin(USER_PIN)))),
        RvError::PinLocked,
        "ten wrong PINs in all lock the PIN, whichever process counted them"
    );
    let flags = p.get_token_info(slot).unwrap();
    assert!(flags.user_pin_locked(), "C_GetTokenInfo shows the lockout");
}

const SHARED: &str = "shared-key";

/// An AES token key labelled SHARED, with CKA_ID `id`.
fn make_shared_key(s: &Session, id: u8) -> ObjectHandle {
    let template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::ValueLen(32.into()),
        Attribute::Label(SHARED.into()),
        Attribute::Id(vec![id]),
    ];
    s.generate_key(&Mechanism::AesKeyGen, &template).unwrap()
}

fn shared_keys(s: &Session) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Label(SHARED.into())]).unwrap()
}

#[test]
fn a_key_replaced_by_another_process_is_found_replaced_here() {
    let p = &env().pkcs11;
    let slot = init_token(2, "objects-elsewhere");
    let sess = p.open_rw_session(slot).unwrap();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let mine = make_shared_key(&sess, 1);
    assert_eq!(shared_keys(&sess), vec![mine]);
    // Still logged in here while the other process destroys it and makes another.
    wait(other_process("replace-key", 2), "replace-key");
    let found = shared_keys(&sess);
    assert_eq!(found.len(), 1, "the replacement, and only it: {found:?}");
    assert_ne!(found[0], mine);
    let id = sess.get_attributes(found[0], &[AttributeType::Id]).unwrap();
    assert_eq!(id, vec![Attribute::Id(vec![2])]);
    assert_eq!(
        rv(sess.get_attributes(mine, &[AttributeType::Id])),
        RvError::ObjectHandleInvalid,
        "the destroyed key is gone here too"
    );
}
