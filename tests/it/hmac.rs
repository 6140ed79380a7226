//! HMAC keys: GenerateMac / VerifyMac for every HMAC key spec, the MAC algorithm that goes with each,
//! the operations HMAC keys refuse (and the keys GenerateMac refuses), size limits at their edges, key
//! state, and MACs that survive a restart.

use kms::proto as pb;

use crate::common::*;

/// Key spec, its MAC algorithm, and the MAC length in bytes.
const HMAC_SPECS: [(&str, &str, usize); 4] = [
    ("HMAC_224", "HMAC_SHA_224", 28),
    ("HMAC_256", "HMAC_SHA_256", 32),
    ("HMAC_384", "HMAC_SHA_384", 48),
    ("HMAC_512", "HMAC_SHA_512", 64),
];

/// Deterministic, non-repeating test bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn create(c: &mut Client, spec: &str, usage: &str) -> pb::KeyMetadata {
    create_key_of(c, spec, usage).await
}

async fn create_hmac(c: &mut Client, spec: &str) -> pb::KeyMetadata {
    create(c, spec, "GENERATE_VERIFY_MAC").await
}

fn mac_req(key: &str, alg: &str, msg: &[u8]) -> pb::GenerateMacRequest {
    pb::GenerateMacRequest {
        key_id: key.into(),
        message: msg.to_vec(),
        mac_algorithm: alg.into(),
        ..Default::default()
    }
}

fn verify_req(key: &str, alg: &str, msg: &[u8], mac: &[u8]) -> pb::VerifyMacRequest {
    pb::VerifyMacRequest {
        key_id: key.into(),
        message: msg.to_vec(),
        mac_algorithm: alg.into(),
        mac: mac.to_vec(),
        ..Default::default()
    }
}

async fn mac(c: &mut Client, key: &str, alg: &str, msg: &[u8]) -> Vec<u8> {
    let r = c
        .generate_mac(mac_req(key, alg, msg))
        .await
        .unwrap_or_else(|s| panic!("GenerateMac {alg}: {} {}", error_type(&s), s.message()))
        .into_inner();
    assert_eq!(r.mac_algorithm, alg);
    r.mac
}

async fn verify_ok(c: &mut Client, key: &str, alg: &str, msg: &[u8], mac: &[u8]) -> pb::VerifyMacResponse {
    let r = c
        .verify_mac(verify_req(key, alg, msg, mac))
        .await
        .unwrap_or_else(|s| panic!("VerifyMac {alg}: {} {}", error_type(&s), s.message()))
        .into_inner();
    assert!(r.mac_valid, "VerifyMac answered mac_valid = false");
    assert_eq!(r.mac_algorithm, alg);
    r
}

/// For each HMAC spec: the MAC has the hash's length, is deterministic, differs per message and per
/// key, VerifyMac accepts it, and any change to it (a flipped bit, truncation, extension) or to the
/// message is KMSInvalidMacException.
#[tokio::test]
async fn hmac_macs_are_deterministic_and_verify_detects_any_change() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let msg = b"an HMAC'd message".to_vec();
    let mut all_macs = Vec::new();

    for (spec, alg, len) in HMAC_SPECS {
        let key = create_hmac(&mut c, spec).await;
        assert_eq!(key.key_spec, spec);
        assert_eq!(key.customer_master_key_spec, spec);
        assert_eq!(key.key_usage, "GENERATE_VERIFY_MAC");
        assert_eq!(key.mac_algorithms, vec![alg.to_string()]);
        assert!(
            key.encryption_algorithms.is_empty(),
            "{spec}: {:?}",
            key.encryption_algorithms
        );
        assert!(
            key.signing_algorithms.is_empty(),
            "{spec}: {:?}",
            key.signing_algorithms
        );
        let id = key.key_id.as_str();

        let r = c.generate_mac(mac_req(id, alg, &msg)).await.unwrap().into_inner();
        assert_eq!(r.key_id, key.arn);
        assert_eq!(r.mac_algorithm, alg);
        assert_eq!(r.mac.len(), len, "{spec}: MAC length");
        let m = r.mac;
        // Deterministic: the same key and message give the same MAC.
        assert_eq!(
            mac(&mut c, id, alg, &msg).await,
            m,
            "{spec}: GenerateMac is not deterministic"
        );
        assert_eq!(mac(&mut c, &key.arn, alg, &msg).await, m, "{spec}: via the ARN");
        // Different messages, different MACs: one more byte, one changed byte, a prefix.
        let mut longer = msg.clone();
        longer.push(0);
        let mut changed = msg.clone();
        changed[0] ^= 1;
        let mut seen = vec![m.clone()];
        for other in [longer.clone(), changed.clone(), msg[..msg.len() - 1].to_vec()] {
            let o = mac(&mut c, id, alg, &other).await;
            assert_eq!(o.len(), len);
            assert!(!seen.contains(&o), "{spec}: two messages share a MAC");
            seen.push(o);
        }

        let v = verify_ok(&mut c, id, alg, &msg, &m).await;
        assert_eq!(v.key_id, key.arn);
        // Every bit of the MAC matters.
        for i in 0..len {
            for bit in [0x01u8, 0x80] {
                let mut bad = m.clone();
                bad[i] ^= bit;
                expect_err(
                    c.verify_mac(verify_req(id, alg, &msg, &bad)).await,
                    "KMSInvalidMacException",
                );
            }
        }
        let mut extended = m.clone();
        extended.push(0);
        for bad in [m[..len - 1].to_vec(), m[..1].to_vec(), extended, vec![0u8; len]] {
            expect_err(
                c.verify_mac(verify_req(id, alg, &msg, &bad)).await,
                "KMSInvalidMacException",
            );
        }
        // The MAC of another message.
        for other in [&longer, &changed] {
            expect_err(
                c.verify_mac(verify_req(id, alg, other, &m)).await,
                "KMSInvalidMacException",
            );
        }

        // Another key of the same spec: a different MAC, and it does not verify this one.
        let key2 = create_hmac(&mut c, spec).await;
        let m2 = mac(&mut c, &key2.key_id, alg, &msg).await;
        assert_ne!(m2, m, "{spec}: two keys give the same MAC");
        expect_err(
            c.verify_mac(verify_req(&key2.key_id, alg, &msg, &m)).await,
            "KMSInvalidMacException",
        );
        verify_ok(&mut c, &key2.key_id, alg, &msg, &m2).await;
        all_macs.push(m);
        all_macs.push(m2);
    }

    // An alias works for both operations.
    let key = create_hmac(&mut c, "HMAC_256").await;
    c.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/mac".into(),
        target_key_id: key.key_id.clone(),
    })
    .await
    .unwrap();
    let m = mac(&mut c, "alias/mac", "HMAC_SHA_256", &msg).await;
    assert_eq!(m, mac(&mut c, &key.key_id, "HMAC_SHA_256", &msg).await);
    let v = verify_ok(&mut c, "alias/mac", "HMAC_SHA_256", &msg, &m).await;
    assert_eq!(v.key_id, key.arn);
    assert!(!all_macs.contains(&m));
}

/// Only the MAC algorithm of the key's spec works on an HMAC key; other keys refuse MACs; HMAC keys
/// refuse every other operation; HMAC specs need key usage GENERATE_VERIFY_MAC.
#[tokio::test]
async fn hmac_algorithm_must_match_spec_and_keys_keep_to_their_usage() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let msg = b"msg".to_vec();

    let mut hmac_keys = Vec::new();
    for (spec, alg, len) in HMAC_SPECS {
        let key = create_hmac(&mut c, spec).await;
        for (_, other, other_len) in HMAC_SPECS {
            if other == alg {
                let m = mac(&mut c, &key.key_id, other, &msg).await;
                assert_eq!(m.len(), len);
                verify_ok(&mut c, &key.key_id, other, &msg, &m).await;
            } else {
                expect_err(
                    c.generate_mac(mac_req(&key.key_id, other, &msg)).await,
                    "InvalidKeyUsageException",
                );
                expect_err(
                    c.verify_mac(verify_req(&key.key_id, other, &msg, &vec![0u8; other_len]))
                        .await,
                    "InvalidKeyUsageException",
                );
            }
        }
        // Not a MAC algorithm at all.
        for bad in [
            "HMAC_SHA_1",
            "HMAC_SHA_128",
            "HMAC_SHA256",
            "hmac_sha_256",
            "SHA_256",
            "",
        ] {
            expect_err(
                c.generate_mac(mac_req(&key.key_id, bad, &msg)).await,
                "ValidationException",
            );
            expect_err(
                c.verify_mac(verify_req(&key.key_id, bad, &msg, &[0u8; 32])).await,
                "ValidationException",
            );
        }
        hmac_keys.push(key);
    }

    // Keys of other usages refuse MACs.
    let others = [
        create_key(&mut c).await,
        create(&mut c, "RSA_2048", "SIGN_VERIFY").await,
        create(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await,
        create(&mut c, "ECC_NIST_P256", "SIGN_VERIFY").await,
    ];
    for key in &others {
        for (_, alg, len) in HMAC_SPECS {
            expect_err(
                c.generate_mac(mac_req(&key.key_id, alg, &msg)).await,
                "InvalidKeyUsageException",
            );
            expect_err(
                c.verify_mac(verify_req(&key.key_id, alg, &msg, &vec![0u8; len])).await,
                "InvalidKeyUsageException",
            );
        }
    }

    // HMAC keys refuse everything but MACs.
    for key in &hmac_keys {
        let id = key.key_id.clone();
        for alg in [None, Some("SYMMETRIC_DEFAULT"), Some("RSAES_OAEP_SHA_256")] {
            expect_err(
                c.encrypt(pb::EncryptRequest {
                    key_id: id.clone(),
                    plaintext: msg.clone(),
                    encryption_algorithm: alg.map(str::to_string),
                    ..Default::default()
                })
                .await,
                "InvalidKeyUsageException",
            );
        }
        expect_err(
            c.generate_data_key(pb::GenerateDataKeyRequest {
                key_id: id.clone(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            })
            .await,
            "InvalidKeyUsageException",
        );
        expect_err(
            c.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                key_id: id.clone(),
                key_spec: Some("AES_128".into()),
                ..Default::default()
            })
            .await,
            "InvalidKeyUsageException",
        );
        expect_err(
            c.generate_data_key_pair(pb::GenerateDataKeyPairRequest {
                key_id: id.clone(),
                key_pair_spec: "ECC_NIST_P256".into(),
                ..Default::default()
            })
            .await,
            "InvalidKeyUsageException",
        );
        for alg in ["RSASSA_PSS_SHA_256", "ECDSA_SHA_256"] {
            expect_err(
                c.sign(pb::SignRequest {
                    key_id: id.clone(),
                    message: msg.clone(),
                    signing_algorithm: alg.into(),
                    ..Default::default()
                })
                .await,
                "InvalidKeyUsageException",
            );
            expect_err(
                c.verify(pb::VerifyRequest {
                    key_id: id.clone(),
                    message: msg.clone(),
                    signature: vec![1u8; 64],
                    signing_algorithm: alg.into(),
                    ..Default::default()
                })
                .await,
                "InvalidKeyUsageException",
            );
        }
        expect_err(
            c.get_public_key(pb::GetPublicKeyRequest {
                key_id: id.clone(),
                ..Default::default()
            })
            .await,
            "UnsupportedOperationException",
        );
    }

    // HMAC key specs: GENERATE_VERIFY_MAC only, and it is required.
    for (spec, _, _) in HMAC_SPECS {
        for usage in ["ENCRYPT_DECRYPT", "SIGN_VERIFY"] {
            expect_err(
                c.create_key(pb::CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..Default::default()
                })
                .await,
                "ValidationException",
            );
        }
        expect_err(
            c.create_key(pb::CreateKeyRequest {
                key_spec: Some(spec.into()),
                ..Default::default()
            })
            .await,
            "ValidationException",
        );
    }
    for spec in ["SYMMETRIC_DEFAULT", "RSA_2048", "ECC_NIST_P256"] {
        expect_err(
            c.create_key(pb::CreateKeyRequest {
                key_spec: Some(spec.into()),
                key_usage: Some("GENERATE_VERIFY_MAC".into()),
                ..Default::default()
            })
            .await,
            "ValidationException",
        );
    }
}

/// Message: 1-4096 bytes on both operations; MAC: 1-6144 bytes on VerifyMac.
#[tokio::test]
async fn hmac_message_and_mac_sizes_at_their_limits() {
    let server = Server::start().await;
    let mut c = server.client().await;
    for (spec, alg, len) in HMAC_SPECS {
        let key = create_hmac(&mut c, spec).await;
        let id = key.key_id.as_str();
        for n in [1, 4096] {
            let m = mac(&mut c, id, alg, &pattern(n)).await;
            assert_eq!(m.len(), len);
            verify_ok(&mut c, id, alg, &pattern(n), &m).await;
        }
        let m = mac(&mut c, id, alg, b"x").await;
        for n in [0, 4097] {
            expect_err(
                c.generate_mac(mac_req(id, alg, &pattern(n))).await,
                "ValidationException",
            );
            expect_err(
                c.verify_mac(verify_req(id, alg, &pattern(n), &m)).await,
                "ValidationException",
            );
        }
        expect_err(
            c.verify_mac(verify_req(id, alg, b"x", &[])).await,
            "ValidationException",
        );
        expect_err(
            c.verify_mac(verify_req(id, alg, b"x", &[0u8; 6145])).await,
            "ValidationException",
        );
        expect_err(
            c.verify_mac(verify_req(id, alg, b"x", &[0u8; 6144])).await,
            "KMSInvalidMacException",
        );
    }
    // Key ids: unknown is NotFound, empty is ValidationException.
    for (key, expected) in [
        ("alias/none", "NotFoundException"),
        ("11111111-2222-3333-4444-555555555555", "NotFoundException"),
        ("", "ValidationException"),
    ] {
        expect_err(c.generate_mac(mac_req(key, "HMAC_SHA_256", b"x")).await, expected);
        expect_err(
            c.verify_mac(verify_req(key, "HMAC_SHA_256", b"x", &[0u8; 32])).await,
            expected,
        );
    }
}

/// HMAC keys obey key state, and give the same MACs after a restart (the key material persisted).
#[tokio::test]
async fn hmac_keys_follow_key_state_and_survive_restart() {
    let mut server = Server::start().await;
    let mut c = server.client().await;
    let msg = b"persisted".to_vec();
    let mut before = Vec::new();
    for (spec, alg, _) in HMAC_SPECS {
        let key = create_hmac(&mut c, spec).await;
        let m = mac(&mut c, &key.key_id, alg, &msg).await;
        before.push((key, alg, m));
    }

    let (key, alg, m) = &before[1];
    c.disable_key(pb::DisableKeyRequest {
        key_id: key.key_id.clone(),
    })
    .await
    .unwrap();
    expect_err(
        c.generate_mac(mac_req(&key.key_id, alg, &msg)).await,
        "DisabledException",
    );
    expect_err(
        c.verify_mac(verify_req(&key.key_id, alg, &msg, m)).await,
        "DisabledException",
    );
    c.enable_key(pb::EnableKeyRequest {
        key_id: key.key_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(&mac(&mut c, &key.key_id, alg, &msg).await, m);

    server.restart().await;
    let mut c = server.client().await;
    for (key, alg, m) in &before {
        assert_eq!(
            &mac(&mut c, &key.key_id, alg, &msg).await,
            m,
            "{}: the MAC changed across a restart",
            key.key_spec
        );
        verify_ok(&mut c, &key.key_id, alg, &msg, m).await;
    }

    let (key, alg, m) = &before[3];
    c.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: key.key_id.clone(),
        pending_window_in_days: Some(7),
    })
    .await
    .unwrap();
    expect_err(
        c.generate_mac(mac_req(&key.key_id, alg, &msg)).await,
        "KMSInvalidStateException",
    );
    expect_err(
        c.verify_mac(verify_req(&key.key_id, alg, &msg, m)).await,
        "KMSInvalidStateException",
    );
}
