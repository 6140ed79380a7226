//! Custody: nothing secret reaches the disk or the audit trail.

use std::collections::HashMap;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use kms::keys::context::EncryptionContext;
use kms::keys::{ciphertext, KeySpec};
use kms::ops::Material;
use kms::proto as pb;
use ring::rand::SystemRandom;

use crate::common::*;

/// Would `candidate` as a symmetric key's material open `blob` (a ciphertext with an empty
/// context)? Opened by the service's own code, so it follows the blob's version (version 2 seals
/// each blob under a key derived from the material).
fn opens(candidate: &[u8], blob: &[u8]) -> bool {
    let Ok(material) = Material::from_plain(KeySpec::SymmetricDefault, candidate) else {
        return false;
    };
    let parsed = ciphertext::parse(blob).unwrap();
    material
        .symmetric()
        .unwrap()
        .open(&parsed, &EncryptionContext::default())
        .is_ok()
}

#[test]
fn the_material_detector_recognises_a_real_key() {
    // Positive controls for the scan below: blobs sealed under a known key are detected, both as
    // the service seals them now (version 2) and as version 1 did (the material used directly).
    let key = [7u8; 32];
    let sealed = Material::from_plain(KeySpec::SymmetricDefault, &key).unwrap();
    let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let v2 = sealed
        .symmetric()
        .unwrap()
        .seal(&SystemRandom::new(), id, 1, &EncryptionContext::default(), b"data key")
        .unwrap();
    let mut v1 = ciphertext::header(id, 1).unwrap().to_vec();
    v1[0] = ciphertext::VERSION_1;
    let nonce = [3u8; 12];
    let mut body = b"data key".to_vec();
    let tag = Aes256Gcm::new_from_slice(&key)
        .unwrap()
        .encrypt_in_place_detached(&Nonce::from(nonce), &v1, &mut body)
        .unwrap();
    v1.extend_from_slice(&nonce);
    v1.extend_from_slice(&body);
    v1.extend_from_slice(&tag);
    for blob in [&v2, &v1] {
        assert!(opens(&key, blob));
        assert!(!opens(&[8u8; 32], blob));
    }
}

#[tokio::test]
async fn no_data_key_plaintext_or_key_material_on_disk_or_in_the_audit_log() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    let mut probes: Vec<Vec<u8>> = Vec::new(); // one blob per key, to test candidate materials against
    let context_value = "context-value-that-must-not-be-logged";
    let ctx: HashMap<String, String> = [("tenant".to_string(), context_value.to_string())].into();
    for _ in 0..3 {
        let k = create_key(&mut c).await;
        for _ in 0..5 {
            let dk = c
                .generate_data_key(pb::GenerateDataKeyRequest {
                    key_id: k.key_id.clone(),
                    key_spec: Some("AES_256".into()),
                    encryption_context: ctx.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            secrets.push(dk.plaintext);
        }
        let plaintext = format!("customer secret for {}", k.key_id).into_bytes();
        let blob = c
            .encrypt(pb::EncryptRequest {
                key_id: k.key_id.clone(),
                plaintext: plaintext.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .ciphertext_blob;
        let out = c
            .decrypt(pb::DecryptRequest {
                ciphertext_blob: blob.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(out.into_inner().plaintext, plaintext);
        secrets.push(plaintext);
        probes.push(blob);
    }
    let random = c
        .generate_random(pb::GenerateRandomRequest {
            number_of_bytes: Some(32),
        })
        .await
        .unwrap();
    secrets.push(random.into_inner().plaintext);
    drop(c);
    server.stop();

    let files = files_below(&server.data_dir());
    assert!(files.iter().any(|f| f.ends_with("kms.db")) && files.iter().any(|f| f.ends_with("audit.log")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret),
                "{} contains a plaintext the service handled",
                file.display()
            );
        }
        assert!(
            !contains(&bytes, context_value.as_bytes()),
            "{} contains an encryption context value",
            file.display()
        );
        // Key material: try every 32-byte window of the file as the key of each probe ciphertext.
        // The windows wholly inside trailing zeros (the audit log's preallocated padding) are all
        // the same window: it is tried once.
        let last = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        for window in bytes[..bytes.len().min(last + 32)].windows(32) {
            for probe in &probes {
                assert!(
                    !opens(window, probe),
                    "{} contains plaintext key material",
                    file.display()
                );
            }
        }
    }

    let audit = server.audit_text();
    let records: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // 3 CreateKey, 15 GenerateDataKey, 3 Encrypt, 3 Decrypt, 1 GenerateRandom: one record per
    // request, and one more (`Started`) before each change of state (the 3 CreateKey).
    assert_eq!(records.len(), 28);
    let started = records.iter().filter(|r| r["outcome"] == "Started");
    assert!(started.clone().count() == 3 && started.into_iter().all(|r| r["operation"] == "CreateKey"));
    let gdk = records.iter().find(|r| r["operation"] == "GenerateDataKey").unwrap();
    for field in ["time", "request_id", "principal", "source_ip", "key_arn", "outcome"] {
        assert!(gdk.get(field).is_some(), "audit record lacks {field}: {gdk}");
    }
    assert_eq!(gdk["encryption_context_keys"][0], "tenant");
    assert_eq!(gdk["outcome"], "Success");
}

#[tokio::test]
async fn failed_requests_are_audited_with_their_exception_name() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let bogus = pb::DescribeKeyRequest {
        key_id: "00000000-0000-4000-8000-000000000000".into(),
        ..Default::default()
    };
    expect_err(c.describe_key(bogus).await, "NotFoundException");
    drop(c);
    server.stop();
    let audit = server.audit_text();
    let record: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(record["operation"], "DescribeKey");
    assert_eq!(record["outcome"], "NotFoundException");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A server writes no core file (its memory holds unwrapped material and the PIN): its core-file
/// limit is 0, soft and hard, unless `core_dumps = true`, when it keeps the one it inherited.
#[tokio::test]
async fn the_server_forbids_core_files_unless_allowed() {
    let own = core_file_limit(std::process::id());
    if own == ["0", "0"] {
        // Root may raise a hard limit; without a limit to inherit the opt-out can't be told apart.
        let some = rustix::process::Rlimit {
            current: Some(1 << 20),
            maximum: Some(1 << 20),
        };
        rustix::process::setrlimit(rustix::process::Resource::Core, some)
            .expect("this test needs a core-file limit above 0 to tell the settings apart");
    }
    let own = core_file_limit(std::process::id());
    let server = Server::start().await;
    assert_eq!(core_file_limit(server.pid()), ["0", "0"]);
    let allowed = Server::start_with("core_dumps = true").await;
    assert_eq!(core_file_limit(allowed.pid()), own);
}

/// The soft and hard "Max core file size" of process `pid`, as /proc/PID/limits gives them
/// (readable whatever the process's dumpable flag).
fn core_file_limit(pid: u32) -> [String; 2] {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let mut fields = line["Max core file size".len()..].split_whitespace();
    [fields.next().unwrap().to_string(), fields.next().unwrap().to_string()]
}
