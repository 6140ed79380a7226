//! Key lifecycle: CreateKey, DescribeKey in its four KeyId forms, UpdateKeyDescription, Disable/Enable,
//! ScheduleKeyDeletion/CancelKeyDeletion and the key states they lead to, ListKeys pagination.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use kms::proto as pb;

use crate::common::*;

const DAY: i64 = 86_400;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn encrypt(c: &mut Client, key_id: &str) -> Result<tonic::Response<pb::EncryptResponse>, tonic::Status> {
    c.encrypt(pb::EncryptRequest {
        key_id: key_id.into(),
        plaintext: b"lifecycle".to_vec(),
        ..Default::default()
    })
    .await
}

fn decrypt_req(blob: &[u8]) -> pb::DecryptRequest {
    pb::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        ..Default::default()
    }
}

/// Every cryptographic operation on `key_id` (and on `blob`, a ciphertext made under it) fails with
/// `expected`. `other` is a usable key, for ReEncrypt in both directions.
async fn crypto_refused(c: &mut Client, key_id: &str, blob: &[u8], other: &pb::KeyMetadata, expected: &str) {
    expect_err(encrypt(c, key_id).await, expected);
    expect_err(c.decrypt(decrypt_req(blob)).await, expected);
    expect_err(
        c.generate_data_key(pb::GenerateDataKeyRequest {
            key_id: key_id.into(),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        })
        .await,
        expected,
    );
    expect_err(
        c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
            key_id: key_id.into(),
            number_of_bytes: Some(16),
            ..Default::default()
        })
        .await,
        expected,
    );
    // As the source of a ReEncrypt...
    expect_err(
        c.re_encrypt(pb::ReEncryptRequest {
            ciphertext_blob: blob.to_vec(),
            destination_key_id: other.key_id.clone(),
            ..Default::default()
        })
        .await,
        expected,
    );
    // ...and as its destination.
    let other_blob = encrypt(c, &other.key_id).await.unwrap().into_inner().ciphertext_blob;
    expect_err(
        c.re_encrypt(pb::ReEncryptRequest {
            ciphertext_blob: other_blob,
            destination_key_id: key_id.into(),
            ..Default::default()
        })
        .await,
        expected,
    );
}

#[tokio::test]
async fn create_describe_update_disable_enable() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let before = now();
    let created = c
        .create_key(pb::CreateKeyRequest {
            description: "payroll master key".into(),
            tags: vec![
                pb::Tag {
                    tag_key: "team".into(),
                    tag_value: "payroll".into(),
                },
                pb::Tag {
                    tag_key: "env".into(),
                    tag_value: "".into(),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    let key_id = created.key_id.clone();
    assert!(uuid_like(&key_id), "{key_id}");
    assert_eq!(created.arn, format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}"));
    assert_eq!(created.aws_account_id, "111122223333");
    assert!(created.creation_date >= before && created.creation_date <= now());
    assert!(created.enabled);
    assert_eq!(created.description, "payroll master key");
    assert_eq!(created.key_usage, "ENCRYPT_DECRYPT");
    assert_eq!(created.key_state, "Enabled");
    assert_eq!(created.deletion_date, None);
    assert_eq!(created.pending_deletion_window_in_days, None);
    assert_eq!(created.origin, "AWS_KMS");
    assert_eq!(created.key_manager, "CUSTOMER");
    assert_eq!(created.key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(created.customer_master_key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(created.encryption_algorithms, vec!["SYMMETRIC_DEFAULT".to_string()]);
    assert!(!created.multi_region);

    let tags = c
        .list_resource_tags(pb::ListResourceTagsRequest {
            key_id: key_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let tags: HashMap<String, String> = tags.tags.into_iter().map(|t| (t.tag_key, t.tag_value)).collect();
    assert_eq!(
        tags,
        HashMap::from([("team".into(), "payroll".into()), ("env".into(), "".into())])
    );

    // DescribeKey by key id, key ARN, alias name and alias ARN all name the same key.
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/payroll".into(),
        target_key_id: key_id.clone(),
    })
    .await
    .unwrap();
    let alias_arn = "arn:aws:kms:us-east-1:111122223333:alias/payroll".to_string();
    for form in [
        key_id.as_str(),
        created.arn.as_str(),
        "alias/payroll",
        alias_arn.as_str(),
    ] {
        let d = describe(&mut c, form).await;
        assert_eq!(d, created, "DescribeKey({form})");
    }
    // A second key is not confused with the first.
    let other = create_key(&mut c).await;
    assert_ne!(other.key_id, key_id);
    assert_eq!(describe(&mut c, &other.arn).await.key_id, other.key_id);

    // UpdateKeyDescription, by key id and by key ARN; empty is allowed.
    c.update_key_description(pb::UpdateKeyDescriptionRequest {
        key_id: key_id.clone(),
        description: "renamed".into(),
    })
    .await
    .unwrap();
    assert_eq!(describe(&mut c, "alias/payroll").await.description, "renamed");
    c.update_key_description(pb::UpdateKeyDescriptionRequest {
        key_id: created.arn.clone(),
        description: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(describe(&mut c, &key_id).await.description, "");
    assert_eq!(describe(&mut c, &other.key_id).await.description, "");

    let blob = encrypt(&mut c, &key_id).await.unwrap().into_inner().ciphertext_blob;

    // Disabled: every cryptographic operation is refused with DisabledException.
    c.disable_key(pb::DisableKeyRequest { key_id: key_id.clone() })
        .await
        .unwrap();
    let d = describe(&mut c, &key_id).await;
    assert_eq!(d.key_state, "Disabled");
    assert!(!d.enabled);
    assert_eq!(d.deletion_date, None);
    crypto_refused(&mut c, &key_id, &blob, &other, "DisabledException").await;
    crypto_refused(&mut c, "alias/payroll", &blob, &other, "DisabledException").await;
    // Disabling twice is harmless; describing, tagging and aliasing still work.
    c.disable_key(pb::DisableKeyRequest {
        key_id: created.arn.clone(),
    })
    .await
    .unwrap();
    c.tag_resource(pb::TagResourceRequest {
        key_id: key_id.clone(),
        tags: vec![pb::Tag {
            tag_key: "state".into(),
            tag_value: "disabled".into(),
        }],
    })
    .await
    .unwrap();
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/payroll-2".into(),
        target_key_id: key_id.clone(),
    })
    .await
    .unwrap();
    // The other key is unaffected.
    encrypt(&mut c, &other.key_id).await.unwrap();

    // Enabled again: everything works, including ciphertexts made before.
    c.enable_key(pb::EnableKeyRequest { key_id: key_id.clone() })
        .await
        .unwrap();
    let d = describe(&mut c, &key_id).await;
    assert_eq!(d.key_state, "Enabled");
    assert!(d.enabled);
    let out = c.decrypt(decrypt_req(&blob)).await.unwrap().into_inner();
    assert_eq!(out.plaintext, b"lifecycle");
    assert_eq!(out.key_id, created.arn);
    let e = encrypt(&mut c, "alias/payroll-2").await.unwrap().into_inner();
    assert_eq!(e.key_id, created.arn);
    c.generate_data_key(pb::GenerateDataKeyRequest {
        key_id: key_id.clone(),
        number_of_bytes: Some(8),
        ..Default::default()
    })
    .await
    .unwrap();
    c.re_encrypt(pb::ReEncryptRequest {
        ciphertext_blob: blob.clone(),
        destination_key_id: other.key_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
}

fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn schedule_and_cancel_key_deletion() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let other = create_key(&mut c).await;

    // Default window 30, explicit 7 and 30; the response names the key by ARN.
    for (window, expected_days) in [(None, 30), (Some(7), 7), (Some(30), 30)] {
        let k = create_key(&mut c).await;
        let before = now();
        let r = c
            .schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: window,
            })
            .await
            .unwrap()
            .into_inner();
        let after = now();
        assert_eq!(r.key_id, k.arn, "window {window:?}");
        assert_eq!(r.key_state, "PendingDeletion");
        assert_eq!(r.pending_window_in_days, expected_days);
        let days = i64::from(expected_days) * DAY;
        assert!(
            r.deletion_date >= before + days && r.deletion_date <= after + days,
            "deletion date {} is not now + {expected_days} days ({})",
            r.deletion_date,
            before + days
        );
        let d = describe(&mut c, &k.key_id).await;
        assert_eq!(d.key_state, "PendingDeletion");
        assert!(!d.enabled);
        assert_eq!(d.deletion_date, Some(r.deletion_date));
        // AWS gives it only for a multi-Region primary key (PendingReplicaDeletion).
        assert_eq!(d.pending_deletion_window_in_days, None);
    }

    // A key with a ciphertext and an alias, scheduled by ARN.
    let k = create_key(&mut c).await;
    let blob = encrypt(&mut c, &k.key_id).await.unwrap().into_inner().ciphertext_blob;
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/doomed".into(),
        target_key_id: k.key_id.clone(),
    })
    .await
    .unwrap();
    let scheduled = c
        .schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
            key_id: k.arn.clone(),
            pending_window_in_days: Some(7),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled.key_id, k.arn);

    // Cryptography is refused with KMSInvalidStateException, by key id and through the alias.
    crypto_refused(&mut c, &k.key_id, &blob, &other, "KMSInvalidStateException").await;
    crypto_refused(&mut c, "alias/doomed", &blob, &other, "KMSInvalidStateException").await;

    // So are the management calls AWS refuses in this state.
    let invalid = "KMSInvalidStateException";
    expect_err(
        c.enable_key(pb::EnableKeyRequest {
            key_id: k.key_id.clone(),
        })
        .await,
        invalid,
    );
    expect_err(
        c.disable_key(pb::DisableKeyRequest {
            key_id: k.key_id.clone(),
        })
        .await,
        invalid,
    );
    expect_err(
        c.update_key_description(pb::UpdateKeyDescriptionRequest {
            key_id: k.key_id.clone(),
            description: "no".into(),
        })
        .await,
        invalid,
    );
    expect_err(
        c.tag_resource(pb::TagResourceRequest {
            key_id: k.key_id.clone(),
            tags: vec![pb::Tag {
                tag_key: "a".into(),
                tag_value: "b".into(),
            }],
        })
        .await,
        invalid,
    );
    expect_err(
        c.untag_resource(pb::UntagResourceRequest {
            key_id: k.key_id.clone(),
            tag_keys: vec!["a".into()],
        })
        .await,
        invalid,
    );
    expect_err(
        c.create_alias(pb::CreateAliasRequest {
            alias_name: "alias/new-for-doomed".into(),
            target_key_id: k.key_id.clone(),
        })
        .await,
        invalid,
    );
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/elsewhere".into(),
        target_key_id: other.key_id.clone(),
    })
    .await
    .unwrap();
    expect_err(
        c.update_alias(pb::UpdateAliasRequest {
            alias_name: "alias/elsewhere".into(),
            target_key_id: k.key_id.clone(),
        })
        .await,
        invalid,
    );
    for window in [None, Some(7), Some(30)] {
        expect_err(
            c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: window,
            })
            .await,
            invalid,
        );
    }
    // The refusals changed nothing.
    let d = describe(&mut c, "alias/doomed").await;
    assert_eq!(d.key_state, "PendingDeletion");
    assert_eq!(d.deletion_date, Some(scheduled.deletion_date));
    assert_eq!(d.pending_deletion_window_in_days, None);
    assert_eq!(d.description, "");
    let aliases = c
        .list_aliases(pb::ListAliasesRequest {
            key_id: Some(k.key_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = aliases.aliases.into_iter().map(|a| a.alias_name).collect();
    assert_eq!(names, vec!["alias/doomed".to_string()]);
    // Reading tags is still allowed.
    c.list_resource_tags(pb::ListResourceTagsRequest {
        key_id: k.key_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    // CancelKeyDeletion leaves the key Disabled, not Enabled.
    let cancelled = c
        .cancel_key_deletion(pb::CancelKeyDeletionRequest {
            key_id: k.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.key_id, k.arn);
    let d = describe(&mut c, &k.key_id).await;
    assert_eq!(d.key_state, "Disabled");
    assert!(!d.enabled);
    assert_eq!(d.deletion_date, None);
    assert_eq!(d.pending_deletion_window_in_days, None);
    expect_err(encrypt(&mut c, &k.key_id).await, "DisabledException");
    // Not pending any more: cancelling again is refused, Disabled or Enabled.
    expect_err(
        c.cancel_key_deletion(pb::CancelKeyDeletionRequest {
            key_id: k.key_id.clone(),
        })
        .await,
        invalid,
    );
    c.enable_key(pb::EnableKeyRequest { key_id: k.arn.clone() })
        .await
        .unwrap();
    assert_eq!(describe(&mut c, &k.key_id).await.key_state, "Enabled");
    let out = c.decrypt(decrypt_req(&blob)).await.unwrap().into_inner();
    assert_eq!(out.plaintext, b"lifecycle");
    encrypt(&mut c, "alias/doomed").await.unwrap();
    expect_err(
        c.cancel_key_deletion(pb::CancelKeyDeletionRequest {
            key_id: k.key_id.clone(),
        })
        .await,
        invalid,
    );
    expect_err(
        c.cancel_key_deletion(pb::CancelKeyDeletionRequest {
            key_id: other.key_id.clone(),
        })
        .await,
        invalid,
    );

    // A Disabled key can be scheduled too, and cancelling brings it back Disabled.
    c.disable_key(pb::DisableKeyRequest {
        key_id: k.key_id.clone(),
    })
    .await
    .unwrap();
    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: k.key_id.clone(),
        pending_window_in_days: Some(10),
    })
    .await
    .unwrap();
    assert!(describe(&mut c, &k.key_id).await.deletion_date.is_some());
    c.cancel_key_deletion(pb::CancelKeyDeletionRequest { key_id: k.arn.clone() })
        .await
        .unwrap();
    assert_eq!(describe(&mut c, &k.key_id).await.key_state, "Disabled");

    // The other key never changed state.
    assert_eq!(describe(&mut c, &other.key_id).await.key_state, "Enabled");
}

#[tokio::test]
async fn list_keys_pages_over_every_key_once() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut created = HashMap::new();
    for _ in 0..7 {
        let k = create_key(&mut c).await;
        created.insert(k.key_id, k.arn);
    }

    let mut seen = Vec::new();
    let mut marker = None;
    let mut pages = Vec::new();
    loop {
        let page = c
            .list_keys(pb::ListKeysRequest {
                limit: Some(3),
                marker: marker.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 3);
        pages.push(page.keys.len());
        for k in &page.keys {
            assert_eq!(
                created.get(&k.key_id),
                Some(&k.key_arn),
                "unknown or mislabelled key {k:?}"
            );
            seen.push(k.key_id.clone());
        }
        assert_eq!(page.truncated, page.next_marker.is_some(), "{page:?}");
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages, vec![3, 3, 1]);
    assert_eq!(seen.len(), 7, "{seen:?}");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 7, "duplicates: {seen:?}");

    // Without a limit, and with one that fits exactly: one page, not truncated.
    for limit in [None, Some(7), Some(1000)] {
        let all = c
            .list_keys(pb::ListKeysRequest { limit, marker: None })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.keys.len(), 7, "limit {limit:?}");
        assert!(!all.truncated);
        assert_eq!(all.next_marker, None);
    }
    // Limit 1 walks one key at a time.
    let mut marker = None;
    let mut one_by_one = Vec::new();
    loop {
        let page = c
            .list_keys(pb::ListKeysRequest { limit: Some(1), marker })
            .await
            .unwrap()
            .into_inner();
        one_by_one.extend(page.keys.into_iter().map(|k| k.key_id));
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    assert_eq!(one_by_one, seen);

    // A key scheduled for deletion is still listed (until it is deleted).
    let first = seen[0].clone();
    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: first.clone(),
        pending_window_in_days: None,
    })
    .await
    .unwrap();
    let all = c.list_keys(pb::ListKeysRequest::default()).await.unwrap().into_inner();
    assert!(all.keys.iter().any(|k| k.key_id == first));
}
