//! The raw PKCS#11 rate of an HSM: AES-256-GCM encryption of 32 bytes under a token key through
//! cryptoki, one session per thread, as in hsm-sim/examples/bench_gcm.rs; and the same with each
//! thread's session under its own copy of that key, which is what the server does on software
//! tokens. It runs in a child process (`kms-bench raw-hsm`) because the modules are configured
//! through the environment, which a multi-threaded process should not change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

use crate::hsm::{self, HsmKind};

#[derive(clap::Args, Debug)]
pub struct RawArgs {
    #[arg(long)]
    module: PathBuf,
    #[arg(long)]
    label: String,
    #[arg(long)]
    pin: String,
    /// Initialise a free slot as the token `label` (with this SO PIN) when no such token exists.
    #[arg(long)]
    init_so_pin: Option<String>,
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    #[arg(long)]
    seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawRate {
    /// "token" (the definition of the raw rate) or "session copy" (what the server uses on
    /// software tokens, src/hsm/root.rs).
    pub key: String,
    pub threads: usize,
    pub ops_per_s: f64,
}

/// The raw rate of `kind` with each thread count, on a throwaway token under `dir`.
pub fn measure(kind: HsmKind, dir: &Path, threads: &[usize], seconds: f64) -> Result<Vec<RawRate>, String> {
    let dir = dir.join(format!("raw-{}", kind.name()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (token, init) = match kind {
        HsmKind::Sim => (hsm::hsm_sim_token(&dir)?, true),
        HsmKind::SoftHsm => (hsm::softhsm_token(&dir)?, false),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("raw-hsm")
        .arg("--module")
        .arg(&token.module)
        .args(["--label", hsm::TOKEN_LABEL, "--pin", hsm::USER_PIN])
        .arg("--threads")
        .arg(threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","))
        .arg("--seconds")
        .arg(seconds.to_string())
        .envs(token.env.iter().cloned());
    if init {
        cmd.args(["--init-so-pin", hsm::SO_PIN]);
    }
    let out = cmd.output().map_err(|e| format!("cannot run the raw-hsm child: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "raw PKCS#11 measurement of {} failed: {}",
            kind.name(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("raw-hsm output {l:?}: {e}")))
        .collect()
}

/// The child: prints one JSON `RawRate` line per thread count.
pub fn child_main(args: &RawArgs) -> Result<(), String> {
    let p = Pkcs11::new(&args.module).map_err(|e| format!("cannot load {}: {e}", args.module.display()))?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let pin = AuthPin::from(args.pin.clone());
    let slot = token_slot(&p, args)?;
    let session = p.open_rw_session(slot).map_err(|e| format!("C_OpenSession: {e}"))?;
    session
        .login(UserType::User, Some(&pin))
        .map_err(|e| format!("C_Login: {e}"))?;
    let token = token_key(&session).map_err(|e| format!("C_GenerateKey: {e}"))?;
    // A module that can't copy keys gets token rows only.
    let can_copy = session
        .copy_object(token, &[Attribute::Token(false)])
        .and_then(|copy| session.destroy_object(copy))
        .is_ok();
    for (kind, copy) in [("token", false), ("session copy", true)] {
        if copy && !can_copy {
            continue;
        }
        for &threads in &args.threads {
            let ops_per_s = rate(&p, slot, token, copy, threads.max(1), args.seconds)?;
            let key = kind.to_string();
            let line = serde_json::to_string(&RawRate {
                key,
                threads,
                ops_per_s,
            })
            .map_err(|e| e.to_string())?;
            println!("{line}");
        }
    }
    Ok(())
}

fn token_slot(p: &Pkcs11, args: &RawArgs) -> Result<Slot, String> {
    let slots = p.get_all_slots().map_err(|e| format!("C_GetSlotList: {e}"))?;
    let mut free = None;
    for slot in slots {
        let Ok(info) = p.get_token_info(slot) else { continue };
        if info.token_initialized() && info.label().trim_end() == args.label {
            return Ok(slot);
        }
        if !info.token_initialized() && free.is_none() {
            free = Some(slot);
        }
    }
    let (Some(slot), Some(so_pin)) = (free, &args.init_so_pin) else {
        return Err(format!("no token labelled {:?}", args.label));
    };
    let so = AuthPin::from(so_pin.clone());
    p.init_token(slot, &so, &args.label)
        .map_err(|e| format!("C_InitToken: {e}"))?;
    let s = p.open_rw_session(slot).map_err(|e| format!("C_OpenSession: {e}"))?;
    s.login(UserType::So, Some(&so)).map_err(|e| format!("SO login: {e}"))?;
    s.init_pin(&AuthPin::from(args.pin.clone()))
        .map_err(|e| format!("C_InitPIN: {e}"))?;
    s.logout().map_err(|e| format!("C_Logout: {e}"))?;
    // Slot ids may change once a token exists: look it up again by label.
    token_slot(
        p,
        &RawArgs {
            module: args.module.clone(),
            label: args.label.clone(),
            pin: args.pin.clone(),
            init_so_pin: None,
            threads: vec![],
            seconds: 0.0,
        },
    )
}

/// An AES-256 token key, sensitive and not extractable, like the server's root key.
fn token_key(session: &Session) -> Result<ObjectHandle, cryptoki::error::Error> {
    session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(b"kms-bench".to_vec()),
        ],
    )
}

/// Total encryptions per second over `threads` threads, each with its own session.
/// With `copy`, each thread encrypts under its own session's copy of `token`, as the server's HSM
/// sessions do.
fn rate(p: &Pkcs11, slot: Slot, token: ObjectHandle, copy: bool, threads: usize, seconds: f64) -> Result<f64, String> {
    let start = Instant::now();
    let total: Result<u64, String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<u64, String> {
                    let sess = p.open_rw_session(slot).map_err(|e| format!("C_OpenSession: {e}"))?;
                    let key = match copy {
                        true => sess
                            .copy_object(token, &[Attribute::Token(false)])
                            .map_err(|e| format!("C_CopyObject: {e}"))?,
                        false => token,
                    };
                    let data = [0x5au8; 32];
                    let mut n = 0u64;
                    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                    while Instant::now() < deadline {
                        for _ in 0..64 {
                            let mut iv = [0u8; 12];
                            iv[0] = t as u8;
                            iv[4..].copy_from_slice(&n.to_be_bytes());
                            let params = GcmParams::new(&mut iv, b"aad", 128.into()).map_err(|e| e.to_string())?;
                            let ct = sess
                                .encrypt(&Mechanism::AesGcm(params), key, &data)
                                .map_err(|e| format!("C_Encrypt: {e}"))?;
                            if ct.len() != 48 {
                                return Err(format!("AES-GCM of 32 bytes gave {} bytes", ct.len()));
                            }
                            n += 1;
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a raw-rate thread panicked".to_string())?)
            .sum()
    });
    Ok(total? as f64 / start.elapsed().as_secs_f64())
}
