//! Durability: restarts, kill -9, the deletion scheduler across restarts, and root key checks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kms::proto as pb;

use crate::common::*;

fn encrypt_req(key_id: &str, plaintext: &[u8]) -> pb::EncryptRequest {
    pb::EncryptRequest {
        key_id: key_id.into(),
        plaintext: plaintext.to_vec(),
        ..Default::default()
    }
}

fn decrypt_req(blob: Vec<u8>) -> pb::DecryptRequest {
    pb::DecryptRequest {
        ciphertext_blob: blob,
        ..Default::default()
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let k = create_key(&mut c).await;
        let alias = format!("alias/k{i}");
        c.create_alias(pb::CreateAliasRequest {
            alias_name: alias,
            target_key_id: k.key_id.clone(),
        })
        .await
        .unwrap();
        let tag = pb::Tag {
            tag_key: "n".into(),
            tag_value: i.to_string(),
        };
        c.tag_resource(pb::TagResourceRequest {
            key_id: k.key_id.clone(),
            tags: vec![tag],
        })
        .await
        .unwrap();
        let blob = c
            .encrypt(encrypt_req(&k.key_id, b"payload"))
            .await
            .unwrap()
            .into_inner()
            .ciphertext_blob;
        keys.push((k, blob));
    }
    c.disable_key(pb::DisableKeyRequest {
        key_id: keys[0].0.key_id.clone(),
    })
    .await
    .unwrap();
    drop(c);
    server.kill();
    server.start_again().await;

    let mut c = server.client().await;
    for (i, (k, blob)) in keys.iter().enumerate() {
        let d = c
            .describe_key(pb::DescribeKeyRequest {
                key_id: format!("alias/k{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.key_metadata.unwrap().key_id, k.key_id);
        let tags = c
            .list_resource_tags(pb::ListResourceTagsRequest {
                key_id: k.key_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tags;
        assert_eq!(
            tags,
            vec![pb::Tag {
                tag_key: "n".into(),
                tag_value: i.to_string()
            }]
        );
        let out = c.decrypt(decrypt_req(blob.clone())).await;
        if i == 0 {
            expect_err(out, "DisabledException");
        } else {
            assert_eq!(out.unwrap().into_inner().plaintext, b"payload");
        }
    }
}

#[tokio::test]
async fn deletion_destroys_material_when_the_window_ends_even_across_restarts() {
    let mut server = Server::start_with("[deletion]\ncheck_interval_seconds = 1").await;
    let mut c = server.client().await;
    let doomed = create_key(&mut c).await;
    let kept = create_key(&mut c).await;
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/doomed".into(),
        target_key_id: doomed.key_id.clone(),
    })
    .await
    .unwrap();
    let blob = c
        .encrypt(encrypt_req(&doomed.key_id, b"gone soon"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let r = c
        .schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
            key_id: doomed.key_id.clone(),
            pending_window_in_days: Some(7),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.key_state, "PendingDeletion");
    drop(c);
    server.stop();

    // Seven days pass while the server is down.
    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    let n = db
        .execute("UPDATE keys SET deletion_date = 1 WHERE key_id = ?1", [&doomed.key_id])
        .unwrap();
    assert_eq!(n, 1);
    drop(db);

    server.start_again().await;
    let mut c = server.client().await;
    let mut gone = false;
    for _ in 0..200 {
        let d = c
            .describe_key(pb::DescribeKeyRequest {
                key_id: doomed.key_id.clone(),
                ..Default::default()
            })
            .await;
        if d.is_err() {
            expect_err(d, "NotFoundException");
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the key was not deleted after its window ended");
    expect_err(c.decrypt(decrypt_req(blob)).await, "InvalidCiphertextException");
    expect_err(
        c.describe_key(pb::DescribeKeyRequest {
            key_id: "alias/doomed".into(),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );
    c.describe_key(pb::DescribeKeyRequest {
        key_id: kept.key_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(c);
    server.stop();

    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    let count = |table: &str| -> i64 {
        db.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE key_id = ?1"),
            [&doomed.key_id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(count("materials"), 0, "wrapped material must be gone");
    assert_eq!(count("keys"), 0);
    let audit = server.audit_text();
    assert!(audit
        .lines()
        .any(|l| l.contains("\"DeleteKey\"") && l.contains(&doomed.key_id)));
    let to_audit: i64 = db
        .query_row("SELECT COUNT(*) FROM deletions_to_audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(to_audit, 0, "an audited deletion is no longer listed");
}

/// The process dies after a deletion committed but before its DeleteKey record was written: the
/// store still lists the deletion, and the first pass after the restart writes the record.
#[tokio::test]
async fn a_deletion_whose_audit_record_was_lost_is_audited_at_the_next_start() {
    let mut server = Server::start().await;
    server.stop();
    let gone = "0a9e8d7c-0000-4000-8000-000000000001";
    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute(
        "INSERT INTO deletions_to_audit (key_id, deleted) VALUES (?1, 1)",
        [gone],
    )
    .unwrap();
    server.start_again().await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server
        .audit_records()
        .1
        .iter()
        .any(|r| r["operation"] == "DeleteKey" && r["key_arn"].as_str().is_some_and(|a| a.ends_with(gone)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no DeleteKey record 20 s after the start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed: i64 = db
        .query_row("SELECT COUNT(*) FROM deletions_to_audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(listed, 0, "the deletion is forgotten once audited");
    let (_, records) = server.audit_records();
    let record = records.iter().find(|r| r["operation"] == "DeleteKey").unwrap();
    assert_eq!(
        record["time"], "1970-01-01T00:00:01.000Z",
        "the deletion's time, not the record's"
    );
}

/// A store that lost a key's current material (a partial restore) is the server's fault, not the
/// caller's: Encrypt and GenerateDataKey get KMSInternalException, never InvalidCiphertext, which
/// AWS does not return for them. A ciphertext naming material that never existed stays
/// InvalidCiphertextException.
#[tokio::test]
async fn a_key_whose_current_material_is_missing_is_an_internal_error() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let damaged = create_key(&mut c).await;
    let intact = create_key(&mut c).await;
    drop(c);
    server.stop();
    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute("DELETE FROM materials WHERE key_id = ?1", [&damaged.key_id])
        .unwrap();
    server.start_again().await;
    let mut c = server.client().await;

    let msg = expect_err(
        c.encrypt(encrypt_req(&damaged.key_id, b"x")).await,
        "KMSInternalException",
    );
    assert!(msg.contains("current key material is missing"), "{msg}");
    expect_err(c.generate_data_key(gdk(&damaged.key_id)).await, "KMSInternalException");

    // Material 2 of a key that has only material 1: the ciphertext is at fault.
    let blob = c
        .encrypt(encrypt_req(&intact.key_id, b"x"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let mut forged = blob.clone();
    let material_at = 1 + 16; // version | key id | material id (big-endian u32)
    forged[material_at..material_at + 4].copy_from_slice(&2u32.to_be_bytes());
    expect_err(c.decrypt(decrypt_req(forged)).await, "InvalidCiphertextException");
    c.decrypt(decrypt_req(blob)).await.unwrap();
}

/// A state change whose audit record can't be written is not made: its `Started` record must be
/// durable first. The audit log is pointed at /dev/full (every write: ENOSPC) for one run.
#[tokio::test]
async fn a_state_change_the_audit_trail_cannot_take_is_not_made() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    server.stop();
    let log = server.data_dir().join("audit.log");
    let kept = server.data_dir().join("audit.log.kept");
    std::fs::rename(&log, &kept).unwrap();
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    server.restart().await;
    let mut c = server.client().await;
    let refused = expect_err(
        c.disable_key(pb::DisableKeyRequest {
            key_id: key.key_id.clone(),
        })
        .await,
        "KMSInternalException",
    );
    assert!(refused.contains("audit"), "{refused}");
    assert!(
        !refused.contains("No space"),
        "the OS error stays in the server's log: {refused}"
    );
    expect_err(
        c.create_key(pb::CreateKeyRequest::default()).await,
        "KMSInternalException",
    );

    server.stop();
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&kept, &log).unwrap();
    server.restart().await;
    let mut c = server.client().await;
    assert_eq!(key_count(&mut c).await, 1, "no key was created");
    let meta = describe(&mut c, &key.key_id).await;
    assert_eq!(meta.key_state, "Enabled", "the key was not disabled");

    // With the trail back, a change is recorded twice: Started before it, Success after.
    c.disable_key(pb::DisableKeyRequest {
        key_id: key.key_id.clone(),
    })
    .await
    .unwrap();
    let (_, records) = server.audit_records();
    let disables: Vec<_> = records.iter().filter(|r| r["operation"] == "DisableKey").collect();
    let outcomes: Vec<_> = disables.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["Started", "Success"]);
    assert_eq!(disables[0]["request_id"], disables[1]["request_id"]);
    assert_eq!(disables[0]["key_arn"], disables[1]["key_arn"]);
}

#[tokio::test]
async fn a_missing_root_key_with_keys_in_the_store_refuses_to_start() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    create_key(&mut c).await;
    drop(c);
    server.stop();
    // Point the same data directory at a fresh, empty token: the old root key is gone.
    server.hsm = TestHsm::new();
    let out = server.exit_status_of_start();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no root key"), "stderr: {stderr}");
    assert!(!stderr.contains(PIN), "the PIN must never be printed");
}

/// A start that fails at the HSM (here a refused PIN) leaves the store as it found it: a store an
/// older build wrote is migrated only once the HSM is open, so that build can still open it.
/// Before, the migration was committed first, and rolling back after a failed upgrade was refused.
#[tokio::test]
async fn a_start_that_fails_at_the_hsm_leaves_the_store_unmigrated() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    create_key(&mut c).await;
    drop(c);
    server.stop();
    let db = server.data_dir().join("kms.db");
    let version = || -> i32 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let older = version() - 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", older)
        .unwrap();
    let mut child = server
        .serve_command()
        .env("KMS_TEST_PIN", "not-the-pin")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refused the configured PIN"), "{stderr}");
    assert_eq!(version(), older, "the store was migrated by a start that failed");
}

/// On a hardware HSM (CloudHSM, or any other than SoftHSM2 and hsm-sim) a missing root key is not
/// created unless `hsm.create_root_key = true` says so, even with an empty store: a new node with a
/// mistyped `root_key_id` must not make a second root key on the production HSM.
#[tokio::test]
async fn a_hardware_hsm_root_key_is_created_only_when_asked() {
    let mut server = Server::start().await;
    server.stop();
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    for vendor in ["generic", "cloudhsm"] {
        server.hsm = TestHsm::new();
        let with_vendor = config.replacen("[hsm]\n", &format!("[hsm]\nvendor = {vendor:?}\n"), 1);
        assert_ne!(with_vendor, config);
        std::fs::write(server.config_path(), with_vendor).unwrap();
        let out = server.output_of_start_with(&[]);
        assert!(!out.status.success(), "{vendor}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no root key") && stderr.contains("hsm.create_root_key = true"),
            "{vendor}: {stderr}"
        );
    }
    server.hsm = TestHsm::new();
    server.extra_hsm = "vendor = \"generic\"\ncreate_root_key = true".into();
    server.start_again().await;
    let mut c = server.client().await;
    create_key(&mut c).await;
}

#[tokio::test]
async fn an_ambiguous_root_key_refuses_to_start() {
    let mut server = Server::start().await;
    drop(server.client().await);
    server.stop();
    // A second secret key with the root key's CKA_ID makes the lookup ambiguous.
    let out = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            server.hsm.module.to_str().unwrap(),
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
        ])
        .args([
            "--keygen",
            "--key-type",
            "AES:32",
            "--id",
            "6b6d732d726f6f742d7631",
            "--label",
            "impostor",
        ])
        .envs(server.hsm.env.iter().cloned())
        .output()
        .expect("pkcs11-tool must be installed (apt-get install opensc)");
    assert!(
        out.status.success(),
        "pkcs11-tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.exit_status_of_start();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ambiguous"), "stderr: {stderr}");
}

#[tokio::test]
async fn material_cache_off_still_works_through_the_hsm() {
    let server = Server::start_with("[cache]\nmaterial_ttl_seconds = 0").await;
    let mut c = server.client().await;
    let k = create_key(&mut c).await;
    let ctx: HashMap<String, String> = [("a".to_string(), "b".to_string())].into();
    for _ in 0..3 {
        let dk = c
            .generate_data_key(pb::GenerateDataKeyRequest {
                key_id: k.key_id.clone(),
                number_of_bytes: Some(64),
                encryption_context: ctx.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let out = c
            .decrypt(pb::DecryptRequest {
                ciphertext_blob: dk.ciphertext_blob,
                encryption_context: ctx.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.plaintext, dk.plaintext);
    }
}

#[tokio::test]
async fn keys_from_a_store_made_before_key_policies_have_the_default_policy() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    drop(c);
    server.stop();
    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    assert_eq!(
        db.execute("DELETE FROM key_policies WHERE key_id = ?1", [&key.key_id])
            .unwrap(),
        1
    );
    drop(db);

    server.start_again().await;
    let mut c = server.client().await;
    let req = pb::GenerateDataKeyRequest {
        key_id: key.key_id.clone(),
        number_of_bytes: Some(16),
        ..Default::default()
    };
    c.generate_data_key(req).await.unwrap();
    let policy = c
        .get_key_policy(pb::GetKeyPolicyRequest {
            key_id: key.key_id.clone(),
            policy_name: None,
        })
        .await
        .unwrap()
        .into_inner()
        .policy;
    assert!(
        policy.contains("Enable IAM User Permissions"),
        "default policy expected, got {policy}"
    );
}

/// A second server on a data directory in use refuses to start, and says why: it would serve keys
/// from caches the first one's changes never invalidate.
#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let mut server = Server::start().await;
    let mut second = server.serve_command();
    second
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = second.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a second server started on a data directory in use");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("another kms server is using the data directory"),
        "{stderr}"
    );
    // The first one is unaffected, and once it is gone the directory can be used again.
    let mut c = server.client().await;
    create_key(&mut c).await;
    server.restart().await;
}

/// A deletion whose DeleteKey record is written but which the store can't forget (a failing or
/// locked database) is recorded once, not once per deletion pass.
#[tokio::test]
async fn a_deletion_the_store_cannot_forget_is_audited_once() {
    let server = Server::start_with("[deletion]\ncheck_interval_seconds = 1").await;
    let mut c = server.client().await;
    let doomed = create_key(&mut c).await;
    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: doomed.key_id.clone(),
        pending_window_in_days: Some(7),
    })
    .await
    .unwrap();
    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER keep_unaudited BEFORE DELETE ON deletions_to_audit BEGIN SELECT RAISE(FAIL, 'test'); END;",
    )
    .unwrap();
    db.execute("UPDATE keys SET deletion_date = 1 WHERE key_id = ?1", [&doomed.key_id])
        .unwrap();
    let deletions = || {
        let (_, records) = server.audit_records();
        records
            .iter()
            .filter(|r| {
                r["operation"] == "DeleteKey" && r["key_arn"].as_str().is_some_and(|a| a.ends_with(&doomed.key_id))
            })
            .count()
    };
    let unaudited = || -> i64 {
        db.query_row("SELECT count(*) FROM deletions_to_audit", [], |r| r.get(0))
            .unwrap()
    };
    // The first pass records the deletion and fails to forget it; the next ones fail again.
    let waited = std::time::Instant::now();
    while deletions() == 0 && waited.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(deletions(), 1, "the first pass recorded the deletion");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    db.execute_batch("DROP TRIGGER keep_unaudited").unwrap();
    let waited = std::time::Instant::now();
    while unaudited() != 0 && waited.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(unaudited(), 0, "the deletion was forgotten once the store allowed it");
    assert_eq!(deletions(), 1);
}
