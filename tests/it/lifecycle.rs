use std::collections::HashMap;

use kms::proto as pb;

use crate::common::*;

#[tokio::test]
async fn create_generate_decrypt_restart_decrypt() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    assert_eq!(key.key_state, "Enabled");
    assert_eq!(key.key_spec, "SYMMETRIC_DEFAULT");
    assert!(key.arn.ends_with(&key.key_id));

    let ctx: HashMap<String, String> = [("bucket".to_string(), "photos".to_string())].into();
    let dk = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: key.key_id.clone(),
            key_spec: Some("AES_256".into()),
            encryption_context: ctx.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dk.plaintext.len(), 32);
    assert_eq!(dk.key_id, key.arn);

    let decrypt = |ctx: HashMap<String, String>, blob: Vec<u8>| pb::DecryptRequest {
        ciphertext_blob: blob,
        encryption_context: ctx,
        ..Default::default()
    };
    let out = c
        .decrypt(decrypt(ctx.clone(), dk.ciphertext_blob.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.plaintext, dk.plaintext);
    assert_eq!(out.key_id, key.arn);

    server.restart().await;
    let mut c = server.client().await;
    let out = c
        .decrypt(decrypt(ctx, dk.ciphertext_blob.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        out.plaintext, dk.plaintext,
        "a restart must still decrypt old ciphertexts"
    );
    expect_err(
        c.decrypt(decrypt(HashMap::new(), dk.ciphertext_blob)).await,
        "InvalidCiphertextException",
    );
}

/// A client that gives up on a DisableKey while its store write waits for the database lock (a
/// deadline, a reset stream): the change still lands once the lock is free, and so does its audit
/// record. A key change must never be left without a trace.
#[tokio::test]
async fn a_change_the_client_gave_up_on_is_still_audited() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;

    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap(); // the server's write waits (busy_timeout)
    let disable = c.disable_key(pb::DisableKeyRequest {
        key_id: key.key_id.clone(),
    });
    // Long enough for the server to have read the request, well inside its 5 s wait for the lock.
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(1500), disable).await;
    assert!(gave_up.is_err(), "the write should still be waiting for the lock");
    db.execute_batch("COMMIT").unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (state, audited) = disabled_and_audited(&server, &mut c, &key.key_id).await;
        if state == "Disabled" && audited {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "20 s after the lock was released: key {state}, DisableKey audited: {audited}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// SIGTERM while a DisableKey waits for the database lock, which is released only after the
/// server's 3 s grace for open connections: the server finishes the change and writes its audit
/// record before it exits.
#[tokio::test]
async fn a_stopping_server_finishes_and_audits_changes_under_way() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;

    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let disable = tokio::spawn({
        let mut c = c.clone();
        let key_id = key.key_id.clone();
        async move { c.disable_key(pb::DisableKeyRequest { key_id }).await }
    });
    // The `Started` record is made durable just before the store write that waits for the lock:
    // once it is there, the change is under way (a fixed pause could let SIGTERM come first).
    let waited = std::time::Instant::now();
    while !server
        .audit_records()
        .1
        .iter()
        .any(|r| r["operation"] == "DisableKey" && r["outcome"] == "Started")
    {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "no DisableKey under way in 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.sigterm();
    // Past the 3 s grace, and 1.7 s inside the write's 5 s wait for the lock.
    tokio::time::sleep(std::time::Duration::from_millis(3300)).await;
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    let _ = disable.await;
    server.stop(); // waits for the exit

    server.start_again().await;
    let mut c = server.client().await;
    let (state, audited) = disabled_and_audited(&server, &mut c, &key.key_id).await;
    assert_eq!(
        (state.as_str(), audited),
        ("Disabled", true),
        "the change landed; was it audited?"
    );
}

/// SIGTERM while a read waits on a slow HSM, within `hsm.timeout_ms` (5 s) but past the 3 s the
/// server gives open connections: the server waits for it, so the key's use in the HSM is
/// answered and audited rather than cut off.
#[tokio::test]
async fn a_stopping_server_lets_a_read_waiting_on_the_hsm_finish() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let mut server = Server::start_on(TestHsm::hsm_sim(), cache_off, "").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    // The unwrap calls C_Decrypt twice (cryptoki asks for the output length first): 4 s in the
    // HSM, within its 5 s timeout.
    let slow = format!(
        "latency_ms = 2000\nfunctions = [\"C_Decrypt\"]\nrecord = {:?}\n",
        calls.display().to_string()
    );
    server.set_faults(&slow).await;
    let read = tokio::spawn({
        let (mut c, key_id) = (c.clone(), key.key_id.clone());
        async move { c.generate_data_key(gdk(&key_id)).await }
    });
    let waited = std::time::Instant::now();
    while recorded_calls(&calls, "C_Decrypt") == 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "no C_Decrypt in 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.sigterm();
    let answered = read.await.unwrap();
    answered.expect("the read waiting on the HSM was cut off at shutdown");

    server.stop();
    let (_, records) = server.audit_records();
    let audited = records
        .iter()
        .any(|r| r["operation"] == "GenerateDataKey" && r["outcome"] == "Success");
    assert!(audited, "no record of the read");
}

/// A client that keeps its connection open, idle, doesn't hold a stopping server past its 3 s
/// grace: the longer wait is for HSM calls under way (with hsm.timeout_ms at 5 s it could be 11 s).
#[tokio::test]
async fn an_idle_client_does_not_hold_a_stopping_server() {
    let mut server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    let mut c = server.client().await;
    create_key(&mut c).await; // the connection stays open
    let status = server.stop_within(std::time::Duration::from_secs(6));
    let status = status.expect("still running 6 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(c);
}

/// Health Watch streams need no credentials and last as long as their client keeps them: one
/// address may hold two per connection it may open (here 4 connections: 8 watches); the next is
/// refused with ThrottlingException (RESOURCE_EXHAUSTED), and one ended makes room.
#[tokio::test]
async fn health_watches_from_one_address_are_capped() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let server = Server::start_with("[limits]\nmax_connections_per_ip = 4\n").await;
    let mut health = HealthClient::new(plain_channel(&server).await);
    let request = || HealthCheckRequest { service: String::new() };
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(
            health
                .watch(request())
                .await
                .expect("a watch under the cap refused")
                .into_inner(),
        );
    }
    let refused = health.watch(request()).await.expect_err("a 9th watch from one address");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert_eq!(error_type(&refused), "ThrottlingException");
    drop(open.pop());
    let waited = std::time::Instant::now();
    while health.watch(request()).await.is_err() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "an ended watch's place not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A stopping server tells health watchers NOT_SERVING, then ends their streams with
/// UNAVAILABLE, instead of leaving them open until it exits.
#[tokio::test]
async fn a_stopping_server_tells_health_watchers_and_ends_their_streams() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let server = Server::start().await;
    let mut updates = watch_health(&server).await;
    server.sigterm();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), updates.message()).await;
    let next = next.expect("no update within 10 s of SIGTERM").unwrap();
    assert_eq!(next.expect("no NOT_SERVING").status(), ServingStatus::NotServing);
    let end = updates.message().await.expect_err("the stream ended without a status");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
    assert_eq!(end.message(), "The server is stopping");
}

/// A SIGTERM while a slow HSM is still opening stops the server there: exit 0, soon, without
/// ever listening. Before, SIGTERM was caught only once the server served: during start-up its
/// default action killed the process, and one sent just after `kms listening on` could be lost.
#[tokio::test]
async fn a_sigterm_during_a_slow_start_stops_the_server_cleanly() {
    let mut server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    server.stop();
    let faults = server.hsm.dir.path().join("tokens").join("faults.toml");
    let logins = server.hsm.dir.path().join("logins.txt");
    let rule = format!(
        "latency_ms = 10000\nfunctions = [\"C_Login\"]\nrecord = {:?}\n",
        logins.display().to_string()
    );
    std::fs::write(&faults, rule).unwrap();
    let mut child = KillOnDrop(server.spawn_process());
    wait_for_a_login(&logins).await;
    let sent = std::time::Instant::now();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(8),
            "still running 8 s after SIGTERM: it waited for the 10 s HSM login"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "not a clean stop: {status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(!stdout.contains("kms listening on"), "it served: {stdout}");
}

/// The key's state, and whether the audit log has a successful DisableKey.
async fn disabled_and_audited(server: &Server, c: &mut Client, key_id: &str) -> (String, bool) {
    let state = describe(c, key_id).await.key_state;
    let audited = server
        .audit_records()
        .1
        .iter()
        .any(|r| r["operation"] == "DisableKey" && r["outcome"] == "Success");
    (state, audited)
}

/// A key whose waiting period has ended is destroyed by the next deletion pass (up to
/// `deletion.check_interval_seconds` later); CancelKeyDeletion in between must not save it.
#[tokio::test]
async fn a_key_past_its_deletion_date_cannot_be_cancelled() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: key.key_id.clone(),
        pending_window_in_days: Some(7),
    })
    .await
    .unwrap();
    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute("UPDATE keys SET deletion_date = 1 WHERE key_id = ?1", [&key.key_id])
        .unwrap();
    let cancel = c
        .cancel_key_deletion(pb::CancelKeyDeletionRequest {
            key_id: key.key_id.clone(),
        })
        .await;
    let message = expect_err(cancel, "KMSInvalidStateException");
    assert!(message.contains("waiting period has ended"), "{message}");
}
