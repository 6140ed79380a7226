//! The embedded default HSM: hsm-sim, the workspace's own PKCS#11 software token. With no
//! `hsm.module` configured, `kms serve` loads `libhsm_sim.so` from beside its own executable, keeps
//! the token in `<data_dir>/hsm/`, and initialises it on first start with random PINs stored in
//! owner-only files. Meant for development and tests: production points `hsm.module` at a real HSM.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use ring::rand::{SecureRandom, SystemRandom};

use super::errors;
use super::module;
use crate::config::Config;

pub const MODULE_FILE: &str = "libhsm_sim.so";

/// Fills in the embedded HSM when none is configured. Sets `HSM_SIM_CONF`, so it must run before
/// any other thread starts.
pub fn prepare(cfg: &mut Config) -> Result<(), String> {
    if cfg.hsm.module.is_some() {
        return Ok(());
    }
    let module = locate_module()?;
    let token_dir = cfg.data_dir.join("hsm");
    crate::ops::data_dir::create_durably(&token_dir)
        .map_err(|e| format!("cannot create {}: {e}", token_dir.display()))?;
    let conf = cfg.data_dir.join("hsm-sim.toml");
    let toml = format!("token_dir = {:?}\n", token_dir.display().to_string());
    std::fs::write(&conf, toml).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    // Order matters: main calls this before the runtime starts any thread.
    std::env::set_var("HSM_SIM_CONF", &conf);
    let pin_file = cfg.data_dir.join("hsm-user.pin");
    init_token(
        &module,
        &token_dir,
        &cfg.hsm.token_label,
        &pin_file,
        &cfg.data_dir.join("hsm-so.pin"),
    )?;
    cfg.hsm.module = Some(module);
    cfg.hsm.pin_file = Some(pin_file);
    Ok(())
}

/// `libhsm_sim.so` next to the running executable (cargo puts both in target/<profile>/).
fn locate_module() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the kms executable: {e}"))?;
    let dir = exe.parent().ok_or("the kms executable has no directory")?;
    let candidates = [dir.join(MODULE_FILE), dir.join("..").join(MODULE_FILE)];
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        format!(
            "no HSM configured and the embedded hsm-sim module ({MODULE_FILE}) is not next to {}: \
             build it with `cargo build --workspace` (same profile), or set hsm.module",
            exe.display()
        )
    })
}

/// Initialises the token labelled `label` unless it exists already. A token hsm-sim cannot read
/// stops the start-up: taking its slot for a new token would overwrite the PIN files and wipe the
/// root keys.
fn init_token(
    module_path: &Path,
    token_dir: &Path,
    label: &str,
    user_pin_file: &Path,
    so_pin_file: &Path,
) -> Result<(), String> {
    let m = module::load(module_path)?;
    let slots = m
        .get_all_slots()
        .map_err(|e| format!("C_GetSlotList failed: {}", errors::code_name(&e)))?;
    let mut free = None;
    let mut others = Vec::new();
    for slot in slots {
        let info = m.get_token_info(slot).map_err(|e| {
            let dir = token_dir.join(format!("slot-{}", slot.id()));
            format!(
                "the embedded hsm-sim token in {} is unusable (C_GetTokenInfo: {}): repair or restore {} \
                 (hsm-sim names the problem on stderr); nothing was changed",
                dir.display(),
                errors::code_name(&e),
                dir.join("token.json").display()
            )
        })?;
        if info.token_initialized() && info.label().trim_end() == label {
            if !user_pin_file.exists() {
                return Err(format!(
                    "embedded token {label:?} exists but {} is missing",
                    user_pin_file.display()
                ));
            }
            if !info.user_pin_initialized() {
                // C_InitToken ran and C_InitPIN did not (a crash or a failure between them): the
                // PINs were written first, so the initialisation is finished with them.
                let so = AuthPin::from(read_pin(so_pin_file)?);
                // C_InitPIN never succeeded with it: an empty file (torn by a crash) is replaced.
                let user = AuthPin::from(existing_or_new_pin(user_pin_file)?);
                set_user_pin(&m, slot, &so, &user)?;
                tracing::warn!(
                    token = label,
                    "finished initialising the embedded hsm-sim token (its user PIN was not set)"
                );
            }
            return Ok(());
        }
        if info.token_initialized() {
            others.push(info.label().trim_end().to_string());
        } else if free.is_none() {
            free = Some(slot);
        }
    }
    // A data directory has one embedded token (hsm-sim is given one slot) and one pair of PIN
    // files. A token under another label means hsm.token_label was changed: say so, rather than
    // "no free slot", which named neither the cause nor the cure.
    if !others.is_empty() {
        return Err(format!(
            "the embedded hsm-sim in {} holds the token {}, not {label:?}: set hsm.token_label back \
             (a data directory has one embedded token); nothing was changed",
            token_dir.display(),
            others.iter().map(|l| format!("{l:?}")).collect::<Vec<_>>().join(", ")
        ));
    }
    let slot = free.ok_or("the embedded hsm-sim has no free slot for a new token")?;
    // PINs first: a crash after C_InitToken must not leave a token nobody can log in to. PIN files
    // already there are used, never overwritten: they are left by a crash before C_InitToken, or
    // belong to a token whose directory is missing (a partial restore), which then stays
    // restorable; the store, which holds keys wrapped under that token's root key, stops the
    // start-up once the root key is not found.
    let so = AuthPin::from(existing_or_new_pin(so_pin_file)?);
    let user = AuthPin::from(existing_or_new_pin(user_pin_file)?);
    m.init_token(slot, &so, label)
        .map_err(|e| format!("C_InitToken failed: {}", errors::code_name(&e)))?;
    set_user_pin(&m, slot, &so, &user)?;
    tracing::warn!(
        token = label,
        "initialised the embedded hsm-sim token (development HSM; use a real HSM in production)"
    );
    Ok(())
}

/// Sets the token's user PIN as its security officer.
fn set_user_pin(
    m: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    so: &AuthPin,
    user: &AuthPin,
) -> Result<(), String> {
    let session = m
        .open_rw_session(slot)
        .map_err(|e| format!("C_OpenSession failed: {}", errors::code_name(&e)))?;
    session
        .login(UserType::So, Some(so))
        .map_err(|e| format!("C_Login as SO failed: {}", errors::code_name(&e)))?;
    session
        .init_pin(user)
        .map_err(|e| format!("C_InitPIN failed: {}", errors::code_name(&e)))?;
    session
        .logout()
        .map_err(|e| format!("C_Logout failed: {}", errors::code_name(&e)))
}

/// A PIN file's content, without a trailing newline, as `ops::read_pin` reads the user PIN.
fn read_secret(path: &Path) -> Result<String, String> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    // The only copy left goes into an AuthPin (a SecretString, wiped on drop).
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// The PIN in `path`, or a new random one written there when the file is missing or empty (a
/// crash while it was first written: no token can have been set up with an empty PIN).
fn existing_or_new_pin(path: &Path) -> Result<String, String> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        tracing::warn!(file = %path.display(), "a new embedded hsm-sim token takes the PIN already in its PIN file");
        return read_pin(path);
    }
    let pin = random_pin()?;
    write_secret(path, &pin)?;
    Ok(pin)
}

/// A PIN file's PIN, refused (naming the file) unless it is a PIN hsm-sim takes (4-255 bytes).
fn read_pin(path: &Path) -> Result<String, String> {
    let pin = read_secret(path)?;
    if !(4..=255).contains(&pin.len()) {
        return Err(format!(
            "{} does not hold a PIN (4 to 255 bytes): restore it from a backup",
            path.display()
        ));
    }
    Ok(pin)
}

fn random_pin() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system RNG failed")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a new owner-only file, durably (its directory entry too).
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    f.write_all(secret.as_bytes())
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
