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
