//! HSM failures, injected through hsm-sim's control file while the server runs: device errors are
//! retried with backoff, then refused with KeyUnavailableException or DependencyTimeoutException,
//! never answered wrongly. These always run on hsm-sim, whatever KMS_TEST_HSM says.

use std::time::{Duration, Instant};

use kms::proto as pb;

use crate::common::*;

#[tokio::test]
async fn an_unplugged_hsm_is_refused_then_recovered_from() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "retry_attempts = 3").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let dk = c.generate_data_key(gdk(&key.key_id)).await.unwrap().into_inner();

    server.set_faults("unplugged = true\n").await;
    let started = Instant::now();
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KeyUnavailableException");
    let decrypt = pb::DecryptRequest {
        ciphertext_blob: dk.ciphertext_blob.clone(),
        ..Default::default()
    };
    expect_err(c.decrypt(decrypt.clone()).await, "KeyUnavailableException");
    assert!(started.elapsed() < Duration::from_secs(5), "retries must be bounded");

    server.set_faults("unplugged = false\n").await;
    let out = c.decrypt(decrypt).await.unwrap().into_inner();
    assert_eq!(
        out.plaintext, dk.plaintext,
        "after the HSM is back, the same answer as before"
    );
}

#[tokio::test]
async fn transient_device_errors_are_retried_and_persistent_ones_refused() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "retry_attempts = 3").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;

    // Two failures, three attempts: the caller never notices.
    server.set_faults("fail_next = 2\nerror = \"CKR_DEVICE_ERROR\"\n").await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();

    // Every call fails as CloudHSM does when throttled: refused after the last attempt.
    server
        .set_faults("error_rate = 1.0\nerror = \"CKR_FUNCTION_FAILED\"\n")
        .await;
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KeyUnavailableException");
    expect_err(
        c.generate_random(pb::GenerateRandomRequest {
            number_of_bytes: Some(8),
        })
        .await,
        "KeyUnavailableException",
    );

    server.set_faults("").await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

#[tokio::test]
async fn a_slow_hsm_gives_dependency_timeout() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "timeout_ms = 3000").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    server.set_faults("latency_ms = 30000\n").await;
    expect_err(
        c.generate_data_key(gdk(&key.key_id)).await,
        "DependencyTimeoutException",
    );
    server.set_faults("").await;
    // The slow call is still sleeping in the HSM; other calls must not wait behind it.
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// As many hung calls as there are sessions (an HSM that stopped answering): once they are past
/// the timeout they no longer hold the workers, so when the HSM answers again the next call is
/// served, not queued behind calls that may never return.
#[tokio::test]
async fn hung_hsm_calls_do_not_hold_up_the_calls_after_them() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "timeout_ms = 3000\nmax_sessions = 2").await;
    let c = server.client().await;
    let key = create_key(&mut c.clone()).await;
    server
        .set_faults("latency_ms = 60000\nfunctions = [\"C_Decrypt\"]\n")
        .await;
    let hung = futures_join_all((0..2).map(|_| {
        let (mut c, id) = (c.clone(), key.key_id.clone());
        async move { c.generate_data_key(gdk(&id)).await }
    }))
    .await;
    for r in hung {
        expect_err(r, "DependencyTimeoutException");
    }
    server.set_faults("").await;
    c.clone().generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// While a call hangs, its replacement worker opens a session of its own; once the hung call
/// returns, the pool keeps at most `max_sessions` idle and closes the rest, rather than holding
/// every session it ever opened (HSMs limit how many may be open).
#[tokio::test]
async fn sessions_past_max_sessions_are_closed_when_hung_calls_return() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "timeout_ms = 3000\nmax_sessions = 1").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    server
        .set_faults("latency_ms = 60000\nuntil_released = true\nfunctions = [\"C_Decrypt\"]\n")
        .await;
    expect_err(
        c.generate_data_key(gdk(&key.key_id)).await,
        "DependencyTimeoutException",
    );
    // On the replacement worker, with a new session (the first is held): no C_Decrypt.
    let random = pb::GenerateRandomRequest {
        number_of_bytes: Some(32),
    };
    c.generate_random(random).await.unwrap();
    // The hung call returns (released), and its session comes back to a full pool.
    let closes = server.hsm.dir.path().join("closes.txt");
    server
        .set_faults(&format!(
            "functions = [\"C_CloseSession\"]\nrecord = {:?}\n",
            closes.display().to_string()
        ))
        .await;
    let closed = || recorded_calls(&closes, "C_CloseSession");
    for _ in 0..200 {
        if closed() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(closed(), 1, "the session past max_sessions closed");
    c.generate_random(random).await.unwrap();
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    assert_eq!(closed(), 1, "the one kept is used");
}

#[tokio::test]
async fn cached_material_keeps_the_hot_path_off_the_hsm() {
    let server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let dk = c.generate_data_key(gdk(&key.key_id)).await.unwrap().into_inner();
    server.set_faults("unplugged = true\n").await;
    // With the material cached, GenerateDataKey and Decrypt need no HSM call at all.
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    let out = c
        .decrypt(pb::DecryptRequest {
            ciphertext_blob: dk.ciphertext_blob,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.plaintext, dk.plaintext);
    // Creating a key does need the HSM.
    expect_err(
        c.create_key(pb::CreateKeyRequest::default()).await,
        "KeyUnavailableException",
    );
}

/// A burst of requests on a key whose material is not cached yet (after a restart, or a TTL
/// expiry) makes one HSM unwrap between them, not one each. hsm-sim records every C_DecryptInit
/// that reaches it, and slows it so that the requests overlap.
#[tokio::test]
async fn a_burst_on_a_cold_key_unwraps_its_material_once() {
    let mut server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let dk = c.generate_data_key(gdk(&key.key_id)).await.unwrap().into_inner();
    server.restart().await;
    let c = server.client().await;

    let unwraps = server.hsm.dir.path().join("unwraps.txt");
    server
        .set_faults(&format!(
            "latency_ms = 300\nfunctions = [\"C_DecryptInit\"]\nrecord = {:?}\n",
            unwraps.display().to_string()
        ))
        .await;
    let answers = futures_join_all((0..16).map(|_| {
        let (mut c, blob) = (c.clone(), dk.ciphertext_blob.clone());
        async move {
            c.decrypt(pb::DecryptRequest {
                ciphertext_blob: blob,
                ..Default::default()
            })
            .await
        }
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.unwrap().into_inner().plaintext, dk.plaintext);
    }
    assert_eq!(recorded_calls(&unwraps, "C_DecryptInit"), 1, "one unwrap for the burst");
}

/// A disabled key's unwrapped material leaves memory with the DisableKey, not at its TTL: once the
/// key is enabled again, its next use unwraps in the HSM (hsm-sim records each C_DecryptInit).
#[tokio::test]
async fn disabling_a_key_drops_its_unwrapped_material() {
    let server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    let unwraps = server.hsm.dir.path().join("unwraps.txt");
    server
        .set_faults(&format!(
            "functions = [\"C_DecryptInit\"]\nrecord = {:?}\n",
            unwraps.display().to_string()
        ))
        .await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    assert_eq!(recorded_calls(&unwraps, "C_DecryptInit"), 0, "served from the cache");

    let id = || key.key_id.clone();
    c.disable_key(pb::DisableKeyRequest { key_id: id() }).await.unwrap();
    c.enable_key(pb::EnableKeyRequest { key_id: id() }).await.unwrap();
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    assert_eq!(
        recorded_calls(&unwraps, "C_DecryptInit"),
        1,
        "unwrapped again after the disable"
    );
}

/// Device errors under concurrency: one failing call drops the pooled sessions while others are
/// mid-call. Each session unwraps with its own copy of the root key, so the calls in flight finish
/// normally: every answer is a data key or, after the last retry, KeyUnavailableException, never
/// an internal error.
#[tokio::test]
async fn concurrent_device_errors_never_surface_as_internal_errors() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "retry_attempts = 4").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    server
        .set_faults("error_rate = 0.05\nerror = \"CKR_DEVICE_ERROR\"\n")
        .await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (mut c, key_id) = (c.clone(), key.key_id.clone());
            tokio::spawn(async move {
                let (mut answered, mut failures) = (0, vec![]);
                for _ in 0..25 {
                    match c.generate_data_key(gdk(&key_id)).await {
                        Ok(_) => answered += 1,
                        Err(status) => failures.push(error_type(&status)),
                    }
                }
                (answered, failures)
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        let (ok, failures) = task.await.unwrap();
        answered += ok;
        for failure in failures {
            assert_eq!(failure, "KeyUnavailableException");
        }
    }
    // Four attempts at 5% each: nearly every call is answered.
    assert!(answered >= 380, "only {answered} of 400 calls answered");

    // A failed unwrap drops the sessions; the new session's C_CopyObject fails too: both are device
    // errors, retried, and the caller never notices.
    let faults = "fail_next = 2\nerror = \"CKR_DEVICE_ERROR\"\nfunctions = [\"C_Decrypt\", \"C_CopyObject\"]\n";
    server.set_faults(faults).await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// CloudHSM answers CKR_FUNCTION_FAILED when throttled: the call is retried on another session,
/// and the other pooled sessions are kept (a device error drops them all). hsm-sim records the
/// C_OpenSession calls that follow.
#[tokio::test]
async fn throttling_drops_only_the_throttled_session() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "retry_attempts = 3").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    // Slow unwraps make concurrent requests take sessions of their own: several go back idle.
    server
        .set_faults("latency_ms = 100\nfunctions = [\"C_DecryptInit\"]\n")
        .await;
    let warmed = futures_join_all((0..6).map(|_| {
        let (mut c, key_id) = (c.clone(), key.key_id.clone());
        async move { c.generate_data_key(gdk(&key_id)).await }
    }))
    .await;
    assert!(warmed.iter().all(Result::is_ok));

    let opens = server.hsm.dir.path().join("opens.txt");
    let count = |func: &str| recorded_calls(&opens, func);
    for (error, dropped_all) in [("CKR_FUNCTION_FAILED", false), ("CKR_DEVICE_ERROR", true)] {
        let _ = std::fs::remove_file(&opens);
        server
            .set_faults(&format!(
                "fail_next = 1\nerror = {error:?}\nfunctions = [\"C_DecryptInit\", \"C_OpenSession\"]\nrecord = {:?}\n",
                opens.display().to_string()
            ))
            .await;
        for _ in 0..4 {
            c.generate_data_key(gdk(&key.key_id)).await.unwrap();
        }
        assert_eq!(count("C_DecryptInit"), 5, "{error}: one failed and retried");
        let new_sessions = count("C_OpenSession");
        if dropped_all {
            assert!(new_sessions >= 1, "{error}: the pool was dropped, sessions reopened");
        } else {
            assert_eq!(new_sessions, 0, "{error}: idle sessions were kept and used");
        }
    }
}

/// A device error while copying the root key is a device error (retried, then refused), not a
/// sign that the HSM can't copy keys: copies must not be turned off for good by it.
#[tokio::test]
async fn a_failing_root_key_copy_is_a_device_error_not_a_refusal() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let mut server = Server::start_on(TestHsm::hsm_sim(), cache_off, "retry_attempts = 2").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    // Restarted, the server has no pooled session yet: the next call must make a copy.
    server
        .set_faults("error_rate = 1.0\nerror = \"CKR_DEVICE_ERROR\"\nfunctions = [\"C_CopyObject\"]\n")
        .await;
    server.restart().await;
    let mut c = server.client().await;
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KeyUnavailableException");
    server.set_faults("").await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// The PIN was changed on the HSM while kms ran, then a failover closed every session, which logged
/// kms out: the next session must log in, and the HSM refuses the PIN. That refusal is a credential
/// failure: kms tries the PIN once, not on every request (CloudHSM locks a crypto user after 5 wrong
/// logins, for every application using it), logs it once, and refuses requests with
/// KeyUnavailableException until it is restarted with the right PIN. hsm-sim records every C_Login
/// that reaches it, so "once" is counted, not timed.
#[tokio::test]
async fn a_refused_pin_is_tried_once_not_by_every_request() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let mut server = Server::start_on(TestHsm::hsm_sim(), cache_off, "retry_attempts = 2").await;
    let log = server.restart_capturing_log().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();

    // The failover: every session is gone and the token logged kms out.
    server.set_faults("unplugged = true\n").await;
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KeyUnavailableException");

    // Back, but refusing the PIN kms has.
    let logins = server.hsm.dir.path().join("logins.txt");
    server
        .set_faults(&format!(
            "error_rate = 1.0\nerror = \"CKR_PIN_INCORRECT\"\nfunctions = [\"C_Login\"]\nrecord = {:?}\n",
            logins.display().to_string()
        ))
        .await;
    let c_logins = || recorded_calls(&logins, "C_Login");
    // At once, as requests come in after a failover: no idle session, each needs a new one.
    let answers = futures_join_all((0..5).map(|_| {
        let (mut c, key_id) = (c.clone(), key.key_id.clone());
        async move { c.generate_data_key(gdk(&key_id)).await }
    }))
    .await;
    let mut messages = vec![];
    for answer in answers {
        messages.push(expect_err(answer, "KeyUnavailableException"));
    }
    assert_eq!(c_logins(), 1, "concurrent requests tried the PIN once between them");
    // And one after another.
    for _ in 0..5 {
        messages.push(expect_err(
            c.generate_data_key(gdk(&key.key_id)).await,
            "KeyUnavailableException",
        ));
        messages.push(expect_err(
            c.generate_random(pb::GenerateRandomRequest {
                number_of_bytes: Some(8),
            })
            .await,
            "KeyUnavailableException",
        ));
    }
    assert_eq!(c_logins(), 1, "no request after the first refusal tried the PIN again");
    for m in &messages {
        assert!(m.contains("refused the configured PIN"), "{m}");
        assert!(m.contains("CKR_PIN_INCORRECT"), "{m}");
        assert!(!m.contains(PIN), "the PIN must never be returned: {m}");
    }

    // Once in the log, at error level, naming the return code, never the PIN.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = log.lock().unwrap().clone();
        if text.contains("refused the configured PIN") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("refused the configured PIN"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {text}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(lines[0].contains("CKR_PIN_INCORRECT"), "{}", lines[0]);
    assert!(lines[0].contains("restart"), "{}", lines[0]);
    assert!(!text.contains(PIN), "the PIN must never be logged: {text}");

    // Latched until the process restarts, even once the HSM would take the PIN again...
    server
        .set_faults(&format!("record = {:?}\n", logins.display().to_string()))
        .await;
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KeyUnavailableException");
    assert_eq!(c_logins(), 1);
    // ...and a restart (the operator's fix) logs in and serves again.
    server.restart().await;
    let mut c = server.client().await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// New key material is unwrapped again and compared before the key is stored. An HSM whose wrap
/// comes back wrong (or whose unwrap answers other bytes) makes CreateKey fail with nothing
/// stored, instead of creating a key whose data is lost once its cached material goes.
#[tokio::test]
async fn key_material_that_does_not_unwrap_to_itself_creates_no_key() {
    let server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    let mut c = server.client().await;
    create_key(&mut c).await;
    for function in ["C_Encrypt", "C_Decrypt"] {
        server
            .set_faults(&format!("corrupt_output = true\nfunctions = [\"{function}\"]\n"))
            .await;
        let message = expect_err(
            c.create_key(pb::CreateKeyRequest::default()).await,
            "KMSInternalException",
        );
        assert!(
            message.contains("unwrap") || message.contains("different material"),
            "{function}: {message}"
        );
        assert_eq!(key_count(&mut c).await, 1, "{function}: a key was stored");
    }
    server.set_faults("").await;
    let key = create_key(&mut c).await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
    assert_eq!(key_count(&mut c).await, 2);
}

/// The check uses the key every later unwrap uses: on software tokens a session's copy of the root
/// key. Sessions whose copy is not the root key make CreateKey fail with nothing stored.
#[tokio::test]
async fn a_session_copy_that_is_not_the_root_key_creates_no_key() {
    let server = Server::start_on(TestHsm::hsm_sim(), "", "").await;
    let mut c = server.client().await;
    create_key(&mut c).await;
    // Unplugging ends every open session (seen at the next call); the sessions opened after it
    // copy the root key wrong.
    server.set_faults("unplugged = true\n").await;
    expect_err(
        c.create_key(pb::CreateKeyRequest::default()).await,
        "KeyUnavailableException",
    );
    server
        .set_faults("corrupt_output = true\nfunctions = [\"C_CopyObject\"]\n")
        .await;
    let message = expect_err(
        c.create_key(pb::CreateKeyRequest::default()).await,
        "KMSInternalException",
    );
    assert!(message.contains("unwrap"), "{message}");
    assert_eq!(key_count(&mut c).await, 1, "a key was stored");
}

/// A state change still running at the request timeout (its HSM calls are slow) is answered
/// DependencyTimeoutException, saying the change is under way, and runs to the end: its records
/// are its own `Started` and outcome, under the answer's request id, with no record of the
/// timeout between them that could be read as its outcome.
#[tokio::test]
async fn a_change_past_the_request_timeout_finishes_and_its_records_tell_its_outcome() {
    let limits = "[limits]\nrequest_timeout_seconds = 1";
    // The HSM call is held until the faults are cleared, well past the request timeout.
    let server = Server::start_on(TestHsm::hsm_sim(), limits, "timeout_ms = 60000").await;
    let mut c = server.client().await;
    let before = key_count(&mut c).await;
    server.set_faults("latency_ms = 30000\nuntil_released = true\n").await;
    let started = Instant::now();
    let status = c
        .create_key(pb::CreateKeyRequest::default())
        .await
        .expect_err("past the timeout");
    // Answered at the timeout, not when the held call returned.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(error_type(&status), "DependencyTimeoutException", "{status:?}");
    assert!(status.message().contains("still under way"), "{status:?}");
    let id = request_id(&status);
    server.set_faults("").await;
    let outcomes = |server: &Server| -> Vec<String> {
        let (_, records) = server.audit_records();
        records
            .iter()
            .filter(|r| r["request_id"] == id.as_str())
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect()
    };
    let waited = Instant::now();
    while outcomes(&server).len() < 2 && waited.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outcomes(&server), ["Started", "Success"]);
    assert_eq!(key_count(&mut c).await, before + 1, "the change landed");
}
