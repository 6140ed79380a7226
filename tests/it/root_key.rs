//! On software tokens each HSM session unwraps with its own session copy of the root key
//! (src/hsm/root.rs). No copy may outlive its token object: destroy or replace the root key on the
//! token and unwraps with the old key stop within the check period. On SoftHSM2 and on hsm-sim,
//! both of which see changes made by another process (pkcs11-tool here); and on hsm-sim for a
//! check that fails, through its fault file.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use kms::proto as pb;

const ROOT_KEY_ID: &str = "6b6d732d726f6f742d7631";

#[tokio::test]
async fn destroying_the_root_key_on_the_token_stops_unwraps_within_the_check_period() {
    destroying_the_root_key_stops_unwraps(TestHsm::softhsm()).await;
}

#[tokio::test]
async fn destroying_the_root_key_on_the_hsm_sim_token_stops_unwraps_within_the_check_period() {
    destroying_the_root_key_stops_unwraps(TestHsm::hsm_sim()).await;
}

async fn destroying_the_root_key_stops_unwraps(hsm: TestHsm) {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(hsm, cache_off, "root_check_seconds = 1").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let gdk = gdk(&key.key_id);
    for _ in 0..3 {
        c.generate_data_key(gdk.clone())
            .await
            .expect("the root key is on the token");
    }

    pkcs11_tool(&server, &["--delete-object", "--type", "secrkey", "--id", ROOT_KEY_ID]);

    let deleted = Instant::now();
    loop {
        match c.generate_data_key(gdk.clone()).await {
            Err(status) => {
                assert_eq!(error_type(&status), "KeyUnavailableException", "{status:?}");
                break;
            }
            Ok(_) => assert!(
                deleted.elapsed() < Duration::from_secs(20),
                "unwraps still work 20 s after the root key was destroyed (check period 1 s)"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it stays refused: no new copy is made from a key that is gone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let msg = expect_err(c.generate_data_key(gdk).await, "KeyUnavailableException");
    assert!(msg.contains("root key is no longer on the HSM token"), "{msg}");
}

/// A root key replaced under the same CKA_ID (a restored backup, an operator's mistake): the sessions'
/// copies of the old key stop being used within the check period, new keys are wrapped under the new
/// one and still work after a restart, and the old keys fail loudly.
#[tokio::test]
async fn a_replaced_root_key_is_noticed_and_new_material_is_sealed_under_it() {
    a_replaced_root_key_is_noticed(TestHsm::softhsm()).await;
}

#[tokio::test]
async fn a_root_key_replaced_on_the_hsm_sim_token_is_noticed() {
    a_replaced_root_key_is_noticed(TestHsm::hsm_sim()).await;
}

async fn a_replaced_root_key_is_noticed(hsm: TestHsm) {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let mut server = Server::start_on(hsm, cache_off, "root_check_seconds = 1").await;
    let mut c = server.client().await;
    let old_key = create_key(&mut c).await;
    c.generate_data_key(gdk(&old_key.key_id)).await.unwrap();

    replace_root_key(&server);

    // The pooled session's copy of the old key would unwrap the old key's material forever; the
    // check must notice the new object and drop it.
    let replaced = Instant::now();
    while c.generate_data_key(gdk(&old_key.key_id)).await.is_ok() {
        assert!(
            replaced.elapsed() < Duration::from_secs(20),
            "the old root key's copy is still in use 20 s after the key was replaced (check period 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_key = create_key(&mut c).await;
    c.generate_data_key(gdk(&new_key.key_id)).await.unwrap();
    expect_err(c.generate_data_key(gdk(&old_key.key_id)).await, "KMSInternalException");

    server.restart().await;
    let mut c = server.client().await;
    c.generate_data_key(gdk(&new_key.key_id))
        .await
        .expect("the new key's material is wrapped under the root key on the token");
}

/// Destroys the root key on the token and makes a new one under the same CKA_ID, as an operator
/// restoring the wrong backup would.
fn replace_root_key(server: &Server) {
    pkcs11_tool(server, &["--delete-object", "--type", "secrkey", "--id", ROOT_KEY_ID]);
    pkcs11_tool(
        server,
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--id",
            ROOT_KEY_ID,
            "--label",
            "kms-root",
            "--sensitive",
            "--private",
        ],
    );
}

/// Runs pkcs11-tool, logged in as the user, on the server's token.
fn pkcs11_tool(server: &Server, args: &[&str]) {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&server.hsm.module)
        .args(["--token-label", TOKEN, "--login", "--pin", PIN])
        .args(args)
        .envs(server.hsm.env.iter().cloned())
        .output()
        .expect("pkcs11-tool must be installed (apt-get install opensc)");
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root key check whose lookup fails is not a check: the next pooled session taken checks
/// again, instead of every other pooled session unwrapping with its copy for another period
/// unchecked. hsm-sim fails the lookup (C_FindObjectsInit) with a non-device error, which is not
/// retried and drops no session; that the next request runs into the same fault shows that it
/// looked the root key up.
#[tokio::test]
async fn a_failed_root_key_check_is_made_again_by_the_next_session() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::hsm_sim(), cache_off, "root_check_seconds = 2").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;

    // Several pooled sessions: slow calls keep workers busy, so concurrent calls open more.
    server
        .set_faults("latency_ms = 300\nfunctions = [\"C_Decrypt\"]\n")
        .await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (mut c, key_id) = (c.clone(), key.key_id.clone());
            tokio::spawn(async move { c.generate_data_key(gdk(&key_id)).await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    server.set_faults("").await;
    // Past the check period: the next call taking a pooled session checks the root key.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let fail_lookup = "fail_next = 1\nerror = \"CKR_GENERAL_ERROR\"\nfunctions = [\"C_FindObjectsInit\"]\n";
    server.set_faults(fail_lookup).await;
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KMSInternalException");
    // Armed again (a comment changes the file's size, so hsm-sim re-reads it): the next call must
    // run into it, because the check that failed is still due.
    server.set_faults(&format!("# again\n{fail_lookup}")).await;
    expect_err(c.generate_data_key(gdk(&key.key_id)).await, "KMSInternalException");

    server.set_faults("").await;
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// Where sessions use the token object itself (CloudHSM, or `root_check_seconds = 0`), a root key
/// replaced under the same CKA_ID leaves the idle sessions holding the old key's handle. The first
/// call that finds that handle gone drops every session and looks the key up again, so no request
/// after the replacement fails for a stale handle: new keys are created and used at once.
#[tokio::test]
async fn without_copies_a_replaced_root_key_is_adopted_by_the_next_call() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::softhsm(), cache_off, "root_check_seconds = 0").await;
    let mut c = server.client().await;
    let old_key = create_key(&mut c).await;
    // Several idle sessions, each holding the old key's handle: concurrent calls make the HSM
    // workers open more than one (a fix that dropped only the failing session and retried once
    // would then still fail the next call).
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (mut c, key_id) = (c.clone(), old_key.key_id.clone());
            tokio::spawn(async move { c.generate_data_key(gdk(&key_id)).await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }

    replace_root_key(&server);

    for i in 0..4 {
        let new_key = c
            .create_key(pb::CreateKeyRequest::default())
            .await
            .unwrap_or_else(|e| panic!("CreateKey {i} after the replacement: {e:?}"))
            .into_inner()
            .key_metadata
            .unwrap();
        c.generate_data_key(gdk(&new_key.key_id))
            .await
            .unwrap_or_else(|e| panic!("GenerateDataKey {i} after the replacement: {e:?}"));
    }
    expect_err(c.generate_data_key(gdk(&old_key.key_id)).await, "KMSInternalException");
}

/// Two servers started at once on a fresh token (a cluster's first deployment) both find no root
/// key. hsm-sim holds their C_GenerateKey calls until both are there, then lets both go, so both
/// create one under the same CKA_ID; which sees the collision depends on which creation ends first.
#[tokio::test]
async fn two_servers_started_at_once_on_a_fresh_token_settle_on_one_root_key() {
    two_servers_start_at_once(false).await;
}

/// As above, but hsm-sim also holds the lookups that follow the creations, and then the destroys,
/// until both are there, so both servers see both keys: both destroy their own, and they must
/// still settle on one.
#[tokio::test]
async fn two_servers_that_both_see_the_collision_settle_on_one_root_key() {
    two_servers_start_at_once(true).await;
}

/// Starts two servers at once on a fresh hsm-sim token, as described above; afterwards the token
/// holds one root key, and both servers start again and open what they sealed under it.
async fn two_servers_start_at_once(both_see_the_collision: bool) {
    let hsm = TestHsm::hsm_sim();
    let tokens = hsm.dir.path().join("tokens");
    let set_faults = |toml: String| {
        std::fs::write(tokens.join("faults.toml.tmp"), toml).unwrap();
        std::fs::rename(tokens.join("faults.toml.tmp"), tokens.join("faults.toml")).unwrap();
    };
    let calls = tokens.join("calls");
    // Holds the calls to `function` (up to a minute) until the file changes, and records them.
    let hold = |function: &str| {
        format!(
            "functions = [\"{function}\"]\nlatency_ms = 60000\nuntil_released = true\nrecord = {:?}\n",
            calls.display().to_string()
        )
    };
    let both_called = |func: &'static str| {
        let calls = calls.clone();
        async move {
            let started = Instant::now();
            while recorded_calls(&calls, func) < 2 {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the servers did not both call {func}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    set_faults(hold("C_GenerateKey"));
    // The same token for the second server; `dir` only keeps a directory alive.
    let same_token = TestHsm {
        dir: tempfile::tempdir().unwrap(),
        module: hsm.module.clone(),
        env: hsm.env.clone(),
    };
    let release = async {
        both_called("C_GenerateKey").await;
        if both_see_the_collision {
            // Lets the creations go and holds the lookups after them; then lets those go and
            // holds the destroys, so neither key is gone before both servers have looked.
            set_faults(hold("C_FindObjectsInit"));
            both_called("C_FindObjectsInit").await;
            set_faults(hold("C_DestroyObject"));
            both_called("C_DestroyObject").await;
        }
        set_faults(String::new());
    };
    let (mut a, mut b, ()) = tokio::join!(
        Server::start_on(hsm, "", ""),
        Server::start_on(same_token, "", ""),
        release
    );
    assert_eq!(root_keys_on_token(&a), 1, "the servers left one root key between them");

    let mut sealed = vec![];
    for server in [&a, &b] {
        let mut c = server.client().await;
        let key = create_key(&mut c).await;
        let blob = c
            .generate_data_key(gdk(&key.key_id))
            .await
            .unwrap()
            .into_inner()
            .ciphertext_blob;
        sealed.push(blob);
    }
    for (server, blob) in [(&mut a, &sealed[0]), (&mut b, &sealed[1])] {
        server.restart().await;
        let mut c = server.client().await;
        c.decrypt(pb::DecryptRequest {
            ciphertext_blob: blob.clone(),
            ..Default::default()
        })
        .await
        .expect("what the server sealed opens under the one root key after a restart");
    }
}

/// How many secret keys on the server's token have the root key's CKA_ID.
fn root_keys_on_token(server: &Server) -> usize {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&server.hsm.module)
        .args(["--token-label", TOKEN, "--login", "--pin", PIN])
        .args(["--list-objects", "--type", "secrkey"])
        .envs(server.hsm.env.iter().cloned())
        .output()
        .expect("pkcs11-tool must be installed (apt-get install opensc)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    listing
        .lines()
        .filter(|l| l.trim_start().starts_with("ID:") && l.trim_end().ends_with(ROOT_KEY_ID))
        .count()
}
