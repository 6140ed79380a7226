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
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "timeout_ms = 1000").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    server.set_faults("latency_ms = 4000\n").await;
    expect_err(
        c.generate_data_key(gdk(&key.key_id)).await,
        "DependencyTimeoutException",
    );
    server.set_faults("").await;
    // The slow call is still sleeping in the HSM; other calls must not wait behind it.
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
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
