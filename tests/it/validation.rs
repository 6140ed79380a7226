//! Request validation: every operation answers malformed input with the AWS exception for it, and a
//! refused request changes nothing.

use kms::proto as pb;
use tonic::{Response, Status};

use crate::common::*;

type Unit = Result<Response<()>, Status>;

fn unit<T>(r: Result<Response<T>, Status>) -> Unit {
    r.map(|r| r.map(|_| ()))
}

fn tag(k: &str, v: &str) -> pb::Tag {
    pb::Tag {
        tag_key: k.into(),
        tag_value: v.into(),
    }
}

/// Replaces field `i` (0-based, split at ':') of an ARN.
fn arn_with(arn: &str, i: usize, value: &str) -> String {
    let mut parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts[i] = value;
    parts.join(":")
}

/// The operations that take a KeyId, each called with `key_id` in that parameter and otherwise
/// valid arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    DescribeKey,
    EnableKey,
    DisableKey,
    UpdateKeyDescription,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    TagResource,
    UntagResource,
    ListResourceTags,
    CreateAliasTarget,
    UpdateAliasTarget,
    ListAliasesKeyId,
    Encrypt,
    Decrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    ReEncryptSource,
    ReEncryptDestination,
}

const ALL_OPS: [Op; 18] = [
    Op::DescribeKey,
    Op::EnableKey,
    Op::DisableKey,
    Op::UpdateKeyDescription,
    Op::ScheduleKeyDeletion,
    Op::CancelKeyDeletion,
    Op::TagResource,
    Op::UntagResource,
    Op::ListResourceTags,
    Op::CreateAliasTarget,
    Op::UpdateAliasTarget,
    Op::ListAliasesKeyId,
    Op::Encrypt,
    Op::Decrypt,
    Op::GenerateDataKey,
    Op::GenerateDataKeyWithoutPlaintext,
    Op::ReEncryptSource,
    Op::ReEncryptDestination,
];

impl Op {
    /// AWS accepts an alias (name or ARN) here, not only a key id or key ARN.
    fn takes_alias(self) -> bool {
        matches!(
            self,
            Op::DescribeKey
                | Op::Encrypt
                | Op::Decrypt
                | Op::GenerateDataKey
                | Op::GenerateDataKeyWithoutPlaintext
                | Op::ReEncryptSource
                | Op::ReEncryptDestination
        )
    }

    /// `blob` is a valid ciphertext of the key `alias/existing` names.
    async fn call(self, c: &mut Client, key_id: &str, blob: &[u8]) -> Unit {
        let id = key_id.to_string();
        match self {
            Op::DescribeKey => unit(
                c.describe_key(pb::DescribeKeyRequest {
                    key_id: id,
                    ..Default::default()
                })
                .await,
            ),
            Op::EnableKey => unit(c.enable_key(pb::EnableKeyRequest { key_id: id }).await),
            Op::DisableKey => unit(c.disable_key(pb::DisableKeyRequest { key_id: id }).await),
            Op::UpdateKeyDescription => unit(
                c.update_key_description(pb::UpdateKeyDescriptionRequest {
                    key_id: id,
                    description: "changed".into(),
                })
                .await,
            ),
            Op::ScheduleKeyDeletion => unit(
                c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                    key_id: id,
                    pending_window_in_days: Some(7),
                })
                .await,
            ),
            Op::CancelKeyDeletion => unit(c.cancel_key_deletion(pb::CancelKeyDeletionRequest { key_id: id }).await),
            Op::TagResource => unit(
                c.tag_resource(pb::TagResourceRequest {
                    key_id: id,
                    tags: vec![tag("t", "v")],
                })
                .await,
            ),
            Op::UntagResource => unit(
                c.untag_resource(pb::UntagResourceRequest {
                    key_id: id,
                    tag_keys: vec!["t".into()],
                })
                .await,
            ),
            Op::ListResourceTags => unit(
                c.list_resource_tags(pb::ListResourceTagsRequest {
                    key_id: id,
                    ..Default::default()
                })
                .await,
            ),
            Op::CreateAliasTarget => unit(
                c.create_alias(pb::CreateAliasRequest {
                    alias_name: "alias/fresh".into(),
                    target_key_id: id,
                })
                .await,
            ),
            Op::UpdateAliasTarget => unit(
                c.update_alias(pb::UpdateAliasRequest {
                    alias_name: "alias/existing".into(),
                    target_key_id: id,
                })
                .await,
            ),
            Op::ListAliasesKeyId => unit(
                c.list_aliases(pb::ListAliasesRequest {
                    key_id: Some(id),
                    ..Default::default()
                })
                .await,
            ),
            Op::Encrypt => unit(
                c.encrypt(pb::EncryptRequest {
                    key_id: id,
                    plaintext: b"x".to_vec(),
                    ..Default::default()
                })
                .await,
            ),
            Op::Decrypt => unit(
                c.decrypt(pb::DecryptRequest {
                    ciphertext_blob: blob.to_vec(),
                    key_id: Some(id),
                    ..Default::default()
                })
                .await,
            ),
            Op::GenerateDataKey => unit(
                c.generate_data_key(pb::GenerateDataKeyRequest {
                    key_id: id,
                    key_spec: Some("AES_256".into()),
                    ..Default::default()
                })
                .await,
            ),
            Op::GenerateDataKeyWithoutPlaintext => unit(
                c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                    key_id: id,
                    key_spec: Some("AES_256".into()),
                    ..Default::default()
                })
                .await,
            ),
            Op::ReEncryptSource => unit(
                c.re_encrypt(pb::ReEncryptRequest {
                    ciphertext_blob: blob.to_vec(),
                    source_key_id: Some(id),
                    destination_key_id: "alias/existing".into(),
                    ..Default::default()
                })
                .await,
            ),
            Op::ReEncryptDestination => unit(
                c.re_encrypt(pb::ReEncryptRequest {
                    ciphertext_blob: blob.to_vec(),
                    destination_key_id: id,
                    ..Default::default()
                })
                .await,
            ),
        }
    }
}

#[tokio::test]
async fn malformed_and_unknown_key_ids_in_every_operation() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/existing".into(),
        target_key_id: key.key_id.clone(),
    })
    .await
    .unwrap();
    let blob = c
        .encrypt(pb::EncryptRequest {
            key_id: key.key_id.clone(),
            plaintext: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;

    let not_found = "NotFoundException";
    let validation = "ValidationException";
    // arn:partition:kms:region:account:key/id
    let other_account = arn_with(&key.arn, 4, "999999999999");
    let other_region = arn_with(&key.arn, 3, "eu-west-1");
    let other_partition = arn_with(&key.arn, 1, "aws-cn");
    let other_service = arn_with(&key.arn, 2, "s3");
    let alias_other_account = "arn:aws:kms:us-east-1:999999999999:alias/existing".to_string();
    let key_arn_bad_id = format!("{}garbage", arn_with(&key.arn, 5, "key/"));
    let cases: Vec<(String, &str)> = vec![
        (String::new(), validation),
        ("x".repeat(2049), validation),
        ("not-a-key".into(), not_found),
        ("1234".into(), not_found),
        (format!("{}0", key.key_id), not_found),
        ("00000000-0000-4000-8000-000000000000".into(), not_found),
        (uuid_v4_unknown(&key.key_id), not_found),
        (other_account, not_found),
        (other_region, not_found),
        (other_partition, not_found),
        (other_service, not_found),
        (key_arn_bad_id, not_found),
        ("arn:aws:kms".into(), not_found),
        ("alias/unknown".into(), not_found),
        ("arn:aws:kms:us-east-1:111122223333:alias/unknown".into(), not_found),
        (alias_other_account, not_found),
    ];
    // A key-only parameter does not take an alias, even one that exists.
    let key_only_cases = [
        ("alias/existing".to_string(), not_found),
        (
            "arn:aws:kms:us-east-1:111122223333:alias/existing".to_string(),
            not_found,
        ),
    ];
    for op in ALL_OPS {
        let extra = if op.takes_alias() { &[][..] } else { &key_only_cases[..] };
        for (input, expected) in cases.iter().chain(extra) {
            let r = op.call(&mut c, input, &blob).await;
            match r {
                Ok(_) => panic!("{op:?}({input:?}) succeeded; expected {expected}"),
                Err(s) => assert_eq!(
                    error_type(&s),
                    *expected,
                    "{op:?}({:?}): {}",
                    &input[..input.len().min(80)],
                    s.message()
                ),
            }
        }
    }
    // The alias forms work where aliases are accepted.
    for op in ALL_OPS.into_iter().filter(|op| op.takes_alias()) {
        for form in ["alias/existing", "arn:aws:kms:us-east-1:111122223333:alias/existing"] {
            op.call(&mut c, form, &blob)
                .await
                .unwrap_or_else(|e| panic!("{op:?}({form}): {e:?}"));
        }
    }

    // None of the refused calls changed anything.
    let d = describe(&mut c, &key.key_id).await;
    assert_eq!(d.key_state, "Enabled");
    assert_eq!(d.description, "");
    assert_eq!(key_count(&mut c).await, 1);
    let aliases = c
        .list_aliases(pb::ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .aliases;
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].target_key_id, key.key_id);
    let tags = c
        .list_resource_tags(pb::ListResourceTagsRequest {
            key_id: key.key_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tags;
    assert!(tags.is_empty());
}

/// A well-formed key id that is not `existing`.
fn uuid_v4_unknown(existing: &str) -> String {
    let candidate = "5a8b1f9e-3c2d-4e6f-8a7b-9c0d1e2f3a4b";
    assert_ne!(candidate, existing);
    candidate.into()
}

#[tokio::test]
async fn sizes_and_counts_of_crypto_parameters() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let id = key.key_id.clone();
    let v = "ValidationException";

    // Plaintext: 1-4096 bytes.
    let encrypt = |plaintext: Vec<u8>| pb::EncryptRequest {
        key_id: id.clone(),
        plaintext,
        ..Default::default()
    };
    expect_err(c.encrypt(encrypt(vec![])).await, v);
    expect_err(c.encrypt(encrypt(vec![7; 4097])).await, v);
    expect_err(c.encrypt(encrypt(vec![7; 64 * 1024])).await, v);
    let max = c.encrypt(encrypt(vec![7; 4096])).await.unwrap().into_inner();
    c.encrypt(encrypt(vec![7])).await.unwrap();

    // NumberOfBytes: 1-1024; exactly one of KeySpec and NumberOfBytes; KeySpec AES_128 or AES_256.
    let bad_specs: [(Option<&str>, Option<i32>); 10] = [
        (None, Some(0)),
        (None, Some(1025)),
        (None, Some(-1)),
        (None, Some(i32::MAX)),
        (None, None),
        (Some("AES_256"), Some(32)),
        (Some("AES_512"), None),
        (Some("aes_256"), None),
        (Some(""), None),
        (Some("AES_512"), Some(0)),
    ];
    for (spec, n) in bad_specs {
        expect_err(
            c.generate_data_key(pb::GenerateDataKeyRequest {
                key_id: id.clone(),
                key_spec: spec.map(str::to_string),
                number_of_bytes: n,
                ..Default::default()
            })
            .await,
            v,
        );
        expect_err(
            c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                key_id: id.clone(),
                key_spec: spec.map(str::to_string),
                number_of_bytes: n,
                ..Default::default()
            })
            .await,
            v,
        );
    }
    for n in [1, 1024] {
        let dk = c
            .generate_data_key(pb::GenerateDataKeyRequest {
                key_id: id.clone(),
                number_of_bytes: Some(n),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dk.plaintext.len(), n as usize);
        c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
            key_id: id.clone(),
            number_of_bytes: Some(n),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    // GenerateRandom: 1-1024, and required.
    for n in [Some(0), Some(1025), Some(-1), None] {
        expect_err(
            c.generate_random(pb::GenerateRandomRequest { number_of_bytes: n })
                .await,
            v,
        );
    }
    for n in [1, 1024] {
        let r = c
            .generate_random(pb::GenerateRandomRequest {
                number_of_bytes: Some(n),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.plaintext.len(), n as usize);
    }

    // Ciphertext blobs: 1-6144 bytes; a blob of a valid length that is not ours is invalid.
    let decrypt = |blob: Vec<u8>| pb::DecryptRequest {
        ciphertext_blob: blob,
        ..Default::default()
    };
    let re_encrypt = |blob: Vec<u8>| pb::ReEncryptRequest {
        ciphertext_blob: blob,
        destination_key_id: id.clone(),
        ..Default::default()
    };
    for blob in [vec![], vec![1u8; 6145]] {
        expect_err(c.decrypt(decrypt(blob.clone())).await, v);
        expect_err(c.re_encrypt(re_encrypt(blob)).await, v);
    }
    for blob in [vec![1u8; 6144], vec![1u8], vec![0u8; 100]] {
        expect_err(c.decrypt(decrypt(blob.clone())).await, "InvalidCiphertextException");
        expect_err(c.re_encrypt(re_encrypt(blob)).await, "InvalidCiphertextException");
    }
    // ReEncrypt's key ids: 1-2048 characters, checked before either key is looked up (so before
    // a destination that doesn't exist is NotFoundException).
    let missing = "11111111-2222-3333-4444-555555555555";
    for (source, destination) in [
        (Some(String::new()), missing.to_string()),
        (Some("k".repeat(2049)), missing.to_string()),
        (None, String::new()),
    ] {
        let r = pb::ReEncryptRequest {
            ciphertext_blob: max.ciphertext_blob.clone(),
            source_key_id: source,
            destination_key_id: destination,
            ..Default::default()
        };
        expect_err(c.re_encrypt(r).await, v);
    }
    let d = c
        .decrypt(decrypt(max.ciphertext_blob.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, vec![7; 4096]);

    // Encryption context: at most 8192 bytes of keys and values together.
    let fits = ctx(&[("k", &"v".repeat(8191))]);
    let too_big = ctx(&[("k", &"v".repeat(8192))]);
    let too_big_split = ctx(&[("a", &"v".repeat(4096)), ("b", &"v".repeat(4096))]);
    let e = c
        .encrypt(pb::EncryptRequest {
            key_id: id.clone(),
            plaintext: b"x".to_vec(),
            encryption_context: fits.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.decrypt(pb::DecryptRequest {
        ciphertext_blob: e.ciphertext_blob.clone(),
        encryption_context: fits.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    for big in [&too_big, &too_big_split] {
        expect_err(
            c.encrypt(pb::EncryptRequest {
                key_id: id.clone(),
                plaintext: b"x".to_vec(),
                encryption_context: big.clone(),
                ..Default::default()
            })
            .await,
            v,
        );
        expect_err(
            c.decrypt(pb::DecryptRequest {
                ciphertext_blob: e.ciphertext_blob.clone(),
                encryption_context: big.clone(),
                ..Default::default()
            })
            .await,
            v,
        );
        expect_err(
            c.generate_data_key(pb::GenerateDataKeyRequest {
                key_id: id.clone(),
                key_spec: Some("AES_256".into()),
                encryption_context: big.clone(),
                ..Default::default()
            })
            .await,
            v,
        );
        expect_err(
            c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                key_id: id.clone(),
                key_spec: Some("AES_256".into()),
                encryption_context: big.clone(),
                ..Default::default()
            })
            .await,
            v,
        );
        expect_err(
            c.re_encrypt(pb::ReEncryptRequest {
                ciphertext_blob: e.ciphertext_blob.clone(),
                source_encryption_context: big.clone(),
                destination_key_id: id.clone(),
                ..Default::default()
            })
            .await,
            v,
        );
        expect_err(
            c.re_encrypt(pb::ReEncryptRequest {
                ciphertext_blob: e.ciphertext_blob.clone(),
                source_encryption_context: fits.clone(),
                destination_key_id: id.clone(),
                destination_encryption_context: big.clone(),
                ..Default::default()
            })
            .await,
            v,
        );
    }

    // Grant tokens: at most 10, and each must be a real grant's token (the count is checked first).
    let mut real_tokens = Vec::new();
    for _ in 0..10 {
        let grant = c
            .create_grant(pb::CreateGrantRequest {
                key_id: id.clone(),
                grantee_principal: "arn:aws:iam::111122223333:root".into(),
                operations: [
                    "Encrypt",
                    "Decrypt",
                    "GenerateDataKey",
                    "GenerateDataKeyWithoutPlaintext",
                    "ReEncryptFrom",
                    "ReEncryptTo",
                ]
                .map(String::from)
                .to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        real_tokens.push(grant.grant_token);
    }
    let tokens = |n: usize| {
        let mut t: Vec<String> = real_tokens.iter().take(n).cloned().collect();
        t.resize(n, "grant-token-over-the-limit".into());
        t
    };
    let small = max.ciphertext_blob.clone();
    for (n, ok) in [(10, true), (11, false)] {
        let results = [
            unit(
                c.encrypt(pb::EncryptRequest {
                    key_id: id.clone(),
                    plaintext: b"x".to_vec(),
                    grant_tokens: tokens(n),
                    ..Default::default()
                })
                .await,
            ),
            unit(
                c.decrypt(pb::DecryptRequest {
                    ciphertext_blob: small.clone(),
                    grant_tokens: tokens(n),
                    ..Default::default()
                })
                .await,
            ),
            unit(
                c.generate_data_key(pb::GenerateDataKeyRequest {
                    key_id: id.clone(),
                    key_spec: Some("AES_128".into()),
                    grant_tokens: tokens(n),
                    ..Default::default()
                })
                .await,
            ),
            unit(
                c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                    key_id: id.clone(),
                    key_spec: Some("AES_128".into()),
                    grant_tokens: tokens(n),
                    ..Default::default()
                })
                .await,
            ),
            unit(
                c.re_encrypt(pb::ReEncryptRequest {
                    ciphertext_blob: small.clone(),
                    destination_key_id: id.clone(),
                    grant_tokens: tokens(n),
                    ..Default::default()
                })
                .await,
            ),
        ];
        for (i, r) in results.into_iter().enumerate() {
            if ok {
                r.unwrap_or_else(|e| panic!("call {i} with {n} grant tokens: {e:?}"));
            } else {
                expect_err(r, v);
            }
        }
    }

    // Encryption algorithms: an asymmetric one on a symmetric key is InvalidKeyUsage; an unknown
    // one is a ValidationException.
    for (alg, expected) in [
        ("RSAES_OAEP_SHA_256", "InvalidKeyUsageException"),
        ("RSAES_OAEP_SHA_1", "InvalidKeyUsageException"),
        ("AES_GCM", v),
    ] {
        expect_err(
            c.encrypt(pb::EncryptRequest {
                key_id: id.clone(),
                plaintext: b"x".to_vec(),
                encryption_algorithm: Some(alg.into()),
                ..Default::default()
            })
            .await,
            expected,
        );
        expect_err(
            c.decrypt(pb::DecryptRequest {
                ciphertext_blob: small.clone(),
                encryption_algorithm: Some(alg.into()),
                ..Default::default()
            })
            .await,
            expected,
        );
        expect_err(
            c.re_encrypt(pb::ReEncryptRequest {
                ciphertext_blob: small.clone(),
                destination_key_id: id.clone(),
                source_encryption_algorithm: Some(alg.into()),
                ..Default::default()
            })
            .await,
            expected,
        );
        expect_err(
            c.re_encrypt(pb::ReEncryptRequest {
                ciphertext_blob: small.clone(),
                destination_key_id: id.clone(),
                destination_encryption_algorithm: Some(alg.into()),
                ..Default::default()
            })
            .await,
            expected,
        );
    }
}

#[tokio::test]
async fn create_key_parameters() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let v = "ValidationException";
    let unsupported = "UnsupportedOperationException";
    let t = "TagException";

    let bad: Vec<(&str, pb::CreateKeyRequest, &str)> = vec![
        (
            "SIGN_VERIFY on SYMMETRIC_DEFAULT",
            pb::CreateKeyRequest {
                key_usage: Some("SIGN_VERIFY".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "GENERATE_VERIFY_MAC on SYMMETRIC_DEFAULT",
            pb::CreateKeyRequest {
                key_usage: Some("GENERATE_VERIFY_MAC".into()),
                key_spec: Some("SYMMETRIC_DEFAULT".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "unknown key usage",
            pb::CreateKeyRequest {
                key_usage: Some("ENCRYPT".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "unknown key spec",
            pb::CreateKeyRequest {
                key_spec: Some("AES_512".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "key spec in lower case",
            pb::CreateKeyRequest {
                key_spec: Some("symmetric_default".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "ECC_NIST_P521 (not implemented)",
            pb::CreateKeyRequest {
                key_spec: Some("ECC_NIST_P521".into()),
                key_usage: Some("SIGN_VERIFY".into()),
                ..Default::default()
            },
            unsupported,
        ),
        (
            "CustomerMasterKeySpec ECC_SECG_P256K1 (not implemented)",
            pb::CreateKeyRequest {
                customer_master_key_spec: Some("ECC_SECG_P256K1".into()),
                key_usage: Some("SIGN_VERIFY".into()),
                ..Default::default()
            },
            unsupported,
        ),
        (
            "RSA_2048 without KeyUsage",
            pb::CreateKeyRequest {
                key_spec: Some("RSA_2048".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "KeySpec and CustomerMasterKeySpec disagree",
            pb::CreateKeyRequest {
                key_spec: Some("SYMMETRIC_DEFAULT".into()),
                customer_master_key_spec: Some("RSA_2048".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "KeySpec and CustomerMasterKeySpec, equal (AWS refuses both at once)",
            pb::CreateKeyRequest {
                key_spec: Some("SYMMETRIC_DEFAULT".into()),
                customer_master_key_spec: Some("SYMMETRIC_DEFAULT".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "origin EXTERNAL (not implemented)",
            pb::CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                ..Default::default()
            },
            unsupported,
        ),
        (
            "unknown origin",
            pb::CreateKeyRequest {
                origin: Some("SOMEWHERE".into()),
                ..Default::default()
            },
            v,
        ),
        (
            "multi-Region (not implemented)",
            pb::CreateKeyRequest {
                multi_region: true,
                ..Default::default()
            },
            unsupported,
        ),
        (
            "description of 8193 characters",
            pb::CreateKeyRequest {
                description: "d".repeat(8193),
                ..Default::default()
            },
            v,
        ),
        (
            "51 tags",
            pb::CreateKeyRequest {
                tags: (0..51).map(|i| tag(&format!("k{i}"), "v")).collect(),
                ..Default::default()
            },
            t,
        ),
        (
            "empty tag key",
            pb::CreateKeyRequest {
                tags: vec![tag("", "v")],
                ..Default::default()
            },
            v,
        ),
        (
            "tag key of 129 characters",
            pb::CreateKeyRequest {
                tags: vec![tag(&"k".repeat(129), "v")],
                ..Default::default()
            },
            v,
        ),
        (
            "reserved tag key",
            pb::CreateKeyRequest {
                tags: vec![tag("aws:owner", "v")],
                ..Default::default()
            },
            t,
        ),
        (
            "tag value of 257 characters",
            pb::CreateKeyRequest {
                tags: vec![tag("k", &"v".repeat(257))],
                ..Default::default()
            },
            v,
        ),
        (
            "duplicate tag keys",
            pb::CreateKeyRequest {
                tags: vec![tag("k", "1"), tag("k", "2")],
                ..Default::default()
            },
            t,
        ),
    ];
    for (what, req, expected) in bad {
        let r = c.create_key(req).await;
        match r {
            Ok(r) => panic!("{what}: created {:?}", r.into_inner()),
            Err(s) => assert_eq!(error_type(&s), expected, "{what}: {}", s.message()),
        }
    }
    assert_eq!(key_count(&mut c).await, 0, "a refused CreateKey created a key");

    // The limits themselves are accepted.
    let good = [
        pb::CreateKeyRequest {
            description: "d".repeat(8192),
            ..Default::default()
        },
        pb::CreateKeyRequest {
            description: "é".repeat(8192),
            tags: (0..50).map(|i| tag(&format!("k{i}"), "v")).collect(),
            ..Default::default()
        },
        pb::CreateKeyRequest {
            key_usage: Some("ENCRYPT_DECRYPT".into()),
            key_spec: Some("SYMMETRIC_DEFAULT".into()),
            origin: Some("AWS_KMS".into()),
            tags: vec![tag(&"k".repeat(128), &"v".repeat(256)), tag("empty-value", "")],
            ..Default::default()
        },
        pb::CreateKeyRequest {
            customer_master_key_spec: Some("SYMMETRIC_DEFAULT".into()),
            ..Default::default()
        },
    ];
    for req in good {
        let description = req.description.clone();
        let k = c.create_key(req).await.unwrap().into_inner().key_metadata.unwrap();
        assert_eq!(k.description, description);
        assert_eq!(k.key_spec, "SYMMETRIC_DEFAULT");
    }
    assert_eq!(key_count(&mut c).await, 4);

    // UpdateKeyDescription has the same limit, and a refused update changes nothing.
    let k = create_key(&mut c).await;
    let update = |d: String| pb::UpdateKeyDescriptionRequest {
        key_id: k.key_id.clone(),
        description: d,
    };
    c.update_key_description(update("kept".into())).await.unwrap();
    expect_err(c.update_key_description(update("d".repeat(8193))).await, v);
    assert_eq!(describe(&mut c, &k.key_id).await.description, "kept");
    c.update_key_description(update("d".repeat(8192))).await.unwrap();
    assert_eq!(describe(&mut c, &k.key_id).await.description.len(), 8192);

    // Pending windows: 7-30 days.
    for window in [6, 31, 0, -1, 365] {
        expect_err(
            c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: Some(window),
            })
            .await,
            v,
        );
    }
    assert_eq!(describe(&mut c, &k.key_id).await.key_state, "Enabled");
}

/// CreateKey answers as AWS does for: KeySpec with CustomerMasterKeySpec, AWS's newer key specs
/// (known, not supported here), and KEY_AGREEMENT (valid only for NIST ECC keys, not supported here).
#[tokio::test]
async fn create_key_specs_and_usages_as_aws_answers_them() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let create = |spec: Option<&str>, usage: Option<&str>| pb::CreateKeyRequest {
        key_spec: spec.map(Into::into),
        key_usage: usage.map(Into::into),
        ..Default::default()
    };

    for spec in ["SYMMETRIC_DEFAULT", "RSA_2048"] {
        let msg = expect_err(
            c.create_key(pb::CreateKeyRequest {
                customer_master_key_spec: Some(spec.into()),
                ..create(Some(spec), Some("ENCRYPT_DECRYPT"))
            })
            .await,
            "ValidationException",
        );
        assert_eq!(
            msg,
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is \
             deprecated."
        );
    }

    for spec in ["ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519"] {
        let msg = expect_err(
            c.create_key(create(Some(spec), Some("SIGN_VERIFY"))).await,
            "UnsupportedOperationException",
        );
        assert!(msg.contains(spec), "{msg}");
    }
    for spec in ["ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"] {
        let msg = expect_err(
            c.create_key(create(Some(spec), Some("ENCAPSULATE_DECAPSULATE"))).await,
            "UnsupportedOperationException",
        );
        assert!(msg.contains(spec), "{msg}");
    }
    // Only ML-KEM keys take ENCAPSULATE_DECAPSULATE.
    for spec in [None, Some("RSA_2048"), Some("ECC_NIST_P256"), Some("HMAC_256")] {
        let msg = expect_err(
            c.create_key(create(spec, Some("ENCAPSULATE_DECAPSULATE"))).await,
            "ValidationException",
        );
        assert!(
            msg.contains("ENCAPSULATE_DECAPSULATE is not valid for KeySpec"),
            "{spec:?}: {msg}"
        );
    }

    for spec in [None, Some("SYMMETRIC_DEFAULT"), Some("RSA_2048"), Some("HMAC_256")] {
        let msg = expect_err(
            c.create_key(create(spec, Some("KEY_AGREEMENT"))).await,
            "ValidationException",
        );
        assert!(
            msg.contains("KEY_AGREEMENT is not valid for KeySpec"),
            "{spec:?}: {msg}"
        );
    }
    for spec in ["ECC_NIST_P256", "ECC_NIST_P384"] {
        let msg = expect_err(
            c.create_key(create(Some(spec), Some("KEY_AGREEMENT"))).await,
            "UnsupportedOperationException",
        );
        assert!(msg.contains("KEY_AGREEMENT"), "{msg}");
    }
    // A key usage ECC keys don't take lists KEY_AGREEMENT among the valid ones, as AWS would.
    let msg = expect_err(
        c.create_key(create(Some("ECC_NIST_P256"), Some("ENCRYPT_DECRYPT")))
            .await,
        "ValidationException",
    );
    assert!(msg.contains("valid: SIGN_VERIFY, KEY_AGREEMENT"), "{msg}");
    assert_eq!(key_count(&mut c).await, 0, "a refused CreateKey created a key");
}

#[tokio::test]
async fn alias_name_rules() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let v = "ValidationException";
    let max_len = format!("alias/{}", "a".repeat(250));
    assert_eq!(max_len.len(), 256);
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/ok".into(),
        target_key_id: key.key_id.clone(),
    })
    .await
    .unwrap();

    let bad = [
        ("", v),
        ("ok", v),
        ("my-alias", v),
        ("aliases/x", v),
        ("Alias/x", v),
        ("alias/", v),
        ("alias/a b", v),
        ("alias/a:b", v),
        ("alias/a*b", v),
        ("alias/a.b", v),
        ("alias/ключ", v),
        ("alias/aws/mine", "InvalidAliasNameException"),
        ("alias/aws/s3", "InvalidAliasNameException"),
    ];
    let too_long = format!("{max_len}a");
    for (name, expected) in bad.iter().copied().chain([(too_long.as_str(), v)]) {
        expect_err(
            c.create_alias(pb::CreateAliasRequest {
                alias_name: name.into(),
                target_key_id: key.key_id.clone(),
            })
            .await,
            expected,
        );
        expect_err(
            c.update_alias(pb::UpdateAliasRequest {
                alias_name: name.into(),
                target_key_id: key.key_id.clone(),
            })
            .await,
            expected,
        );
        expect_err(
            c.delete_alias(pb::DeleteAliasRequest {
                alias_name: name.into(),
            })
            .await,
            expected,
        );
    }
    // An alias's own name must be a name, not an ARN.
    expect_err(
        c.create_alias(pb::CreateAliasRequest {
            alias_name: "arn:aws:kms:us-east-1:111122223333:alias/as-arn".into(),
            target_key_id: key.key_id.clone(),
        })
        .await,
        v,
    );

    // Valid names: letters, digits, '/', '_', '-', up to 256 characters.
    for name in [
        max_len.as_str(),
        "alias/Mixed_Case-1/nested/path",
        "alias/awsome",
        "alias/aws",
        "alias/0",
    ] {
        c.create_alias(pb::CreateAliasRequest {
            alias_name: name.into(),
            target_key_id: key.key_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let d = describe(&mut c, name).await;
        assert_eq!(d.key_id, key.key_id, "{name}");
    }
    let listed = c
        .list_aliases(pb::ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .aliases;
    assert_eq!(listed.len(), 6, "{listed:?}");
}

#[tokio::test]
async fn tag_rules_on_tag_and_untag() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let (t, v) = ("TagException", "ValidationException");
    let tag_req = |tags: Vec<pb::Tag>| pb::TagResourceRequest {
        key_id: key.key_id.clone(),
        tags,
    };
    // Lengths are parameter constraints (ValidationException, as AWS); the reserved prefix (in
    // any case), counts and duplicates are TagException.
    let bad_tags: Vec<(Vec<pb::Tag>, &str)> = vec![
        ((0..51).map(|i| tag(&format!("k{i}"), "v")).collect(), t),
        (vec![tag("", "v")], v),
        (vec![tag(&"k".repeat(129), "v")], v),
        (vec![tag("aws:created-by", "v")], t),
        (vec![tag("AWS:created-by", "v")], t),
        (vec![tag("Aws:", "v")], t),
        (vec![tag("aws:", "v")], t),
        (vec![tag("k", &"v".repeat(257))], v),
        (vec![tag("fine", "v"), tag("", "v")], v),
        (vec![tag("k", "1"), tag("k", "2")], t),
    ];
    for (tags, expected) in bad_tags {
        let what = format!(
            "{:?}",
            tags.iter()
                .map(|t| &t.tag_key[..t.tag_key.len().min(8)])
                .collect::<Vec<_>>()
        );
        let r = c.tag_resource(tag_req(tags)).await;
        match r {
            Ok(_) => panic!("tags {what} accepted"),
            Err(s) => assert_eq!(error_type(&s), expected, "tags {what}: {}", s.message()),
        }
    }
    let listed = c
        .list_resource_tags(pb::ListResourceTagsRequest {
            key_id: key.key_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tags.is_empty(), "a refused TagResource left tags: {listed:?}");

    // The limits themselves, counted in characters.
    c.tag_resource(tag_req(vec![
        tag(&"k".repeat(128), &"v".repeat(256)),
        tag(&"é".repeat(128), &"ü".repeat(256)),
        tag("awsome", "aws:value-is-fine"),
    ]))
    .await
    .unwrap();
    c.tag_resource(tag_req((0..47).map(|i| tag(&format!("k{i}"), "v")).collect()))
        .await
        .unwrap();

    let untag = |keys: Vec<String>| pb::UntagResourceRequest {
        key_id: key.key_id.clone(),
        tag_keys: keys,
    };
    for (keys, expected) in [
        (vec![String::new()], v),
        (vec!["k".repeat(129)], v),
        (vec!["aws:created-by".to_string()], t),
        (vec!["AWS:created-by".to_string()], t),
    ] {
        expect_err(c.untag_resource(untag(keys)).await, expected);
    }
    c.untag_resource(untag(vec!["k".repeat(128), "never-set".into()]))
        .await
        .unwrap();
    // UntagResource has no count limit in AWS.
    c.untag_resource(untag((0..60).map(|i| format!("absent-{i}")).collect()))
        .await
        .unwrap();
    let listed = c
        .list_resource_tags(pb::ListResourceTagsRequest {
            key_id: key.key_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tags.len(), 49);
}

#[tokio::test]
async fn paging_limits_and_markers() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let other = create_key(&mut c).await;
    let v = "ValidationException";
    let m = "InvalidMarkerException";
    // 51 aliases (one more than ListAliases' default page), over two keys: a key has at most 50.
    for i in 0..51 {
        c.create_alias(pb::CreateAliasRequest {
            alias_name: format!("alias/a{i:02}"),
            target_key_id: if i % 2 == 0 {
                key.key_id.clone()
            } else {
                other.key_id.clone()
            },
        })
        .await
        .unwrap();
    }
    c.tag_resource(pb::TagResourceRequest {
        key_id: key.key_id.clone(),
        tags: (0..3).map(|i| tag(&format!("t{i}"), "v")).collect(),
    })
    .await
    .unwrap();

    let list_keys = |limit: Option<i32>, marker: Option<&str>| pb::ListKeysRequest {
        limit,
        marker: marker.map(str::to_string),
    };
    let list_aliases = |limit: Option<i32>, marker: Option<&str>| pb::ListAliasesRequest {
        key_id: None,
        limit,
        marker: marker.map(str::to_string),
    };
    let list_tags = |limit: Option<i32>, marker: Option<&str>| pb::ListResourceTagsRequest {
        key_id: key.key_id.clone(),
        limit,
        marker: marker.map(str::to_string),
    };

    // Limits: ListKeys 1-1000, ListAliases 1-100, ListResourceTags 1-50.
    for limit in [0, -1, 1001, i32::MIN] {
        expect_err(c.list_keys(list_keys(Some(limit), None)).await, v);
    }
    for limit in [1, 1000] {
        c.list_keys(list_keys(Some(limit), None)).await.unwrap();
    }
    for limit in [0, -1, 101, 1000, 1001] {
        expect_err(c.list_aliases(list_aliases(Some(limit), None)).await, v);
    }
    for limit in [1, 100] {
        c.list_aliases(list_aliases(Some(limit), None)).await.unwrap();
    }
    for limit in [0, -1, 51, 1001] {
        expect_err(c.list_resource_tags(list_tags(Some(limit), None)).await, v);
    }
    for limit in [1, 50] {
        c.list_resource_tags(list_tags(Some(limit), None)).await.unwrap();
    }

    // Defaults: ListAliases returns 50 per page, as AWS does.
    let page = c.list_aliases(list_aliases(None, None)).await.unwrap().into_inner();
    assert_eq!(page.aliases.len(), 50);
    assert!(page.truncated);
    let rest = c
        .list_aliases(list_aliases(None, page.next_marker.as_deref()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.aliases.len(), 1);
    assert!(!rest.truncated);

    // Markers: only ones the service returned.
    for marker in ["garbage", "m1.zz", "m1.0", "bTEuNjE=", "m3.00000000.YWxpYXM"] {
        expect_err(c.list_keys(list_keys(Some(1), Some(marker))).await, m);
        expect_err(c.list_aliases(list_aliases(Some(1), Some(marker))).await, m);
        expect_err(c.list_resource_tags(list_tags(Some(1), Some(marker))).await, m);
    }
    // Markers outside the field's constraints (1-1024 characters in U+0020-U+00FF), as in AWS.
    for marker in [String::new(), "x".repeat(1025), "\u{1F511}".into()] {
        expect_err(c.list_keys(list_keys(Some(1), Some(&marker))).await, v);
        expect_err(c.list_aliases(list_aliases(Some(1), Some(&marker))).await, v);
        expect_err(c.list_resource_tags(list_tags(Some(1), Some(&marker))).await, v);
    }
    // A real marker works, and the limit is still checked alongside it.
    let first = c.list_keys(list_keys(Some(1), None)).await.unwrap().into_inner();
    let marker = first.next_marker.expect("two keys, limit 1: truncated");
    let second = c
        .list_keys(list_keys(Some(1), Some(&marker)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.keys.len(), 1);
    assert_ne!(second.keys[0].key_id, first.keys[0].key_id);
    assert!([&key.key_id, &other.key_id].contains(&&second.keys[0].key_id));
    expect_err(c.list_keys(list_keys(Some(0), Some(&marker))).await, v);
    // A marker belongs to its listing: ListKeys' marker starts no other list (every alias name
    // sorts after a key id, so ListAliases would otherwise answer its first page).
    expect_err(c.list_aliases(list_aliases(Some(1), Some(&marker))).await, m);
    expect_err(c.list_resource_tags(list_tags(Some(1), Some(&marker))).await, m);
}

/// Passes raw bytes through as the request and hands back the raw response bytes.
#[derive(Clone, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// A request body that is not a protobuf message is ValidationException (not tonic's INTERNAL),
/// and the server goes on serving.
#[tokio::test]
async fn undecodable_request_bodies_are_validation_errors() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let channel = plain_channel(&server).await;
    let mut raw = tonic::client::Grpc::new(channel);
    let bodies: [&[u8]; 4] = [
        &[0xff; 16],               // an unterminated varint
        &[0x0a, 0x05, 0x01, 0x02], // key_id: length 5, 2 bytes follow
        &[0x0a, 0x02, 0xc3, 0x28], // key_id: not UTF-8
        &[0x0f, 0x00],             // wire type 7
    ];
    for body in bodies {
        raw.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/kms.v1.KeyManagementService/GenerateDataKey");
        let status = raw
            .unary(tonic::Request::new(body.to_vec()), path, RawCodec)
            .await
            .expect_err("garbage accepted");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{body:?}: {status:?}");
        assert_eq!(error_type(&status), "ValidationException", "{body:?}");
        assert!(
            status.message().starts_with("failed to decode Protobuf message"),
            "{status:?}"
        );
        // Refused before the operation began, and still given a request id and an audit record.
        let record = server.audit_record_of(&status);
        assert_eq!(
            (record["operation"].as_str(), record["outcome"].as_str()),
            (Some("GenerateDataKey"), Some("ValidationException"))
        );
    }
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// One request to `method` with `body` as its HTTP/2 body as it is (no gRPC framing added), and
/// `grpc-encoding: gzip` when `gzip`: the server's answer as a status (all of these are answered
/// trailers-only, in the headers).
async fn framed_by_hand(server: &Server, method: &str, body: Vec<u8>, gzip: bool) -> tonic::Status {
    use tonic::codegen::Service;
    let mut channel = plain_channel(server).await;
    let mut request =
        tonic::codegen::http::Request::post(format!("http://localhost/kms.v1.KeyManagementService/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    if gzip {
        request = request.header("grpc-encoding", "gzip");
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(
            body,
        ))))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let response = channel.call(request).await.unwrap();
    tonic::Status::from_header_map(response.headers()).expect("a trailers-only answer")
}

/// A request whose gRPC framing is wrong (no message, one cut short, a bad compressed flag, a
/// compressed one) is the client's mistake: a ValidationException that says what is wrong, with
/// a request id and an audit record, not tonic's INTERNAL or UNIMPLEMENTED with neither. State
/// changes, whose bodies are read before the operation's task starts, the same.
#[tokio::test]
async fn badly_framed_requests_are_validation_errors() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let message = [0x0a, 0x01, b'k']; // key_id "k"
    let framed = |flag: u8, declared: u32, body: &[u8]| {
        let mut v = vec![flag];
        v.extend_from_slice(&declared.to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let cases: [(&str, Vec<u8>, bool, &str); 6] = [
        ("GenerateDataKey", vec![], false, "Missing request message"),
        ("GenerateDataKey", framed(0, 10, &message), false, "Unexpected EOF"),
        ("GenerateDataKey", framed(2, 3, &message), false, "compression flag"),
        ("GenerateDataKey", framed(1, 3, &message), false, "compressed-flag"),
        ("GenerateDataKey", framed(1, 3, &message), true, "gzip"),
        ("DisableKey", vec![], false, "Missing request message"),
    ];
    for (method, body, gzip, why) in cases {
        let status = framed_by_hand(&server, method, body, gzip).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{method} {why}: {status:?}"
        );
        assert_eq!(error_type(&status), "ValidationException", "{method} {why}");
        assert!(
            status
                .message()
                .starts_with("The request is not one well-formed gRPC message: ")
                && status.message().contains(why),
            "{status:?}"
        );
        let record = server.audit_record_of(&status);
        assert_eq!(
            (record["operation"].as_str(), record["outcome"].as_str()),
            (Some(method), Some("ValidationException"))
        );
    }
    assert_eq!(describe(&mut c, &key.key_id).await.key_state, "Enabled");
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// A request may be 512 KiB. Values from it that an error message quotes are cut short, and no
/// message is long enough to be refused as a header: the caller gets its exception, and its
/// connection goes on serving (HTTP/2 clients refuse header lists over 16 KiB, and drop the
/// connection over 64 KiB).
#[tokio::test]
async fn long_values_get_short_errors_and_the_connection_survives() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let long = "é".repeat(20_000); // 40 KB; 120 KB as the percent-encoded header
    let msg = expect_err(
        c.encrypt(pb::EncryptRequest {
            key_id: key.key_id.clone(),
            plaintext: b"data".to_vec(),
            encryption_algorithm: Some(long.clone()),
            ..Default::default()
        })
        .await,
        "ValidationException",
    );
    assert!(msg.len() < 400 && msg.contains("é..."), "{msg}");
    let msg = expect_err(
        c.list_keys(pb::ListKeysRequest {
            marker: Some(long.clone()),
            ..Default::default()
        })
        .await,
        "ValidationException",
    );
    assert!(msg.len() < 400, "{msg}");
    let msg = expect_err(
        c.create_grant(pb::CreateGrantRequest {
            key_id: key.key_id.clone(),
            grantee_principal: long.clone(),
            operations: vec!["Decrypt".into()],
            ..Default::default()
        })
        .await,
        "ValidationException",
    );
    assert!(msg.len() < 400, "{msg}");
    // A key id of the longest length AWS allows, in 4-byte characters: quoted whole, within the cap.
    let msg = expect_err(
        c.describe_key(pb::DescribeKeyRequest {
            key_id: "𝄞".repeat(2048),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );
    assert!(msg.len() <= 4096, "{}", msg.len());
    c.generate_data_key(gdk(&key.key_id)).await.unwrap();
}

/// A key policy's text is a parameter, checked before the key is looked up or the caller
/// authorized (as AWS): a bad one on a missing key is ValidationException, not NotFound.
#[tokio::test]
async fn a_key_policy_text_is_checked_before_the_key() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let missing = "11111111-2222-3333-4444-555555555555";
    for text in ["", "{\"x\":\"\u{100}\"}"] {
        let put = c
            .put_key_policy(pb::PutKeyPolicyRequest {
                key_id: missing.into(),
                policy: text.into(),
                ..Default::default()
            })
            .await;
        expect_err(put, "ValidationException");
        let create = c
            .create_key(pb::CreateKeyRequest {
                policy: Some(text.into()),
                ..Default::default()
            })
            .await;
        expect_err(create, "ValidationException");
    }
}
