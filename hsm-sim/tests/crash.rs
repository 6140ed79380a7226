//! SIGKILL a writer mid-run: every object it reported as created must be
//! present and intact when the token is reopened, and a key pair is there
//! whole or not at all.
mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
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
            generate_pair(&s, &format!("pair-{n}"));
            writeln!(out, "created {n}").unwrap();
            out.flush().unwrap();
        }
    }
    if mode == "steady" {
        // Stays open across other writers' deaths: one pair per "pair" line, and the labels of
        // the key pairs' halves as this process sees them now for a "labels" line.
        let mut n = 0u32;
        for line in std::io::stdin().lines().map_while(Result::ok) {
            match line.as_str() {
                "pair" => {
                    generate_pair(&s, &format!("steady-{n}"));
                    writeln!(out, "{STEADY}created {n}").unwrap();
                    n += 1;
                }
                _ => {
                    for class in [ObjectClass::PUBLIC_KEY, ObjectClass::PRIVATE_KEY] {
                        writeln!(out, "{STEADY}{}", labels_of(&s, class).join(",")).unwrap();
                    }
                }
            }
            out.flush().unwrap();
        }
        return;
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

/// A P-256 token key pair, both halves labelled `label`.
fn generate_pair(s: &Session, label: &str) {
    let label = Attribute::Label(label.as_bytes().to_vec());
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
}

/// The labels of the objects of `class`, sorted.
fn labels_of(s: &Session, class: ObjectClass) -> Vec<String> {
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
}

/// What a "steady" child's answers begin with.
const STEADY: &str = "steady: ";

/// A "steady" child: its stdin, and its stdout's lines.
struct Steady {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Steady {
    fn start(conf: &std::path::Path) -> Steady {
        let mut child = writer("steady", conf)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Steady { child, lines }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.child.stdin.as_mut().unwrap(), "{command}").unwrap();
        self.answer()
    }

    /// The child's next answer (the test harness prints lines of its own).
    fn answer(&mut self) -> String {
        loop {
            let line = self.lines.next().expect("steady child output").unwrap();
            // The harness's "test writer_child ... " comes first on the first answer's line.
            if let Some((_, answer)) = line.split_once(STEADY) {
                return answer.to_string();
            }
        }
    }

    /// The labels of the public halves and of the private halves, as this process sees them.
    fn labels(&mut self) -> (String, String) {
        let public = self.ask("labels");
        (public, self.answer())
    }
}

impl Drop for Steady {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
/// different moment of a pair's writing; after each, a process that was
/// open all along (so did not roll back at its start) writes a pair of its
/// own, which must not make the dead writer's half permanent.
#[test]
fn a_key_pair_survives_sigkill_whole_or_not_at_all() {
    let dir = temp_dir("crash-pairs");
    let conf = write_conf(&dir, &dir.join("tokens"), "");
    let st = writer("init", &conf).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());

    let mut steady = Steady::start(&conf);
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
        assert!(parse(&steady.ask("pair")).is_some());
    }

    for (who, mut view) in [
        ("the process open all along", steady),
        ("a new process", Steady::start(&conf)),
    ] {
        let (public, private) = view.labels();
        assert_eq!(
            public, private,
            "{who}: every public key has its private key, and the other way round"
        );
        let private: Vec<&str> = private.split(',').collect();
        for (round, n) in &reported {
            let label = format!("pair-{n}");
            let expect = reported.iter().filter(|(_, m)| m == n).count();
            let found = private.iter().filter(|l| **l == label).count();
            assert!(
                found >= expect,
                "{who}: round {round} pair-{n}: {found} found, {expect} reported"
            );
        }
        assert_eq!(private.iter().filter(|l| l.starts_with("steady-")).count(), 16, "{who}");
    }
}
