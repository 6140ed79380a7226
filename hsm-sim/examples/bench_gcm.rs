//! AES-256-GCM encryption of 32 bytes under a token key through cryptoki,
//! for hsm-sim and SoftHSM2 in the same run, with 1 and 2 threads (one
//! session per thread).
//!
//! Run: cargo run --release -p hsm-sim --example bench_gcm [seconds]
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn pin(s: &str) -> AuthPin {
    AuthPin::from(s.to_string())
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn hsm_sim_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let deps = profile.join("deps").join("libhsm_sim.so");
    if deps.exists() {
        deps
    } else {
        profile.join("libhsm_sim.so")
    }
}

fn open(path: &PathBuf) -> Pkcs11 {
    let p = Pkcs11::new(path).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

fn find_slot(p: &Pkcs11, label: &str) -> Slot {
    p.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label() == label)
        .expect("token by label")
}

fn token_key(sess: &cryptoki::session::Session) -> ObjectHandle {
    sess.generate_key(
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
            Attribute::Label(b"bench".to_vec()),
        ],
    )
    .unwrap()
}

/// Total encryptions per second over `threads` threads.
fn measure(p: &Pkcs11, slot: Slot, key: ObjectHandle, threads: usize, secs: f64) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let sess = p.open_rw_session(slot).unwrap();
                    let data = [0x5au8; 32];
                    let mut n = 0u64;
                    let deadline = Instant::now() + Duration::from_secs_f64(secs);
                    while Instant::now() < deadline {
                        for _ in 0..64 {
                            let mut iv = [0u8; 12];
                            iv[0] = t as u8;
                            iv[4..].copy_from_slice(&n.to_be_bytes());
                            let m = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
                            let ct = sess.encrypt(&m, key, &data).unwrap();
                            assert_eq!(ct.len(), 48);
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);

    // hsm-sim with a throwaway token directory.
    let dir = temp_dir("hsm-sim");
    let conf = dir.join("hsm-sim.toml");
    std::fs::write(
        &conf,
        format!("token_dir = {:?}\n", dir.join("tokens").display().to_string()),
    )
    .unwrap();
    std::env::set_var("HSM_SIM_CONF", &conf);
    let sim = open(&hsm_sim_path());
    let slot = sim.get_all_slots().unwrap()[0];
    sim.init_token(slot, &pin("5678"), "bench").unwrap();
    let s = sim.open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&pin("5678"))).unwrap();
    s.init_pin(&pin("1234")).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&pin("1234"))).unwrap();
    let key = token_key(&s);
    let mut rows = vec![];
    for t in [1, 2] {
        rows.push(("hsm-sim", t, measure(&sim, slot, key, t, secs)));
    }

    // SoftHSM2 with a throwaway token directory.
    if std::path::Path::new(SOFTHSM).exists() {
        let sdir = temp_dir("softhsm");
        let sconf = sdir.join("softhsm2.conf");
        std::fs::create_dir_all(sdir.join("tokens")).unwrap();
        std::fs::write(
            &sconf,
            format!("directories.tokendir = {}\n", sdir.join("tokens").display()),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &sconf);
        let st = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "bench",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ])
            .env("SOFTHSM2_CONF", &sconf)
            .output()
            .expect("softhsm2-util");
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let soft = open(&PathBuf::from(SOFTHSM));
        let slot = find_slot(&soft, "bench");
        let s2 = soft.open_rw_session(slot).unwrap();
        s2.login(UserType::User, Some(&pin("1234"))).unwrap();
        let key = token_key(&s2);
        for t in [1, 2] {
            rows.push(("SoftHSM2", t, measure(&soft, slot, key, t, secs)));
        }
        let _ = std::fs::remove_dir_all(&sdir);
    } else {
        eprintln!("SoftHSM2 not found at {SOFTHSM}: skipped");
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("AES-256-GCM encrypt, 32-byte payload, token key, one session per thread ({secs} s per row)");
    println!("{:<10} {:>7} {:>12}", "module", "threads", "ops/s");
    for (m, t, ops) in rows {
        println!("{m:<10} {t:>7} {ops:>12.0}");
    }
}
