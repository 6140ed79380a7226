//! Fault injection switched on and off from outside by rewriting the
//! control file while the module is loaded.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use std::time::{Duration, Instant};

fn rv(e: Error) -> RvError {
    match e {
        Error::Pkcs11(rv, _) => rv,
        other => panic!("unexpected {other}"),
    }
}

/// Rewrites the control file and waits past the module's re-check period.
fn set_faults(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::thread::sleep(Duration::from_millis(120));
}

#[test]
fn faults_apply_and_switch_off() {
    let dir = temp_dir("faults");
    let token_dir = dir.join("tokens");
    let fault_file = dir.join("faults.toml");
    let conf = write_conf(
        &dir,
        &token_dir,
        &format!("fault_file = {:?}", fault_file.display().to_string()),
    );
    std::env::set_var("HSM_SIM_CONF", &conf);
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    p.init_token(slot, &pin(SO_PIN), "faults").unwrap();
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    s.init_pin(&pin(USER_PIN)).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Token(true)],
        )
        .unwrap();
    let mut iv = [0u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    s.encrypt(&gcm, key, b"ok").unwrap();

    // The next 3 C_Encrypt calls fail; then it works again.
    set_faults(
        &fault_file,
        "fail_next = 3\nerror = \"CKR_FUNCTION_FAILED\"\nfunctions = [\"C_Encrypt\"]\n",
    );
    for _ in 0..3 {
        assert_eq!(rv(s.encrypt(&gcm, key, b"x").unwrap_err()), RvError::FunctionFailed);
    }
    s.encrypt(&gcm, key, b"x").unwrap();
    s.generate_random_vec(4).unwrap();

    // Error rate 1.0 on one function, with the default CKR_DEVICE_ERROR.
    set_faults(&fault_file, "error_rate = 1.0\nfunctions = [\"C_GenerateRandom\"]\n");
    assert_eq!(rv(s.generate_random_vec(4).unwrap_err()), RvError::DeviceError);
    s.encrypt(&gcm, key, b"x").unwrap();

    // Fixed latency, per slot.
    set_faults(&fault_file, "[slot.0]\nlatency_ms = 80\n");
    let t = Instant::now();
    s.generate_random_vec(4).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(80));

    // A held call sleeps until the file stops giving it a latency, not its whole minute.
    set_faults(
        &fault_file,
        "latency_ms = 60000\nuntil_released = true\nfunctions = [\"C_GenerateRandom\"]\n",
    );
    let t = Instant::now();
    std::thread::scope(|scope| {
        let held = scope.spawn(|| p.open_ro_session(slot).unwrap().generate_random_vec(4));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!held.is_finished(), "held while the file names it");
        set_faults(&fault_file, "");
        held.join().unwrap().unwrap();
    });
    assert!(t.elapsed() < Duration::from_secs(5), "released: {:?}", t.elapsed());

    // Unplugged: slot calls see no token, session calls a removed device.
    set_faults(&fault_file, "unplugged = true\n");
    assert_eq!(rv(p.get_token_info(slot).unwrap_err()), RvError::TokenNotPresent);
    assert!(p.get_slots_with_token().unwrap().is_empty());
    assert_eq!(rv(s.encrypt(&gcm, key, b"x").unwrap_err()), RvError::DeviceRemoved);
    assert_eq!(rv(p.open_rw_session(slot).unwrap_err()), RvError::TokenNotPresent);

    // Plugged back: old sessions are gone, the token works after a login. The
    // key (a private object) is found again under a new handle: the removal
    // logged the token out, and private handles don't outlive a logout.
    set_faults(&fault_file, "unplugged = false\n");
    assert_eq!(rv(s.generate_random_vec(4).unwrap_err()), RvError::SessionHandleInvalid);
    let s2 = p.open_rw_session(slot).unwrap();
    s2.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    assert_eq!(rv(s2.encrypt(&gcm, key, b"x").unwrap_err()), RvError::KeyHandleInvalid);
    let found = s2
        .find_objects(&[Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY)])
        .unwrap();
    assert_eq!(found.len(), 1);
    s2.encrypt(&gcm, found[0], b"x").unwrap();

    // Removing the file switches everything off.
    set_faults(&fault_file, "fail_next = 100\n");
    assert!(s2.generate_random_vec(4).is_err());
    std::fs::remove_file(&fault_file).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    s2.generate_random_vec(4).unwrap();
    p.get_token_info(slot).unwrap();
}
