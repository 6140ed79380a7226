//! Concurrent calls on one token: attribute changes are never lost,
//! concurrent wrong PINs cannot get past the lockout, and a session closed
//! during a call leaves nothing behind, and no read-only session opens
//! under an SO login, and no object is made indestructible and destroyed
//! at once.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

const MAX_PIN_ATTEMPTS: usize = 3;

/// The module with a lockout after 3 wrong PINs and a KDF slow enough for
/// logins to overlap, and its fault file.
fn module() -> &'static (Pkcs11, PathBuf) {
    static P: OnceLock<(Pkcs11, PathBuf)> = OnceLock::new();
    P.get_or_init(|| {
        let dir = temp_dir("concurrency");
        let conf = dir.join("hsm-sim.toml");
        let toml = format!(
            "token_dir = {:?}\nslots = 8\npbkdf2_iterations = 20000\nmax_pin_attempts = {MAX_PIN_ATTEMPTS}\n",
            dir.join("tokens").display().to_string()
        );
        std::fs::write(&conf, toml).unwrap();
        std::env::set_var("HSM_SIM_CONF", &conf);
        let p = Pkcs11::new(module_path()).unwrap();
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        (p, dir.join("tokens").join("faults.toml"))
    })
}

fn pkcs11() -> &'static Pkcs11 {
    &module().0
}

/// C_CloseSession through the raw ABI, for a session another thread owns
/// (not `functions()`: that would initialize the module a second time).
fn close_raw(h: cryptoki_sys::CK_SESSION_HANDLE) -> cryptoki_sys::CK_RV {
    static LIB: OnceLock<cryptoki_sys::Pkcs11> = OnceLock::new();
    // SAFETY: loading our own module, kept loaded for the whole process.
    let lib = LIB.get_or_init(|| unsafe { cryptoki_sys::Pkcs11::new(module_path()) }.unwrap());
    let mut list: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the module returns its static function list.
    // A stale handle is an error, not undefined behaviour.
    unsafe {
        assert_eq!(lib.C_GetFunctionList(&mut list), cryptoki_sys::CKR_OK);
        (*list).C_CloseSession.unwrap()(h)
    }
}

fn init(n: usize) -> Slot {
    let p = pkcs11();
    let s = p.get_all_slots().unwrap()[n];
    p.init_token(s, &pin(SO_PIN), "concurrency").unwrap();
    let sess = p.open_rw_session(s).unwrap();
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    sess.init_pin(&pin(USER_PIN)).unwrap();
    sess.logout().unwrap();
    s
}

/// Session `a` sets `change` on object `k` in another thread while this
/// one runs `here`, both released at once; gives back `a`, its result and
/// what `here` returned.
fn at_once<T>(
    a: Session,
    k: ObjectHandle,
    change: Attribute,
    here: impl FnOnce() -> T,
) -> (Session, cryptoki::error::Result<()>, T) {
    let barrier = Arc::new(Barrier::new(2));
    let t = std::thread::spawn({
        let barrier = barrier.clone();
        move || {
            barrier.wait();
            let r = a.update_attributes(k, &[change]);
            (a, r)
        }
    });
    barrier.wait();
    let here = here();
    let (a, r) = t.join().unwrap();
    (a, r, here)
}

/// One thread makes a key sensitive while another renames it: both return
/// CKR_OK, so both changes must stick (CKA_SENSITIVE is one-way).
#[test]
fn concurrent_attribute_changes_are_never_lost() {
    let p = pkcs11();
    let s = init(0);
    let mut a = p.open_rw_session(s).unwrap();
    a.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let b = p.open_rw_session(s).unwrap();
    let mut lost = 0;
    for i in 0..200u32 {
        let k = b
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(vec![0x41; 32]),
                Attribute::Token(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ])
            .unwrap();
        let label = i.to_string().into_bytes();
        let (back, r, ()) = at_once(a, k, Attribute::Sensitive(true), || {
            b.update_attributes(k, &[Attribute::Label(label.clone())]).unwrap()
        });
        a = back;
        r.unwrap();
        let got = b
            .get_attributes(k, &[AttributeType::Sensitive, AttributeType::Label])
            .unwrap();
        if got != vec![Attribute::Sensitive(true), Attribute::Label(label)] {
            lost += 1;
        }
        b.destroy_object(k).unwrap();
    }
    assert_eq!(lost, 0, "runs that lost an acknowledged change");
}

/// Wrong PINs tried at once by many sessions: at most MAX_PIN_ATTEMPTS of
/// them may be checked, the rest find the PIN locked.
#[test]
fn concurrent_wrong_pins_respect_the_lockout() {
    let p = pkcs11();
    let s = init(1);
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let sess = p.open_ro_session(s).unwrap();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                match sess.login(UserType::User, Some(&pin(&format!("wrong{i:03}")))) {
                    Err(Error::Pkcs11(rv, _)) => rv,
                    other => panic!("a wrong PIN gave {other:?}"),
                }
            })
        })
        .collect();
    let rvs: Vec<RvError> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let incorrect = rvs.iter().filter(|rv| **rv == RvError::PinIncorrect).count();
    let locked = rvs.iter().filter(|rv| **rv == RvError::PinLocked).count();
    assert!(
        incorrect <= MAX_PIN_ATTEMPTS,
        "{incorrect} wrong PINs were checked: {rvs:?}"
    );
    assert_eq!(incorrect + locked, n, "{rvs:?}");
    // Locked for the right PIN too.
    let sess = p.open_ro_session(s).unwrap();
    match sess.login(UserType::User, Some(&pin(USER_PIN))) {
        Err(Error::Pkcs11(RvError::PinLocked, _)) => {}
        other => panic!("the right PIN after the lockout gave {other:?}"),
    }
}

/// The limit counts consecutive failures: a right PIN forgives the earlier
/// wrong ones.
#[test]
fn a_right_pin_resets_the_count() {
    let p = pkcs11();
    let s = init(2);
    let sess = p.open_ro_session(s).unwrap();
    for _ in 0..2 {
        for _ in 0..MAX_PIN_ATTEMPTS - 1 {
            match sess.login(UserType::User, Some(&pin("wrong-pin"))) {
                Err(Error::Pkcs11(RvError::PinIncorrect, _)) => {}
                other => panic!("a wrong PIN gave {other:?}"),
            }
        }
        sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
        sess.logout().unwrap();
    }
    assert!(!p.get_token_info(s).unwrap().user_pin_count_low());
}

/// A PIN no PIN can be (empty, shorter than 4 or longer than 255 bytes) is CKR_PIN_INCORRECT
/// without being counted, and a NULL one (a PIN pad, which the token has not) CKR_ARGUMENTS_BAD:
/// a client passing a wrong length must not lock the user out.
#[test]
fn a_pin_of_impossible_length_is_not_counted() {
    let p = pkcs11();
    let s = init(7);
    let sess = p.open_ro_session(s).unwrap();
    let long = "x".repeat(256);
    for _ in 0..MAX_PIN_ATTEMPTS + 1 {
        for bad in [Some("abc"), Some(""), Some(long.as_str()), None] {
            let expected = if bad.is_some() {
                RvError::PinIncorrect
            } else {
                RvError::ArgumentsBad
            };
            match sess.login(UserType::User, bad.map(pin).as_ref()) {
                Err(Error::Pkcs11(rv, _)) if rv == expected => {}
                other => panic!("a PIN of {} bytes gave {other:?}", bad.map_or(0, str::len)),
            }
        }
    }
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
}

/// C_CreateObject slowed down (fault latency, before the session lock) while
/// its session closes: it must fail rather than leave an object the closed
/// session owns.
#[test]
fn an_object_created_while_its_session_closes_does_not_outlive_it() {
    let (p, faults) = module();
    let s = init(3);
    let other = p.open_rw_session(s).unwrap();
    std::fs::write(
        faults,
        "[slot.3]\nlatency_ms = 3000\nfunctions = [\"C_CreateObject\"]\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(120));
    let doomed = p.open_rw_session(s).unwrap();
    let h = doomed.handle();
    let label = b"orphan".to_vec();
    let t = std::thread::spawn({
        let label = label.clone();
        move || {
            doomed.create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(false),
                Attribute::Private(false),
                Attribute::Label(label),
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(close_raw(h), cryptoki_sys::CKR_OK);
    let created = t.join().unwrap();
    std::fs::write(faults, "").unwrap();
    assert!(
        matches!(created, Err(Error::Pkcs11(RvError::SessionHandleInvalid, _))),
        "{created:?}"
    );
    assert_eq!(other.find_objects(&[Attribute::Label(label)]).unwrap(), vec![]);
}

/// The last session closes while C_Login is deriving the PIN's key: the
/// token must not end up logged in with no session to log it out. Closes
/// land across the whole login, so some fall inside the derivation.
#[test]
fn a_login_racing_the_last_close_leaves_the_token_logged_out() {
    let p = pkcs11();
    let s = init(4);
    let sess = p.open_ro_session(s).unwrap();
    let start = Instant::now();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let login_time = start.elapsed();
    drop(sess);
    let runs = 40u32;
    for i in 0..runs {
        let sess = p.open_ro_session(s).unwrap();
        let h = sess.handle();
        let t = std::thread::spawn(move || {
            let r = sess.login(UserType::User, Some(&pin(USER_PIN)));
            std::mem::forget(sess); // closed below; a second close would log an error
            r
        });
        std::thread::sleep(login_time * i / runs);
        assert_eq!(close_raw(h), cryptoki_sys::CKR_OK);
        match t.join().unwrap() {
            Ok(()) | Err(Error::Pkcs11(RvError::SessionHandleInvalid, _)) => {}
            other => panic!("login gave {other:?}"),
        }
        let probe = p.open_ro_session(s).unwrap();
        let state = probe.get_session_info().unwrap().session_state();
        assert_eq!(state, SessionState::RoPublic, "run {i}: logged in with no session");
    }
}

/// A read-only session opens while C_Login(SO) is deriving the PIN's key.
/// PKCS#11 allows no read-only session while the SO is logged in: either
/// the open is refused (CKR_SESSION_READ_WRITE_SO_EXISTS) or the login is
/// (CKR_SESSION_READ_ONLY_EXISTS), never neither. Opens land across the
/// whole login, so some fall inside the derivation.
#[test]
fn an_so_login_and_a_read_only_open_never_both_succeed() {
    let p = pkcs11();
    let s = init(5);
    let so = p.open_rw_session(s).unwrap();
    let start = Instant::now();
    so.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    let login_time = start.elapsed();
    so.logout().unwrap();
    let runs = 40u32;
    let mut so = Some(so);
    for i in 0..runs {
        let session = so.take().unwrap();
        let t = std::thread::spawn(move || {
            let r = session.login(UserType::So, Some(&pin(SO_PIN)));
            (session, r)
        });
        std::thread::sleep(login_time * i / runs);
        let ro = p.open_ro_session(s);
        let (session, login) = t.join().unwrap();
        let so = so.insert(session);
        match (&login, &ro) {
            (Ok(()), Err(Error::Pkcs11(RvError::SessionReadWriteSoExists, _)))
            | (Err(Error::Pkcs11(RvError::SessionReadOnlyExists, _)), Ok(_)) => {}
            _ => panic!("run {i}: SO login {login:?} and read-only open {:?}", ro.map(|_| ())),
        }
        drop(ro);
        if login.is_ok() {
            so.logout().unwrap();
        }
    }
}

/// One session makes an object indestructible while another destroys it:
/// one of the two must fail, never both succeed (the check of
/// CKA_DESTROYABLE and the removal are one step).
#[test]
fn an_object_made_indestructible_is_never_destroyed_as_well() {
    let p = pkcs11();
    let s = init(6);
    let mut a = p.open_rw_session(s).unwrap();
    let b = p.open_rw_session(s).unwrap();
    let mut both = 0;
    for _ in 0..10_000 {
        let k = b
            .create_object(&[Attribute::Class(ObjectClass::DATA), Attribute::Token(false)])
            .unwrap();
        let (back, set, destroyed) = at_once(a, k, Attribute::Destroyable(false), || b.destroy_object(k));
        a = back;
        match (&set, &destroyed) {
            (Ok(()), Ok(())) => both += 1,
            (Ok(()), Err(Error::Pkcs11(RvError::ActionProhibited, _)))
            | (Err(Error::Pkcs11(RvError::ObjectHandleInvalid, _)), Ok(())) => {}
            _ => panic!("set {set:?}, destroy {destroyed:?}"),
        }
    }
    assert_eq!(both, 0, "runs where the object was made indestructible and destroyed");
}
