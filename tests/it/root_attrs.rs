//! The root key is used only if it is what a root key must be: AES-256, sensitive, not extractable
//! (src/hsm/root_attrs.rs). A key found under the root key's CKA_ID that is not stops the server at
//! start and, adopted later, is refused like a missing one. And material is never sealed under an
//! IV the HSM was supposed to generate but did not.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kms::proto as pb;

use crate::common::*;

/// pkcs11-tool's arguments for the attributes of a usable root key.
const USABLE: [&str; 4] = ["--key-type", "AES:32", "--sensitive", "--private"];

/// The default `hsm.root_key_id`, which `Server` uses.
const DEFAULT_ROOT_KEY_ID: &str = "6b6d732d726f6f742d7631";

/// Runs pkcs11-tool, logged in as the user, on a test token.
fn pkcs11_tool_output(hsm: &TestHsm, args: &[&str]) -> Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&hsm.module)
        .args(["--token-label", TOKEN, "--login", "--pin", PIN])
        .args(args)
        .envs(hsm.env.iter().cloned())
        .output()
        .expect("pkcs11-tool must be installed (apt-get install opensc)")
}

/// Runs pkcs11-tool, which must succeed.
fn pkcs11_tool(hsm: &TestHsm, args: &[&str]) {
    let out = pkcs11_tool_output(hsm, args);
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kms serve` on `hsm` with an empty store in `data`, and `hsm.root_key_id` = `root_key_id`.
fn kms_serve(hsm: &TestHsm, root_key_id: &str, data: &Path) -> Command {
    let config = data.join("kms.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[hsm]\nmodule = {module:?}\ntoken_label = {TOKEN:?}\n\
             pin_env = \"KMS_TEST_PIN\"\nroot_key_id = {root_key_id:?}\n",
            module = hsm.module.display().to_string(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms"));
    cmd.args(["serve", "--dev", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data.join("data"))
        .envs(hsm.env.iter().cloned())
        .env("KMS_TEST_PIN", PIN)
        .stdout(Stdio::piped());
    cmd
}

/// The first start of a server on `hsm`, which must exit by itself (within 30 s) rather than serve.
fn first_start(hsm: &TestHsm, root_key_id: &str) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut child = kms_serve(hsm, root_key_id, data.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kms kept running with this root key: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Whether `kms serve` started and printed its listening line (false: it exited first).
fn starts(hsm: &TestHsm, root_key_id: &str) -> bool {
    start_and_log(hsm, root_key_id).0
}

/// As `starts`, with what the server logged up to then.
fn start_and_log(hsm: &TestHsm, root_key_id: &str) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let mut child = kms_serve(hsm, root_key_id, data.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("kms listening on "));
    let _ = child.kill();
    let log = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    eprint!("{log}");
    (listening, log)
}

/// A root key that was imported (its value was in a file) is usable, but the operator is told at
/// start that custody rests also on whoever held that value; one generated in the HSM is not.
#[test]
fn a_root_key_whose_value_was_outside_the_hsm_is_taken_with_a_warning() {
    let id = "726f6f742d696d706f7274";
    let hsm = TestHsm::new();
    let value = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(value.path(), [0x5a; 32]).unwrap();
    pkcs11_tool(
        &hsm,
        &[
            &[
                "--write-object",
                value.path().to_str().unwrap(),
                "--type",
                "secrkey",
                "--id",
                id,
            ][..],
            &USABLE,
        ]
        .concat(),
    );
    let (listening, log) = start_and_log(&hsm, id);
    assert!(listening, "an imported, sensitive, unextractable key is usable");
    assert!(
        log.contains("may have been outside the HSM: CKA_NEVER_EXTRACTABLE is FALSE"),
        "{log}"
    );
    assert!(log.contains("CKA_ALWAYS_SENSITIVE is FALSE"), "{log}");

    let hsm = TestHsm::new();
    pkcs11_tool(&hsm, &[&["--keygen", "--id", id][..], &USABLE].concat());
    let (listening, log) = start_and_log(&hsm, id);
    assert!(listening);
    assert!(!log.contains("outside the HSM"), "{log}");
}

/// An admin made the root key before the server's first start, with the HSM's (or the tool's)
/// defaults: the server must refuse it and say which attribute is wrong, not wrap under it.
#[test]
fn a_root_key_with_wrong_attributes_stops_the_first_start() {
    // Not the default id: the check applies to the key `hsm.root_key_id` names.
    let id = "726f6f742d6174747273";
    let cases: [(&[&str], &str); 5] = [
        (
            &["--key-type", "AES:32", "--sensitive", "--private", "--extractable"],
            "CKA_EXTRACTABLE is TRUE",
        ),
        (&["--key-type", "AES:32", "--private"], "CKA_SENSITIVE is FALSE"),
        // pkcs11-tool's default: a public object, usable (and on SoftHSM2 stored) without the PIN.
        (&["--key-type", "AES:32", "--sensitive"], "CKA_PRIVATE is FALSE"),
        (
            &["--key-type", "AES:16", "--sensitive", "--private"],
            "CKA_VALUE_LEN is 16 bytes",
        ),
        (
            &["--key-type", "GENERIC:32", "--sensitive", "--private"],
            "CKA_KEY_TYPE is CKK_GENERIC_SECRET",
        ),
    ];
    for (keygen, expected) in cases {
        let hsm = TestHsm::new();
        let mut args = vec!["--keygen", "--id", id, "--label", "kms-root"];
        args.extend_from_slice(keygen);
        pkcs11_tool(&hsm, &args);

        let out = first_start(&hsm, id);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{keygen:?}: kms started; stderr: {stderr}");
        assert!(
            stderr.contains("not usable") && stderr.contains(expected) && stderr.contains("refusing to start"),
            "{keygen:?}: the operator must be told {expected:?}; stderr: {stderr}"
        );
        assert!(!stderr.contains(PIN), "the PIN must never be printed");
    }

    // The same key made right is taken: the check is not what stops the server.
    let hsm = TestHsm::new();
    pkcs11_tool(
        &hsm,
        &[&["--keygen", "--id", id, "--label", "kms-root"][..], &USABLE].concat(),
    );
    assert!(
        starts(&hsm, id),
        "kms must start with an AES-256 sensitive, unextractable root key"
    );
}

/// A root key replaced while the server runs by one that is extractable is never adopted: the
/// sessions' copies of the old key are dropped at the next check as for a destroyed key, requests
/// that need the root key get KeyUnavailableException (nothing is wrapped under the new key), and
/// a correct replacement is used again. SoftHSM2: it sees another process's changes.
#[tokio::test]
async fn an_unusable_replacement_root_key_is_refused_as_unavailable() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::softhsm(), cache_off, "root_check_seconds = 1").await;
    let mut c = server.client().await;
    let old_key = create_key(&mut c).await;
    c.generate_data_key(gdk(&old_key.key_id)).await.unwrap();

    let replace = |flags: &[&str]| {
        pkcs11_tool(
            &server.hsm,
            &["--delete-object", "--type", "secrkey", "--id", DEFAULT_ROOT_KEY_ID],
        );
        let mut args = vec![
            "--keygen",
            "--key-type",
            "AES:32",
            "--id",
            DEFAULT_ROOT_KEY_ID,
            "--label",
            "kms-root",
        ];
        args.extend_from_slice(flags);
        pkcs11_tool(&server.hsm, &args);
    };
    replace(&["--sensitive", "--private", "--extractable"]);

    let replaced = Instant::now();
    loop {
        match c.generate_data_key(gdk(&old_key.key_id)).await {
            Err(status) => {
                assert_eq!(error_type(&status), "KeyUnavailableException", "{status:?}");
                break;
            }
            Ok(_) => assert!(
                replaced.elapsed() < Duration::from_secs(20),
                "the old root key's copy is still in use 20 s after it was replaced (check period 1 s)"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing is sealed under the extractable key, and it stays refused.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_err(
        c.create_key(pb::CreateKeyRequest::default()).await,
        "KeyUnavailableException",
    );
    expect_err(
        c.generate_data_key(gdk(&old_key.key_id)).await,
        "KeyUnavailableException",
    );
    let listed = c.list_keys(pb::ListKeysRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.keys.len(), 1, "no key was created under the unusable root key");

    // An operator puts a proper key in its place: it is adopted.
    replace(&["--sensitive", "--private"]);
    let new_key = create_key(&mut c).await;
    c.generate_data_key(gdk(&new_key.key_id)).await.unwrap();
}

/// Where sessions do not copy the root key (CloudHSM, generic HSMs), the root key the server
/// creates is not modifiable either (CKA_MODIFIABLE false): its id or usage can't be changed.
/// (SoftHSM2 refuses to copy a non-modifiable key, so there it stays modifiable.)
#[tokio::test]
async fn a_created_root_key_is_read_only_where_sessions_do_not_copy_it() {
    let mut server = Server::start_on(TestHsm::new(), "", "vendor = \"generic\"\ncreate_root_key = true").await;
    let mut c = server.client().await;
    create_key(&mut c).await;
    server.stop();
    let out = pkcs11_tool_output(
        &server.hsm,
        &["--type", "secrkey", "--id", DEFAULT_ROOT_KEY_ID, "--set-id", "01"],
    );
    assert!(
        !out.status.success(),
        "the root key's CKA_ID could be changed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The root key the server creates encrypts and decrypts and nothing else: PKCS#11 leaves
/// CKA_SIGN and CKA_VERIFY to the token's defaults (TRUE on SoftHSM2 and hsm-sim), which would let
/// any session use the root key as an HMAC key.
#[tokio::test]
async fn a_created_root_key_can_only_encrypt_and_decrypt() {
    let mut server = Server::start_on(TestHsm::new(), "", "").await;
    server.stop();
    let out = pkcs11_tool_output(
        &server.hsm,
        &["--list-objects", "--type", "secrkey", "--id", DEFAULT_ROOT_KEY_ID],
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let usage = listing
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage:"))
        .unwrap_or_else(|| panic!("no usage line: {listing}"))
        .trim();
    assert_eq!(usage, "encrypt, decrypt", "{listing}");
}

/// With the `gcm_iv_from_hsm` quirk (hsm.vendor = "cloudhsm") the HSM must write the IV. SoftHSM2
/// and hsm-sim use the caller's instead, which is left all zeros: a module that does that would
/// seal every material under one IV. The wrap is refused and nothing is stored.
#[tokio::test]
async fn material_is_never_sealed_under_an_iv_the_hsm_did_not_generate() {
    let server = Server::start_on(TestHsm::new(), "", "vendor = \"cloudhsm\"\ncreate_root_key = true").await;
    let mut c = server.client().await;
    expect_err(
        c.create_key(pb::CreateKeyRequest::default()).await,
        "KMSInternalException",
    );
    let listed = c.list_keys(pb::ListKeysRequest::default()).await.unwrap().into_inner();
    assert!(listed.keys.is_empty(), "{:?}", listed.keys);
}
