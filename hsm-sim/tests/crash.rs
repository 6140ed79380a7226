//! SIGKILL a writer mid-run: every object it reported as created must be
//! present and intact when the token is reopened.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

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
