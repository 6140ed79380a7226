//! On software tokens the server unwraps with a session copy of the root key (src/hsm/root.rs).
//! The copy must not outlive the token object: destroy the root key on the token and unwraps stop
//! within the check period. SoftHSM2 only: it is the token that sees changes made by another process.

use std::process::Command;
use std::time::{Duration, Instant};

use kms::proto as pb;

use crate::common::*;

const ROOT_KEY_ID: &str = "6b6d732d726f6f742d7631";

#[tokio::test]
async fn destroying_the_root_key_on_the_token_stops_unwraps_within_the_check_period() {
    let cache_off = "[cache]\nmaterial_ttl_seconds = 0";
    let server = Server::start_on(TestHsm::softhsm(), cache_off, "root_check_seconds = 1").await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let gdk = pb::GenerateDataKeyRequest {
        key_id: key.key_id.clone(),
        key_spec: Some("AES_256".into()),
        ..Default::default()
    };
    for _ in 0..3 {
        c.generate_data_key(gdk.clone())
            .await
            .expect("the root key is on the token");
    }

    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&server.hsm.module)
        .args(["--token-label", TOKEN, "--login", "--pin", PIN])
        .args(["--delete-object", "--type", "secrkey", "--id", ROOT_KEY_ID])
        .envs(server.hsm.env.iter().cloned())
        .output()
        .expect("pkcs11-tool must be installed (apt-get install opensc)");
    assert!(
        out.status.success(),
        "deleting the root key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deleted = Instant::now();
    loop {
        match c.generate_data_key(gdk.clone()).await {
            Err(status) => {
                assert_eq!(error_type(&status), "KMSInternalException", "{status:?}");
                break;
            }
            Ok(_) => assert!(
                deleted.elapsed() < Duration::from_secs(4),
                "unwraps still work 4 s after the root key was destroyed (check period 1 s)"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it stays refused: no new copy is made from a key that is gone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_err(c.generate_data_key(gdk).await, "KMSInternalException");
}
