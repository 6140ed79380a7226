//! The default HSM: `kms serve` with no HSM configured uses the embedded hsm-sim.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kms::proto as pb;
use kms::proto::key_management_service_client::KeyManagementServiceClient;
use tonic::transport::Channel;

/// Starts `kms serve` with flags only (no config file, no PIN) and returns it with its address.
fn start(data_dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kms"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("HSM_SIM_CONF")
        .env_remove("KMS_HSM_PIN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.strip_prefix("kms listening on ") {
                    break a.to_string();
                }
            }
            _ => panic!("kms serve exited: {:?}", child.wait()),
        }
    };
    (child, addr)
}

/// The plaintext of `blob`, decrypted by the server `c` talks to.
async fn decrypted(c: &mut KeyManagementServiceClient<Channel>, blob: Vec<u8>) -> Vec<u8> {
    c.decrypt(pb::DecryptRequest {
        ciphertext_blob: blob,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .plaintext
}

/// Runs `kms serve` as `start` does, for a start-up that must fail: its output once it exited.
async fn refused_start(data_dir: &std::path::Path, extra_args: &[&str]) -> std::process::Output {
    let data = data_dir.to_path_buf();
    let extra: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
    let child = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kms"))
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(&extra)
            .env_remove("HSM_SIM_CONF")
            .env_remove("KMS_HSM_PIN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    })
    .await
    .unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the server did not stop")
    .unwrap()
}

/// Every file below `dir` with its content.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// `start` off the runtime's threads, and a client of the server it started.
async fn start_and_connect(data: &std::path::Path) -> (std::process::Child, KeyManagementServiceClient<Channel>) {
    let data = data.to_path_buf();
    let (child, addr) = tokio::task::spawn_blocking(move || start(&data)).await.unwrap();
    let c = KeyManagementServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (child, c)
}

#[tokio::test]
async fn serve_with_no_hsm_configured_uses_the_embedded_hsm_sim_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, mut c) = start_and_connect(&data).await;
    let key = c
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    let req = pb::GenerateDataKeyRequest {
        key_id: key.key_id,
        number_of_bytes: Some(32),
        ..Default::default()
    };
    let dk = c.generate_data_key(req).await.unwrap().into_inner();
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();

    // The token lives in the data directory, its PIN file is owner-only, and holds no secret in clear.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("hsm-user.pin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "PIN file must be owner-only");
    assert!(data.join("hsm").is_dir());

    let (mut child, mut c) = start_and_connect(&data).await;
    assert_eq!(decrypted(&mut c, dk.ciphertext_blob).await, dk.plaintext);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A second server on a data directory in use stops before it touches the embedded HSM's files
/// (its configuration, its token, its PIN files).
#[tokio::test]
async fn a_second_server_leaves_the_embedded_token_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut first, _) = tokio::task::spawn_blocking({
        let data = data.clone();
        move || start(&data)
    })
    .await
    .unwrap();
    let conf = data.join("hsm-sim.toml");
    let written = std::fs::metadata(&conf).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20)); // a rewrite would get a later mtime

    let out = refused_start(&data, &[]).await;
    let _ = first.kill();
    let _ = first.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("another kms server is using the data directory"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&conf).unwrap().modified().unwrap(),
        written,
        "the second server rewrote hsm-sim.toml"
    );
}

/// A damaged token.json stops the start-up with a message naming it; the token is not taken for
/// blank and re-initialised, so the root keys and the PIN files are all still there.
#[tokio::test]
async fn a_damaged_embedded_token_stops_the_start_up_and_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, mut c) = start_and_connect(&data).await;
    c.create_key(pb::CreateKeyRequest::default()).await.unwrap();
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();

    let meta = data.join("hsm").join("slot-0").join("token.json");
    std::fs::write(&meta, b"{").unwrap();
    let before = snapshot(&data.join("hsm"));
    let pins = [data.join("hsm-user.pin"), data.join("hsm-so.pin")].map(|p| std::fs::read(p).unwrap());
    assert!(
        before.iter().any(|(p, _)| p.parent().unwrap().ends_with("objects")),
        "no token objects to protect: {before:?}"
    );

    let out = refused_start(&data, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&meta.display().to_string()), "{stderr}");
    assert!(stderr.contains("is unusable"), "{stderr}");
    assert_eq!(snapshot(&data.join("hsm")), before, "the token files changed");
    let after = [data.join("hsm-user.pin"), data.join("hsm-so.pin")].map(|p| std::fs::read(p).unwrap());
    assert_eq!(after, pins, "the PIN files changed");
}

/// A token directory that is missing (a partial restore, an unmounted volume) does not cost the
/// PIN files: the new token made in its place takes the PINs already there, the start-up stops
/// (the store's keys are wrapped under a root key that token doesn't have), and once the old
/// directory is put back the keys work again. Before, new PINs overwrote the files, and the
/// restored token could no longer be logged in to.
#[tokio::test]
async fn a_missing_embedded_token_keeps_its_pin_files_and_can_be_restored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, mut c) = start_and_connect(&data).await;
    let key = c
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner();
    let key_id = key.key_metadata.unwrap().key_id;
    let blob = c
        .encrypt(pb::EncryptRequest {
            key_id: key_id.clone(),
            plaintext: b"kept".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();

    let pin_files = [data.join("hsm-user.pin"), data.join("hsm-so.pin")];
    let pins = pin_files.clone().map(|p| std::fs::read(p).unwrap());
    let (slot, aside) = (data.join("hsm").join("slot-0"), dir.path().join("slot-0.saved"));
    std::fs::rename(&slot, &aside).unwrap();

    let out = refused_start(&data, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no root key"), "{stderr}");
    let after = pin_files.clone().map(|p| std::fs::read(p).unwrap());
    assert_eq!(after, pins, "the PIN files changed");

    std::fs::remove_dir_all(&slot).unwrap();
    std::fs::rename(&aside, &slot).unwrap();
    let (mut child, mut c) = start_and_connect(&data).await;
    assert_eq!(decrypted(&mut c, blob).await, b"kept");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A PIN file left empty (a crash while it was first written) is written afresh when the token is
/// made; one holding something no PIN can be stops the start-up with a message naming it.
#[tokio::test]
async fn empty_pin_files_are_replaced_and_broken_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let pin_files = [data.join("hsm-user.pin"), data.join("hsm-so.pin")];
    for f in &pin_files {
        std::fs::write(f, b"").unwrap();
    }
    let (mut child, mut c) = start_and_connect(&data).await;
    c.create_key(pb::CreateKeyRequest::default()).await.unwrap();
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();
    for f in &pin_files {
        assert!(std::fs::read(f).unwrap().len() >= 4, "{} was not written", f.display());
    }

    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("hsm-so.pin"), b"ab").unwrap();
    let out = refused_start(&other, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("hsm-so.pin") && stderr.contains("does not hold a PIN"),
        "{stderr}"
    );
}

/// A token whose C_InitToken ran but whose C_InitPIN did not (a crash between the two) is
/// finished at the next start with the PINs kms wrote before it began, instead of refusing every
/// start with a login failure. The half-made token is made here with pkcs11-tool.
#[tokio::test]
async fn a_half_initialised_embedded_token_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = data.join("hsm");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = data.join("hsm-sim.toml");
    std::fs::write(&conf, format!("token_dir = {:?}\n", tokens.display().to_string())).unwrap();
    let module = std::path::Path::new(env!("CARGO_BIN_EXE_kms")).with_file_name("libhsm_sim.so");
    let so_pin = "0123456789abcdef0123456789abcdef";
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&module)
        .args(["--init-token", "--label", "kms", "--so-pin", so_pin])
        .env("HSM_SIM_CONF", &conf)
        .output()
        .expect("pkcs11-tool (opensc) must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(data.join("hsm-so.pin"), so_pin).unwrap();
    std::fs::write(data.join("hsm-user.pin"), "fedcba9876543210fedcba9876543210").unwrap();

    let (mut child, mut c) = start_and_connect(&data).await;
    let key = c
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner();
    let key_id = key.key_metadata.unwrap().key_id;
    c.generate_data_key(pb::GenerateDataKeyRequest {
        key_id,
        key_spec: Some("AES_256".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A changed `hsm.token_label` finds no token of that name: the start stops, naming the token
/// there and the setting to fix, and leaves the token and its PIN files alone.
#[tokio::test]
async fn a_changed_token_label_stops_the_start_and_keeps_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, mut c) = start_and_connect(&data).await;
    let key_id = crate::common::create_key(&mut c).await.key_id;
    drop(c);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = snapshot(&data.join("hsm"));
    let pins = [data.join("hsm-user.pin"), data.join("hsm-so.pin")].map(|p| std::fs::read(p).unwrap());

    let config = dir.path().join("relabelled.toml");
    std::fs::write(&config, "[hsm]\ntoken_label = \"renamed\"\n").unwrap();
    let out = refused_start(&data, &["--config", config.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("holds the token \"kms\", not \"renamed\": set hsm.token_label back"),
        "{stderr}"
    );
    assert_eq!(snapshot(&data.join("hsm")), before, "the token files changed");
    let after = [data.join("hsm-user.pin"), data.join("hsm-so.pin")].map(|p| std::fs::read(p).unwrap());
    assert_eq!(after, pins, "the PIN files changed");

    // The token is still the one the key was wrapped under.
    let (mut child, mut c) = start_and_connect(&data).await;
    c.generate_data_key(pb::GenerateDataKeyRequest {
        key_id,
        number_of_bytes: Some(32),
        ..Default::default()
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
