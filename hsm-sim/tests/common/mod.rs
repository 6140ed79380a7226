//! Shared harness: loads the built libhsm_sim.so through cryptoki once per
//! test binary, with a private HSM_SIM_CONF and token directory.
#![allow(dead_code)]
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::sync::OnceLock;

pub const SO_PIN: &str = "12345678";
pub const USER_PIN: &str = "87654321";
pub const SLOTS: usize = 16;

/// The built module. `cargo test` always rebuilds target/debug/deps/
/// libhsm_sim.so (beside the test executable) but only refreshes the copy
/// two levels up on some invocations, so the deps/ one is preferred.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    let fresh = deps.join("libhsm_sim.so");
    if fresh.exists() {
        return fresh;
    }
    deps.parent().expect("target dir").join("libhsm_sim.so")
}

/// Fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("hsm-sim-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a config file for `token_dir` and returns its path.
pub fn write_conf(dir: &std::path::Path, token_dir: &std::path::Path, extra: &str) -> PathBuf {
    let conf = dir.join("hsm-sim.toml");
    std::fs::write(
        &conf,
        format!(
            "token_dir = {:?}\nslots = {SLOTS}\npbkdf2_iterations = 1000\n{extra}\n",
            token_dir.display().to_string()
        ),
    )
    .unwrap();
    conf
}

pub struct Env {
    pub pkcs11: Pkcs11,
    pub dir: PathBuf,
    pub token_dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// The process-wide initialized module.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let dir = temp_dir("test");
        let token_dir = dir.join("tokens");
        let conf = write_conf(&dir, &token_dir, "");
        std::env::set_var("HSM_SIM_CONF", &conf);
        let pkcs11 = Pkcs11::new(module_path()).expect("load libhsm_sim.so");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        Env { pkcs11, dir, token_dir }
    })
}

pub fn pin(s: &str) -> AuthPin {
    AuthPin::from(s.to_string())
}

pub fn slot(n: usize) -> Slot {
    env().pkcs11.get_all_slots().unwrap()[n]
}

/// Initializes slot `n` with a label and user PIN; returns the slot.
pub fn init_token(n: usize, label: &str) -> Slot {
    let p = &env().pkcs11;
    let s = slot(n);
    p.init_token(s, &pin(SO_PIN), label).unwrap();
    let sess = p.open_rw_session(s).unwrap();
    sess.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
    sess.init_pin(&pin(USER_PIN)).unwrap();
    sess.logout().unwrap();
    s
}

/// A read-write session with the user logged in (tolerates an existing login).
pub fn user_session(s: Slot) -> Session {
    let sess = env().pkcs11.open_rw_session(s).unwrap();
    match sess.login(UserType::User, Some(&pin(USER_PIN))) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    sess
}

/// The module's function list, for calls cryptoki has no API for.
pub fn functions() -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    env();
    // SAFETY: loading our own module; the library handle is leaked so the
    // function list stays valid for the whole test process.
    let lib = Box::leak(Box::new(unsafe { cryptoki_sys::Pkcs11::new(module_path()) }.unwrap()));
    let mut list: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { lib.C_GetFunctionList(&mut list) }, cryptoki_sys::CKR_OK);
    // SAFETY: the module returns a pointer to its static function list.
    unsafe { &*list }
}
