//! DryRun: a dry run makes every check of its real call and answers DryRunOperationException when
//! the call would have succeeded, or the real call's error; it changes nothing, returns no secret,
//! and is audited with the DryRunOperationException outcome.

use kms::proto as pb;
use tonic::{Response, Status};

use crate::common::*;

const DRY_RUN: &str = "DryRunOperationException";
const DRY_RUN_MESSAGE: &str = "The request was rejected because the DryRun parameter was specified.";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const BOB_TOKEN: &str = "dry-run-test-bob-token";
const IGNORE_CIPHERTEXT: &str = "IGNORE_CIPHERTEXT";

/// Dev mode (the caller is the account root) and a token for bob, who has no identity policy.
async fn server() -> Server {
    Server::start_with(&format!(
        "[[auth.tokens]]\nsha256 = {:?}\nprincipal = {BOB:?}\n",
        kms::auth::token_digest(BOB_TOKEN)
    ))
    .await
}

/// A request sent as bob.
fn as_bob<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {BOB_TOKEN}").parse().unwrap());
    r
}

/// Asserts the dry run's answer: DryRunOperationException (FAILED_PRECONDITION), AWS's message.
#[track_caller]
fn dry<T: std::fmt::Debug>(r: Result<Response<T>, Status>) {
    let status = r.expect_err("a dry run must not succeed");
    assert_eq!(error_type(&status), DRY_RUN, "{}", status.message());
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), DRY_RUN_MESSAGE);
}

async fn create(c: &mut Client, spec: &str, usage: &str) -> String {
    c.create_key(pb::CreateKeyRequest {
        key_spec: Some(spec.into()),
        key_usage: Some(usage.into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .key_metadata
    .unwrap()
    .key_id
}

async fn disable(c: &mut Client, key_id: &str) {
    c.disable_key(pb::DisableKeyRequest { key_id: key_id.into() })
        .await
        .unwrap();
}

fn encrypt(key_id: &str, algorithm: Option<&str>, plaintext: &[u8], dry_run: bool) -> pb::EncryptRequest {
    pb::EncryptRequest {
        key_id: key_id.into(),
        plaintext: plaintext.to_vec(),
        encryption_algorithm: algorithm.map(Into::into),
        dry_run: Some(dry_run),
        ..Default::default()
    }
}

fn decrypt(key_id: Option<&str>, algorithm: Option<&str>, blob: &[u8], modifiers: &[&str]) -> pb::DecryptRequest {
    pb::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        key_id: key_id.map(Into::into),
        encryption_algorithm: algorithm.map(Into::into),
        dry_run: Some(true),
        dry_run_modifiers: modifiers.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

fn re_encrypt(source: Option<&str>, destination: &str, blob: &[u8], modifiers: &[&str]) -> pb::ReEncryptRequest {
    pb::ReEncryptRequest {
        ciphertext_blob: blob.to_vec(),
        source_key_id: source.map(Into::into),
        destination_key_id: destination.into(),
        dry_run: Some(true),
        dry_run_modifiers: modifiers.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

fn data_key(key_id: &str) -> pb::GenerateDataKeyRequest {
    pb::GenerateDataKeyRequest {
        dry_run: Some(true),
        ..gdk(key_id)
    }
}

fn data_key_pair(key_id: &str) -> pb::GenerateDataKeyPairRequest {
    pb::GenerateDataKeyPairRequest {
        key_id: key_id.into(),
        key_pair_spec: "ECC_NIST_P256".into(),
        dry_run: Some(true),
        ..Default::default()
    }
}

fn sign(key_id: &str, algorithm: &str, dry_run: bool) -> pb::SignRequest {
    pb::SignRequest {
        key_id: key_id.into(),
        message: b"message".to_vec(),
        signing_algorithm: algorithm.into(),
        dry_run: Some(dry_run),
        ..Default::default()
    }
}

fn verify(key_id: &str, signature: &[u8]) -> pb::VerifyRequest {
    pb::VerifyRequest {
        key_id: key_id.into(),
        message: b"message".to_vec(),
        signature: signature.to_vec(),
        signing_algorithm: "ECDSA_SHA_256".into(),
        dry_run: Some(true),
        ..Default::default()
    }
}

fn mac(key_id: &str, dry_run: bool) -> pb::GenerateMacRequest {
    pb::GenerateMacRequest {
        key_id: key_id.into(),
        message: b"message".to_vec(),
        mac_algorithm: "HMAC_SHA_256".into(),
        dry_run: Some(dry_run),
        ..Default::default()
    }
}

fn verify_mac(key_id: &str, tag: &[u8]) -> pb::VerifyMacRequest {
    pb::VerifyMacRequest {
        key_id: key_id.into(),
        message: b"message".to_vec(),
        mac_algorithm: "HMAC_SHA_256".into(),
        mac: tag.to_vec(),
        dry_run: Some(true),
        ..Default::default()
    }
}

fn grant(key_id: &str, operations: &[&str]) -> pb::CreateGrantRequest {
    pb::CreateGrantRequest {
        key_id: key_id.into(),
        grantee_principal: BOB.into(),
        operations: operations.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    }
}

/// Encrypt, Decrypt, ReEncrypt and the data key operations: a dry run that would succeed answers
/// DryRunOperationException; one that would fail answers the real error; Decrypt and ReEncrypt
/// check the ciphertext unless told IGNORE_CIPHERTEXT.
#[tokio::test]
async fn dry_runs_of_encryption_operations() {
    let server = server().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await.key_id;
    let rsa = create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let signer = create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let blob = c
        .encrypt(encrypt(&key, None, b"secret", false))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let rsa_blob = c
        .encrypt(encrypt(&rsa, Some("RSAES_OAEP_SHA_256"), b"secret", false))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let mut tampered = blob.clone();
    *tampered.last_mut().unwrap() ^= 1;

    // Would succeed.
    dry(c.encrypt(encrypt(&key, None, b"secret", true)).await);
    dry(c
        .encrypt(encrypt(&rsa, Some("RSAES_OAEP_SHA_1"), &[7u8; 214], true))
        .await);
    dry(c.decrypt(decrypt(None, None, &blob, &[])).await);
    dry(c
        .decrypt(decrypt(Some(&rsa), Some("RSAES_OAEP_SHA_256"), &rsa_blob, &[]))
        .await);
    dry(c.re_encrypt(re_encrypt(None, &key, &blob, &[])).await);
    dry(c.generate_data_key(data_key(&key)).await);
    dry(c
        .generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
            key_id: key.clone(),
            number_of_bytes: Some(64),
            dry_run: Some(true),
            ..Default::default()
        })
        .await);
    dry(c.generate_data_key_pair(data_key_pair(&key)).await);
    dry(c
        .generate_data_key_pair_without_plaintext(pb::GenerateDataKeyPairWithoutPlaintextRequest {
            key_id: key.clone(),
            key_pair_spec: "RSA_2048".into(),
            dry_run: Some(true),
            ..Default::default()
        })
        .await);

    // The ciphertext is checked: a changed blob, another context, another key.
    expect_err(
        c.decrypt(decrypt(None, None, &tampered, &[])).await,
        "InvalidCiphertextException",
    );
    let mut other_context = decrypt(None, None, &blob, &[]);
    other_context.encryption_context = ctx(&[("k", "v")]);
    expect_err(c.decrypt(other_context).await, "InvalidCiphertextException");
    expect_err(
        c.decrypt(decrypt(Some(&rsa), Some("RSAES_OAEP_SHA_1"), &rsa_blob, &[]))
            .await,
        "InvalidCiphertextException",
    );
    expect_err(
        c.re_encrypt(re_encrypt(None, &key, &tampered, &[])).await,
        "InvalidCiphertextException",
    );
    // ... unless IGNORE_CIPHERTEXT: then the blob may be absent or anything, and KeyId is required.
    for blob in [&b""[..], &tampered] {
        dry(c.decrypt(decrypt(Some(&key), None, blob, &[IGNORE_CIPHERTEXT])).await);
        dry(c
            .re_encrypt(re_encrypt(Some(&key), &key, blob, &[IGNORE_CIPHERTEXT]))
            .await);
    }
    dry(c
        .decrypt(decrypt(Some(&rsa), Some("RSAES_OAEP_SHA_1"), b"", &[IGNORE_CIPHERTEXT]))
        .await);
    let msg = expect_err(
        c.decrypt(decrypt(None, None, &blob, &[IGNORE_CIPHERTEXT])).await,
        "ValidationException",
    );
    assert!(msg.contains("keyId is required"), "{msg}");
    expect_err(
        c.re_encrypt(re_encrypt(None, &key, &blob, &[IGNORE_CIPHERTEXT])).await,
        "ValidationException",
    );
    // IGNORE_CIPHERTEXT still checks the key: its usage and the algorithm.
    expect_err(
        c.decrypt(decrypt(Some(&rsa), None, b"", &[IGNORE_CIPHERTEXT])).await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.decrypt(decrypt(Some(&signer), None, b"", &[IGNORE_CIPHERTEXT])).await,
        "InvalidKeyUsageException",
    );
    // A modifier must be AWS's; without DryRun, modifiers change nothing (a real Decrypt).
    expect_err(
        c.decrypt(decrypt(Some(&key), None, &blob, &["IGNORE"])).await,
        "ValidationException",
    );
    let real = c
        .decrypt(pb::DecryptRequest {
            dry_run: None,
            ..decrypt(Some(&key), None, &blob, &[IGNORE_CIPHERTEXT])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(real.plaintext, b"secret");
    // dry_run false is the real call.
    let e = c.encrypt(encrypt(&key, None, b"x", false)).await.unwrap().into_inner();
    assert!(!e.ciphertext_blob.is_empty());

    // Would fail: the real call's error.
    expect_err(c.encrypt(encrypt(&key, None, b"", true)).await, "ValidationException");
    expect_err(
        c.encrypt(encrypt(&rsa, Some("RSAES_OAEP_SHA_1"), &[7u8; 215], true))
            .await,
        "ValidationException",
    );
    expect_err(
        c.encrypt(encrypt(&rsa, None, b"x", true)).await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.encrypt(encrypt(&signer, None, b"x", true)).await,
        "InvalidKeyUsageException",
    );
    expect_err(c.generate_data_key(data_key(&rsa)).await, "InvalidKeyUsageException");
    expect_err(
        c.generate_data_key_pair(data_key_pair(&rsa)).await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.re_encrypt(re_encrypt(None, &rsa, &blob, &[])).await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.generate_data_key(data_key("alias/missing")).await,
        "NotFoundException",
    );
    let mut spec = data_key_pair(&key);
    spec.key_pair_spec = "ECC_NIST_EDWARDS25519".into();
    expect_err(c.generate_data_key_pair(spec).await, "UnsupportedOperationException");
    let mut token = data_key(&key);
    token.grant_tokens = vec!["0".repeat(128)];
    expect_err(c.generate_data_key(token).await, "InvalidGrantTokenException");

    // A disabled key refuses dry runs as it refuses the real calls.
    disable(&mut c, &key).await;
    expect_err(c.encrypt(encrypt(&key, None, b"x", true)).await, "DisabledException");
    expect_err(c.generate_data_key(data_key(&key)).await, "DisabledException");
    expect_err(c.generate_data_key_pair(data_key_pair(&key)).await, "DisabledException");
    expect_err(c.decrypt(decrypt(None, None, &blob, &[])).await, "DisabledException");
    expect_err(
        c.decrypt(decrypt(Some(&key), None, b"", &[IGNORE_CIPHERTEXT])).await,
        "DisabledException",
    );
    expect_err(
        c.re_encrypt(re_encrypt(None, &rsa, &blob, &[])).await,
        "DisabledException",
    );
}

/// Sign, Verify, GenerateMac, VerifyMac: a dry run that would succeed answers
/// DryRunOperationException; Verify and VerifyMac check the signature and the MAC too.
#[tokio::test]
async fn dry_runs_of_signing_and_mac_operations() {
    let server = server().await;
    let mut c = server.client().await;
    let signer = create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let hmac = create(&mut c, "HMAC_256", "GENERATE_VERIFY_MAC").await;
    let signature = c
        .sign(sign(&signer, "ECDSA_SHA_256", false))
        .await
        .unwrap()
        .into_inner()
        .signature;
    let tag = c.generate_mac(mac(&hmac, false)).await.unwrap().into_inner().mac;

    dry(c.sign(sign(&signer, "ECDSA_SHA_256", true)).await);
    dry(c.verify(verify(&signer, &signature)).await);
    dry(c.generate_mac(mac(&hmac, true)).await);
    dry(c.verify_mac(verify_mac(&hmac, &tag)).await);

    expect_err(
        c.verify(verify(&signer, &[1u8; 64])).await,
        "KMSInvalidSignatureException",
    );
    let mut wrong = tag.clone();
    wrong[0] ^= 1;
    expect_err(c.verify_mac(verify_mac(&hmac, &wrong)).await, "KMSInvalidMacException");
    expect_err(
        c.sign(sign(&signer, "ECDSA_SHA_384", true)).await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.sign(sign(&signer, "ED25519_SHA_512", true)).await,
        "InvalidKeyUsageException",
    );
    expect_err(
        c.sign(sign(&hmac, "ECDSA_SHA_256", true)).await,
        "InvalidKeyUsageException",
    );
    expect_err(c.generate_mac(mac(&signer, true)).await, "InvalidKeyUsageException");
    let mut empty = sign(&signer, "ECDSA_SHA_256", true);
    empty.message.clear();
    expect_err(c.sign(empty).await, "ValidationException");

    disable(&mut c, &signer).await;
    disable(&mut c, &hmac).await;
    expect_err(c.sign(sign(&signer, "ECDSA_SHA_256", true)).await, "DisabledException");
    expect_err(c.verify(verify(&signer, &signature)).await, "DisabledException");
    expect_err(c.generate_mac(mac(&hmac, true)).await, "DisabledException");
    expect_err(c.verify_mac(verify_mac(&hmac, &tag)).await, "DisabledException");
}

/// CreateGrant, RetireGrant, RevokeGrant: a dry run creates, retires and revokes nothing.
#[tokio::test]
async fn dry_runs_of_grant_operations_change_nothing() {
    let server = server().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await.key_id;
    let bob_encrypts = |c: &mut Client| {
        let mut c = c.clone();
        let key = key.clone();
        async move { c.encrypt(as_bob(encrypt(&key, None, b"x", false))).await }
    };
    expect_err(bob_encrypts(&mut c).await, "AccessDeniedException");

    // A dry-run CreateGrant creates no grant, and bob is still denied.
    dry(c
        .create_grant(pb::CreateGrantRequest {
            dry_run: Some(true),
            ..grant(&key, &["Encrypt", "RetireGrant"])
        })
        .await);
    assert_eq!(grants_of(&mut c, &key).await.len(), 0);
    expect_err(bob_encrypts(&mut c).await, "AccessDeniedException");
    // Would fail: an operation the key doesn't have, a bad principal.
    expect_err(
        c.create_grant(pb::CreateGrantRequest {
            dry_run: Some(true),
            ..grant(&key, &["Sign"])
        })
        .await,
        "ValidationException",
    );
    expect_err(
        c.create_grant(pb::CreateGrantRequest {
            grantee_principal: "bob".into(),
            dry_run: Some(true),
            ..grant(&key, &["Encrypt"])
        })
        .await,
        "ValidationException",
    );

    let created = c
        .create_grant(grant(&key, &["Encrypt", "RetireGrant"]))
        .await
        .unwrap()
        .into_inner();
    bob_encrypts(&mut c).await.unwrap();

    // Dry-run RevokeGrant and RetireGrant (by id and by token) leave the grant working.
    let revoke = |grant_id: &str| pb::RevokeGrantRequest {
        key_id: key.clone(),
        grant_id: grant_id.into(),
        dry_run: Some(true),
    };
    dry(c.revoke_grant(revoke(&created.grant_id)).await);
    expect_err(c.revoke_grant(revoke(&"0".repeat(64))).await, "NotFoundException");
    let retire_by_id = pb::RetireGrantRequest {
        key_id: Some(key.clone()),
        grant_id: Some(created.grant_id.clone()),
        dry_run: Some(true),
        ..Default::default()
    };
    dry(c.retire_grant(as_bob(retire_by_id.clone())).await);
    dry(c
        .retire_grant(pb::RetireGrantRequest {
            grant_token: Some(created.grant_token.clone()),
            dry_run: Some(true),
            ..Default::default()
        })
        .await);
    assert_eq!(grants_of(&mut c, &key).await.len(), 1);
    bob_encrypts(&mut c).await.unwrap();
    // Bob may not revoke (no policy allows him kms:RevokeGrant), dry run or not.
    expect_err(
        c.revoke_grant(as_bob(revoke(&created.grant_id))).await,
        "AccessDeniedException",
    );

    // The real calls, for comparison: each removes the grant.
    c.retire_grant(as_bob(pb::RetireGrantRequest {
        dry_run: None,
        ..retire_by_id
    }))
    .await
    .unwrap();
    assert_eq!(grants_of(&mut c, &key).await.len(), 0);
    expect_err(bob_encrypts(&mut c).await, "AccessDeniedException");
    let again = c.create_grant(grant(&key, &["Encrypt"])).await.unwrap().into_inner();
    c.revoke_grant(pb::RevokeGrantRequest {
        dry_run: Some(false),
        ..revoke(&again.grant_id)
    })
    .await
    .unwrap();
    assert_eq!(grants_of(&mut c, &key).await.len(), 0);

    // A key pending deletion refuses CreateGrant, dry run or not.
    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: key.clone(),
        pending_window_in_days: Some(7),
    })
    .await
    .unwrap();
    expect_err(
        c.create_grant(pb::CreateGrantRequest {
            dry_run: Some(true),
            ..grant(&key, &["Encrypt"])
        })
        .await,
        "KMSInvalidStateException",
    );
}

/// A dry run is authorized as its real call (policies, grants, grant tokens) and audited with the
/// DryRunOperationException outcome, or the real call's error.
#[tokio::test]
async fn dry_runs_are_authorized_and_audited() {
    let server = server().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await.key_id;
    let blob = c
        .encrypt(encrypt(&key, None, b"secret", false))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;

    // Bob: no policy allows him anything.
    expect_err(
        c.encrypt(as_bob(encrypt(&key, None, b"x", true))).await,
        "AccessDeniedException",
    );
    expect_err(
        c.generate_data_key(as_bob(data_key(&key))).await,
        "AccessDeniedException",
    );
    expect_err(
        c.decrypt(as_bob(decrypt(None, None, &blob, &[]))).await,
        "AccessDeniedException",
    );
    expect_err(
        c.decrypt(as_bob(decrypt(Some(&key), None, b"", &[IGNORE_CIPHERTEXT])))
            .await,
        "AccessDeniedException",
    );
    expect_err(
        c.create_grant(as_bob(pb::CreateGrantRequest {
            dry_run: Some(true),
            ..grant(&key, &["Encrypt"])
        }))
        .await,
        "AccessDeniedException",
    );

    // A grant (used through its token at once) allows the dry runs it covers, and only those.
    let g = c
        .create_grant(grant(&key, &["GenerateDataKey", "Decrypt"]))
        .await
        .unwrap()
        .into_inner();
    let mut with_token = data_key(&key);
    with_token.grant_tokens = vec![g.grant_token.clone()];
    dry(c.generate_data_key(as_bob(with_token)).await);
    dry(c
        .decrypt(as_bob(decrypt(Some(&key), None, b"", &[IGNORE_CIPHERTEXT])))
        .await);
    expect_err(
        c.encrypt(as_bob(encrypt(&key, None, b"x", true))).await,
        "AccessDeniedException",
    );

    // The owner's dry-run Decrypt of the real blob decrypts it (the check the real call makes),
    // and neither the answer (exactly AWS's message) nor the audit record holds the plaintext.
    dry(c.decrypt(decrypt(None, None, &blob, &[])).await);

    let (text, records) = server.audit_records();
    let outcomes = |operation: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r["operation"] == operation && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(outcomes("GenerateDataKey", DRY_RUN), 1);
    assert_eq!(outcomes("Decrypt", DRY_RUN), 2);
    assert_eq!(outcomes("Encrypt", "AccessDeniedException"), 2);
    assert_eq!(outcomes("Decrypt", "AccessDeniedException"), 2);
    assert_eq!(outcomes("CreateGrant", "AccessDeniedException"), 1);
    let dry_gdk = records
        .iter()
        .find(|r| r["operation"] == "GenerateDataKey" && r["outcome"] == DRY_RUN)
        .unwrap();
    assert_eq!(dry_gdk["principal"], BOB);
    assert!(dry_gdk["key_arn"].as_str().unwrap().ends_with(&key), "{dry_gdk}");
    assert!(!text.contains("secret"), "the audit log holds no plaintext");
}
