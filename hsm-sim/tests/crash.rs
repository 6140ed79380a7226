//! SIGKILL a writer mid-run: every object it reported as created must be
//! present and intact when the token is reopened, and a key pair is there
//! whole or not at all.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn value_of(n: u32) -> Vec<u8> {
    (0..32u32)
        .map(|i| (n.wrapping_mul(31).wrapping_add(i * 7)) as u8)
        .collect()
}

/// This test binary re-executed as the writer child (see `writer_child`).
fn writer(mode: &str, conf: &std::path::Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "writer_child", "--nocapture", "--test-threads", "1"])
        .env("HSM_SIM_CRASH_CHILD", mode)
        .env("HSM_SIM_CONF", conf);
    c
}

/// Child role: a no-op unless HSM_SIM_CRASH_CHILD is set. "init" sets up
/// the token; "write" creates objects forever, printing each after
/// C_CreateObject returned.
#[test]
fn writer_child() {
    let Ok(mode) = std::env::var("HSM_SIM_CRASH_CHILD") else {
        return;
    };
    let p = Pkcs11::new(module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    if mode == "init" {
        p.init_token(slot, &pin(SO_PIN), "crash").unwrap();
        let s = p.open_rw_session(slot).unwrap();
        s.login(UserType::So, Some(&pin(SO_PIN))).unwrap();
        s.init_pin(&pin(USER_PIN)).unwrap();
        return;
    }
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let mut out = std::io::stdout().lock();
    if mode == "pairs" {
        for n in 0u32.. {
            let label = Attribute::Label(format!("pair-{n}").into_bytes());
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::EcParams(P256_OID.to_vec()),
                    label.clone(),
                ],
                &[Attribute::Token(true), Attribute::Private(true), label],
            )
            .unwrap();
            writeln!(out, "created {n}").unwrap();
            out.flush().unwrap();
        }
    }
    for n in 0u32.. {
        let label = format!("obj-{n}").into_bytes();
        let template = if n % 2 == 0 {
            vec![
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(label),
                Attribute::Value(value_of(n)),
            ]
        } else {
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Label(label),
                Attribute::Value(value_of(n)),
            ]
        };
        let h = s.create_object(&template).unwrap();
        writeln!(out, "created {n} {h}").unwrap();
        out.flush().unwrap();
    }
}

fn parse(line: &str) -> Option<u32> {
    line.strip_prefix("created ")?.split_whitespace().next()?.parse().ok()
}

#[test]
fn objects_reported_created_survive_sigkill() {
    let dir = temp_dir("crash");
    let token_dir = dir.join("tokens");
    let conf = write_conf(&dir, &token_dir, "");
    let so = module_path();
    let st = writer("init", &conf).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());

    let mut reported = Vec::new();
    for round in 0..3 {
        let mut child = writer("write", &conf).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 20 + round * 7;
        let mut seen = 0;
        while seen < target {
            let line = lines.next().expect("writer output").unwrap();
            if let Some(n) = parse(&line) {
                reported.push((round, n));
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever the child printed before dying also counts.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = parse(&line) {
                reported.push((round, n));
            }
        }
    }

    std::env::set_var("HSM_SIM_CONF", &conf);
    let p = Pkcs11::new(&so).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_all_slots().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    for (round, n) in &reported {
        let found = s
            .find_objects(&[Attribute::Label(format!("obj-{n}").into_bytes())])
            .unwrap();
        // Each round restarts numbering, so a label exists once per round that reached it.
        let expect = reported.iter().filter(|(_, m)| m == n).count();
        assert!(
            found.len() >= expect,
            "round {round} obj-{n}: {} found, {expect} reported",
            found.len()
        );
        for h in found {
            let v = s.get_attributes(h, &[AttributeType::Value]).unwrap();
            assert_eq!(v, vec![Attribute::Value(value_of(*n))], "obj-{n} intact");
        }
    }
    assert!(reported.len() >= 60);
}

/// C_GenerateKeyPair writes two object files. Killed between them, the
/// writer must leave neither: a lone half would be a key with no partner
/// under the pair's label and id. Each round kills the writer at a
/// different moment of a pair's writing.
#[test]
fn a_key_pair_survives_sigkill_whole_or_not_at_all() {
    let dir = temp_dir("crash-pairs");
    let conf = write_conf(&dir, &dir.join("tokens"), "");
    let st = writer("init", &conf).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());

    let mut reported = Vec::new();
    for round in 0..16u64 {
        let mut child = writer("pairs", &conf).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("writer output").unwrap();
        reported.extend(parse(&first).map(|n| (round, n)));
        // Somewhere inside a later pair's writing.
        std::thread::sleep(std::time::Duration::from_micros(1_000 + round * 900));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            reported.extend(parse(&line).map(|n| (round, n)));
        }
    }

    std::env::set_var("HSM_SIM_CONF", &conf);
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let s = p.open_rw_session(p.get_all_slots().unwrap()[0]).unwrap();
    s.login(UserType::User, Some(&pin(USER_PIN))).unwrap();
    let labels = |class| -> Vec<String> {
        let mut labels: Vec<String> = s
            .find_objects(&[Attribute::Class(class)])
            .unwrap()
            .into_iter()
            .map(|h| match &s.get_attributes(h, &[AttributeType::Label]).unwrap()[..] {
                [Attribute::Label(l)] => String::from_utf8_lossy(l).into_owned(),
                other => panic!("no label: {other:?}"),
            })
            .collect();
        labels.sort();
        labels
    };
    let (public, private) = (labels(ObjectClass::PUBLIC_KEY), labels(ObjectClass::PRIVATE_KEY));
    assert_eq!(
        public, private,
        "every public key has its private key, and the other way round"
    );
    for (round, n) in &reported {
        let label = format!("pair-{n}");
        let expect = reported.iter().filter(|(_, m)| m == n).count();
        let found = private.iter().filter(|l| **l == label).count();
        assert!(
            found >= expect,
            "round {round} pair-{n}: {found} found, {expect} reported"
        );
    }
}
