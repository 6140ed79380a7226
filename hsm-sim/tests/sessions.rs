//! Login state across sessions: closing the last session logs out, atomically
//! with respect to other threads opening sessions; C_Logout destroys private
//! session objects.
mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn data_object(label: &[u8], token: bool, private: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Private(private),
        Attribute::Label(label.to_vec()),
        Attribute::Value(b"payload".to_vec()),
    ]
}

/// Tokens the stress test cycles sessions on (two threads each).
const STRESS_SLOTS: usize = 4;
/// Sessions kept open on another token to slow every session count down.
const IDLE_SESSIONS: usize = 4000;
/// How long the stress test runs when nothing goes wrong.
const STRESS_TIME: Duration = Duration::from_secs(5);

fn rv(e: Error) -> RvError {
    match e {
        Error::Pkcs11(rv, _) => rv,
        e => panic!("not a PKCS#11 error: {e}"),
    }
}

/// Threads keep opening a session, logging in only when the token is not
/// logged in already (as the kms server does), using a private object and
/// closing the session, so the session count keeps dropping to zero. A
/// session that found the token logged in must keep seeing its private
/// objects until it closes: the logout of "close the last session" must not
/// land after another session was opened.
#[test]
fn closing_the_last_session_never_logs_out_a_newer_one() {
    let p = &env().pkcs11;
    let label = b"root-key";
    let tokens: Vec<_> = (0..STRESS_SLOTS)
        .map(|n| {
            let s = init_token(n, "close-race");
            let sess = user_session(s);
            sess.create_object(&data_object(label, true, true)).unwrap();
            // Closing the only session logs the token out.
            s
        })
        .collect();
    // Idle sessions on another token make every session count slow, so
    // openers pile up behind a closing thread's count and run the moment it
    // ends: right inside the window between "no sessions left" and the logout.
    let other = init_token(15, "idle");
    let idle: Vec<_> = (0..IDLE_SESSIONS).map(|_| p.open_ro_session(other).unwrap()).collect();
    let lost = AtomicUsize::new(0);
    let logins = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for &s in &tokens {
            for _ in 0..2 {
                let (lost, logins, t0) = (&lost, &logins, &t0);
                scope.spawn(move || {
                    while t0.elapsed() < STRESS_TIME && lost.load(Ordering::Relaxed) == 0 {
                        let sess = p.open_rw_session(s).unwrap();
                        if sess.get_session_info().unwrap().session_state() != SessionState::RwUser {
                            match sess.login(UserType::User, Some(&pin(USER_PIN))) {
                                Ok(()) => {
                                    logins.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => assert_eq!(rv(e), RvError::UserAlreadyLoggedIn),
                            }
                        }
                        // From here on this session relies on the login; a logout
                        // still on its way has landed after the pause.
                        std::thread::sleep(Duration::from_micros(200));
                        // One object (each login loads it under a new handle).
                        let visible = sess.find_objects(&[Attribute::Label(label.to_vec())]).unwrap().len() == 1;
                        let state = sess.get_session_info().unwrap().session_state();
                        if !visible || state != SessionState::RwUser {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(sess);
                    }
                });
            }
        }
    });
    drop(idle);
    let lost = lost.into_inner();
    let logins = logins.into_inner();
    assert_eq!(
        lost, 0,
        "a session lost its login to a concurrent close ({logins} logins)"
    );
    assert!(logins > STRESS_SLOTS, "the session count never dropped to zero");
    // The last close logged out: a new session starts public.
    for &s in &tokens {
        let sess = p.open_rw_session(s).unwrap();
        assert_eq!(sess.get_session_info().unwrap().session_state(), SessionState::RwPublic);
        assert!(sess
            .find_objects(&[Attribute::Label(label.to_vec())])
            .unwrap()
            .is_empty());
    }
}

/// The same rule, sequentially: closing a session while another one is open
/// keeps the login; closing the last one logs out, and the next session
/// opened starts public.
#[test]
fn only_the_last_close_logs_out() {
    let p = &env().pkcs11;
    let s = init_token(4, "last-close");
    let first = user_session(s);
    let key = first.create_object(&data_object(b"k", true, true)).unwrap();
    let ro = p.open_ro_session(s).unwrap();
    let second = p.open_rw_session(s).unwrap();
    drop(first);
    drop(ro);
    assert_eq!(second.get_session_info().unwrap().session_state(), SessionState::RwUser);
    assert_eq!(
        second.find_objects(&[Attribute::Label(b"k".to_vec())]).unwrap(),
        vec![key]
    );
    drop(second);
    let third = p.open_ro_session(s).unwrap();
    assert_eq!(
        third.get_session_info().unwrap().session_state(),
        SessionState::RoPublic
    );
    assert!(third
        .find_objects(&[Attribute::Label(b"k".to_vec())])
        .unwrap()
        .is_empty());
}

/// C_Logout destroys the private session objects of every session of the
/// application; their handles stay invalid after the next login. Public
/// session objects and private token objects are kept, the latter under new
/// handles: v2.40 C_Logout, handles to private objects "remain invalid" even
/// after a new login.
#[test]
fn logout_destroys_private_session_objects() {
    let p = &env().pkcs11;
    let s = init_token(5, "logout");
    let sess = user_session(s);
    let other = p.open_ro_session(s).unwrap();
    let private = sess.create_object(&data_object(b"private", false, true)).unwrap();
    let other_private = other
        .create_object(&data_object(b"other-private", false, true))
        .unwrap();
    let public = sess.create_object(&data_object(b"public", false, false)).unwrap();
    let on_token = sess.create_object(&data_object(b"on-token", true, true)).unwrap();
    let find = |label: &[u8]| sess.find_objects(&[Attribute::Label(label.to_vec())]).unwrap();

    sess.logout().unwrap();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();

    for h in [private, other_private, on_token] {
        let e = sess
            .get_attributes(h, &[cryptoki::object::AttributeType::Label])
            .unwrap_err();
        assert_eq!(rv(e), RvError::ObjectHandleInvalid);
        let e = sess.destroy_object(h).unwrap_err();
        assert_eq!(rv(e), RvError::ObjectHandleInvalid);
    }
    assert!(find(b"private").is_empty());
    assert!(find(b"other-private").is_empty());
    assert_eq!(find(b"public"), vec![public]);
    let label = sess
        .get_attributes(public, &[cryptoki::object::AttributeType::Label])
        .unwrap();
    assert_eq!(label, vec![Attribute::Label(b"public".to_vec())]);
    let reloaded = find(b"on-token");
    assert_eq!(reloaded.len(), 1);
    assert_ne!(reloaded[0], on_token, "a private token object under its old handle");
    // A private session object created after the new login is unaffected.
    let again = sess.create_object(&data_object(b"private", false, true)).unwrap();
    assert_eq!(find(b"private"), vec![again]);
}

/// CKU_CONTEXT_SPECIFIC is only for an operation on a CKA_ALWAYS_AUTHENTICATE
/// key, which hsm-sim never has: CKR_OPERATION_NOT_INITIALIZED (v2.40 C_Login,
/// "improper use"), with no PIN check, so wrong PINs given that way can't lock
/// the user's PIN.
#[test]
fn a_context_specific_login_is_refused_without_a_pin_check() {
    let s = init_token(10, "context");
    let sess = user_session(s);
    for _ in 0..12 {
        let e = sess
            .login(UserType::ContextSpecific, Some(&pin("wrong-pin")))
            .unwrap_err();
        assert_eq!(rv(e), RvError::OperationNotInitialized);
    }
    sess.logout().unwrap();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let e = env()
        .pkcs11
        .open_ro_session(s)
        .unwrap()
        .login(UserType::ContextSpecific, Some(&pin(USER_PIN)))
        .unwrap_err();
    assert_eq!(rv(e), RvError::OperationNotInitialized);
}

/// C_InitPIN needs the SO logged in: a public session, the user and an SO
/// that logged out are refused with CKR_USER_NOT_LOGGED_IN, and the PIN the
/// SO then sets is the one that works.
#[test]
fn only_a_logged_in_so_sets_the_user_pin() {
    let p = &env().pkcs11;
    let s = init_token(6, "init-pin");
    let sess = p.open_rw_session(s).unwrap();
    assert_eq!(
        rv(sess.init_pin(&pin("public01")).unwrap_err()),
        RvError::UserNotLoggedIn
    );
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    assert_eq!(
        rv(sess.init_pin(&pin("asuser01")).unwrap_err()),
        RvError::UserNotLoggedIn
    );
    sess.logout().unwrap();
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    sess.logout().unwrap();
    assert_eq!(
        rv(sess.init_pin(&pin("loggedout")).unwrap_err()),
        RvError::UserNotLoggedIn
    );
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    sess.init_pin(&pin("newuser01")).unwrap();
    sess.logout().unwrap();
    for refused in [USER_PIN, "public01", "asuser01", "loggedout"] {
        assert_eq!(
            rv(sess.login(UserType::User, Some(&pin(refused))).unwrap_err()),
            RvError::PinIncorrect,
            "{refused}"
        );
    }
    sess.login(UserType::User, Some(&pin("newuser01"))).unwrap();
}

/// A PIN change whose save fails (here a directory has taken the temp
/// file's name) leaves the old PIN in force, in this process as on disk.
#[test]
fn a_pin_change_that_cannot_be_saved_changes_nothing() {
    let p = &env().pkcs11;
    let s = init_token(7, "pin-save");
    let blocker = env().token_dir.join("slot-7").join(".token.json.tmp");
    let sess = p.open_rw_session(s).unwrap();
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    assert!(sess.set_pin(&pin(USER_PIN), &pin("changed01")).is_err());
    sess.logout().unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    assert!(sess.init_pin(&pin("reset0001")).is_err());
    std::fs::remove_dir(&blocker).unwrap();
    sess.logout().unwrap();
    for refused in ["changed01", "reset0001"] {
        assert_eq!(
            rv(sess.login(UserType::User, Some(&pin(refused))).unwrap_err()),
            RvError::PinIncorrect,
            "{refused}"
        );
    }
    sess.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
}
