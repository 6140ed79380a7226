//! Cryptographic operations: Encrypt/Decrypt, the KeyId check on Decrypt, ciphertext integrity,
//! encryption-context binding, ReEncrypt, data keys and GenerateRandom.

use std::collections::HashMap;

use kms::proto as pb;

use crate::common::*;

fn decrypt_req(blob: &[u8], context: &HashMap<String, String>, key_id: Option<&str>) -> pb::DecryptRequest {
    pb::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        encryption_context: context.clone(),
        key_id: key_id.map(str::to_string),
        ..Default::default()
    }
}

async fn encrypt(
    c: &mut Client,
    key_id: &str,
    plaintext: &[u8],
    context: &HashMap<String, String>,
) -> pb::EncryptResponse {
    c.encrypt(pb::EncryptRequest {
        key_id: key_id.into(),
        plaintext: plaintext.to_vec(),
        encryption_context: context.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn alias(c: &mut Client, name: &str, key_id: &str) {
    c.create_alias(pb::CreateAliasRequest {
        alias_name: name.into(),
        target_key_id: key_id.into(),
    })
    .await
    .unwrap();
}

fn alias_arn(name: &str) -> String {
    format!("arn:aws:kms:us-east-1:111122223333:{name}")
}

/// Deterministic, non-repeating test bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn encrypt_decrypt_round_trips_and_decrypt_checks_the_key_id() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let a = create_key(&mut c).await;
    let b = create_key(&mut c).await;
    alias(&mut c, "alias/a", &a.key_id).await;
    alias(&mut c, "alias/b", &b.key_id).await;
    let none = HashMap::new();

    let a_forms = [
        a.key_id.clone(),
        a.arn.clone(),
        "alias/a".to_string(),
        alias_arn("alias/a"),
    ];
    let b_forms = [
        b.key_id.clone(),
        b.arn.clone(),
        "alias/b".to_string(),
        alias_arn("alias/b"),
    ];
    for (form, size) in a_forms.iter().zip([1usize, 100, 4095, 4096]) {
        let plaintext = pattern(size);
        let e = encrypt(&mut c, form, &plaintext, &none).await;
        assert_eq!(e.key_id, a.arn, "Encrypt via {form}");
        assert_eq!(e.encryption_algorithm, "SYMMETRIC_DEFAULT");
        assert!(e.ciphertext_blob.len() > size);
        if size >= 16 {
            assert!(
                !e.ciphertext_blob.windows(16).any(|w| w == &plaintext[..16]),
                "the blob carries the plaintext"
            );
        }
        // Without a KeyId the blob names its key.
        let d = c
            .decrypt(decrypt_req(&e.ciphertext_blob, &none, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, plaintext);
        assert_eq!(d.key_id, a.arn);
        assert_eq!(d.encryption_algorithm, "SYMMETRIC_DEFAULT");
    }

    let plaintext = b"which key made me?".to_vec();
    let blob = encrypt(&mut c, &a.key_id, &plaintext, &none).await.ciphertext_blob;
    // Encryption is randomised: the same plaintext twice gives two blobs.
    let again = encrypt(&mut c, &a.key_id, &plaintext, &none).await.ciphertext_blob;
    assert_ne!(blob, again);
    // The explicit default algorithm is accepted on both sides.
    let explicit = c
        .encrypt(pb::EncryptRequest {
            key_id: a.key_id.clone(),
            plaintext: plaintext.clone(),
            encryption_algorithm: Some("SYMMETRIC_DEFAULT".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let d = c
        .decrypt(pb::DecryptRequest {
            ciphertext_blob: explicit.ciphertext_blob,
            encryption_algorithm: Some("SYMMETRIC_DEFAULT".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, plaintext);

    // Decrypt with the right key, in any form, succeeds; with another key, in any form, it is
    // IncorrectKeyException.
    for form in &a_forms {
        let d = c
            .decrypt(decrypt_req(&blob, &none, Some(form)))
            .await
            .unwrap_or_else(|e| panic!("Decrypt with KeyId {form}: {e:?}"))
            .into_inner();
        assert_eq!(d.plaintext, plaintext);
        assert_eq!(d.key_id, a.arn);
    }
    for form in &b_forms {
        expect_err(
            c.decrypt(decrypt_req(&blob, &none, Some(form))).await,
            "IncorrectKeyException",
        );
    }
    // A KeyId naming nothing is NotFoundException, not a decryption.
    expect_err(
        c.decrypt(decrypt_req(&blob, &none, Some("alias/none"))).await,
        "NotFoundException",
    );
    // Blobs made under B name B.
    let b_blob = encrypt(&mut c, "alias/b", &plaintext, &none).await.ciphertext_blob;
    let d = c
        .decrypt(decrypt_req(&b_blob, &none, Some(&b.arn)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.key_id, b.arn);
    expect_err(
        c.decrypt(decrypt_req(&b_blob, &none, Some(&a.key_id))).await,
        "IncorrectKeyException",
    );
}

#[tokio::test]
async fn every_tampered_byte_and_every_truncation_is_invalid_ciphertext() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let context = ctx(&[("purpose", "integrity")]);
    let plaintext = pattern(32);
    let blob = encrypt(&mut c, &key.key_id, &plaintext, &context).await.ciphertext_blob;
    assert!(blob.len() > plaintext.len());

    // Each byte, with the lowest and the highest bit flipped: header (version, key id, material
    // id), nonce, body and tag alike.
    for i in 0..blob.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = blob.clone();
            bad[i] ^= bit;
            let r = c.decrypt(decrypt_req(&bad, &context, None)).await;
            let msg = match r {
                Ok(r) => panic!(
                    "flipping bit {bit:#04x} of byte {i} went unnoticed: {:?}",
                    r.into_inner()
                ),
                Err(s) => {
                    assert_eq!(
                        error_type(&s),
                        "InvalidCiphertextException",
                        "byte {i} bit {bit:#04x}: {}",
                        s.message()
                    );
                    s.message().to_string()
                }
            };
            assert!(!msg.is_empty());
        }
    }
    // Every truncation (keeping at least one byte), and an extension.
    for len in 1..blob.len() {
        expect_err(
            c.decrypt(decrypt_req(&blob[..len], &context, None)).await,
            "InvalidCiphertextException",
        );
    }
    let mut longer = blob.clone();
    longer.push(0);
    expect_err(
        c.decrypt(decrypt_req(&longer, &context, None)).await,
        "InvalidCiphertextException",
    );
    // Garbage of a plausible length.
    expect_err(
        c.decrypt(decrypt_req(&vec![1u8; blob.len()], &context, None)).await,
        "InvalidCiphertextException",
    );
    // The tampering was the only problem: the original still decrypts.
    let d = c
        .decrypt(decrypt_req(&blob, &context, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, plaintext);
}

#[tokio::test]
async fn a_blob_naming_an_unknown_key_is_audited_without_that_key() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let context = ctx(&[]);
    let mut blob = encrypt(&mut c, &key.key_id, &pattern(32), &context)
        .await
        .ciphertext_blob;
    // The header's key id (bytes 1..17 after the version byte) now names a key that was never made.
    blob[1..17].copy_from_slice(&[0x5a; 16]);
    let status = c.decrypt(decrypt_req(&blob, &context, None)).await.unwrap_err();
    assert_eq!(
        error_type(&status),
        "InvalidCiphertextException",
        "{}",
        status.message()
    );
    let record = server.audit_record_of(&status);
    assert_eq!(record["outcome"], "InvalidCiphertextException");
    assert!(
        record.get("key_arn").is_none(),
        "a forged header named the key: {record}"
    );
}

#[tokio::test]
async fn encryption_context_is_bound_to_the_ciphertext() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let pairs = [("purpose", "backup"), ("tenant", "acme"), ("region", "eu-west-1")];
    let context = ctx(&pairs);
    let plaintext = b"context-bound".to_vec();
    let blob = encrypt(&mut c, &key.key_id, &plaintext, &context).await.ciphertext_blob;

    // The same pairs in any order decrypt.
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let mut m = HashMap::new();
        for i in order {
            m.insert(pairs[i].0.to_string(), pairs[i].1.to_string());
        }
        let d = c
            .decrypt(decrypt_req(&blob, &m, None))
            .await
            .unwrap_or_else(|e| panic!("order {order:?}: {e:?}"))
            .into_inner();
        assert_eq!(d.plaintext, plaintext);
    }

    let wrong = [
        ("missing entirely", HashMap::new()),
        ("one pair missing", ctx(&[("purpose", "backup"), ("tenant", "acme")])),
        (
            "wrong value",
            ctx(&[("purpose", "backup"), ("tenant", "evil"), ("region", "eu-west-1")]),
        ),
        (
            "key in another case",
            ctx(&[("Purpose", "backup"), ("tenant", "acme"), ("region", "eu-west-1")]),
        ),
        (
            "values swapped between keys",
            ctx(&[("purpose", "acme"), ("tenant", "backup"), ("region", "eu-west-1")]),
        ),
        (
            "extra pair",
            ctx(&[
                ("purpose", "backup"),
                ("tenant", "acme"),
                ("region", "eu-west-1"),
                ("extra", "x"),
            ]),
        ),
        (
            "empty value for a key",
            ctx(&[("purpose", "backup"), ("tenant", ""), ("region", "eu-west-1")]),
        ),
    ];
    for (what, m) in &wrong {
        let msg = expect_err(
            c.decrypt(decrypt_req(&blob, m, None)).await,
            "InvalidCiphertextException",
        );
        assert!(
            !msg.contains("acme"),
            "{what}: the message leaks a context value: {msg}"
        );
        // Naming the right key does not help.
        expect_err(
            c.decrypt(decrypt_req(&blob, m, Some(&key.key_id))).await,
            "InvalidCiphertextException",
        );
    }

    // A blob made without a context does not open with one.
    let bare = encrypt(&mut c, &key.key_id, &plaintext, &HashMap::new())
        .await
        .ciphertext_blob;
    expect_err(
        c.decrypt(decrypt_req(&bare, &ctx(&[("purpose", "backup")]), None))
            .await,
        "InvalidCiphertextException",
    );
    // Pairs are not confused by where a key ends and its value begins.
    let split = encrypt(&mut c, &key.key_id, &plaintext, &ctx(&[("a", "1b")]))
        .await
        .ciphertext_blob;
    expect_err(
        c.decrypt(decrypt_req(&split, &ctx(&[("a1", "b")]), None)).await,
        "InvalidCiphertextException",
    );
    // Non-ASCII contexts work.
    let unicode = ctx(&[("ключ", "значение ✓")]);
    let u = encrypt(&mut c, &key.key_id, &plaintext, &unicode).await.ciphertext_blob;
    let d = c.decrypt(decrypt_req(&u, &unicode, None)).await.unwrap().into_inner();
    assert_eq!(d.plaintext, plaintext);

    // Data keys are bound the same way.
    let dk = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: key.key_id.clone(),
            key_spec: Some("AES_256".into()),
            encryption_context: context.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    expect_err(
        c.decrypt(decrypt_req(&dk.ciphertext_blob, &HashMap::new(), None)).await,
        "InvalidCiphertextException",
    );
    let d = c
        .decrypt(decrypt_req(&dk.ciphertext_blob, &context, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, dk.plaintext);
}

#[tokio::test]
async fn re_encrypt_moves_a_ciphertext_to_another_key_and_context() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let a = create_key(&mut c).await;
    let b = create_key(&mut c).await;
    alias(&mut c, "alias/source", &a.key_id).await;
    alias(&mut c, "alias/destination", &b.key_id).await;
    let c1 = ctx(&[("stage", "one")]);
    let c2 = ctx(&[("stage", "two"), ("owner", "b")]);
    let plaintext = pattern(200);
    let blob = encrypt(&mut c, &a.key_id, &plaintext, &c1).await.ciphertext_blob;

    let req = |dest: &str, source_ctx: &HashMap<String, String>, source_key: Option<&str>| pb::ReEncryptRequest {
        ciphertext_blob: blob.clone(),
        source_encryption_context: source_ctx.clone(),
        source_key_id: source_key.map(str::to_string),
        destination_key_id: dest.into(),
        destination_encryption_context: c2.clone(),
        ..Default::default()
    };
    let r = c.re_encrypt(req(&b.key_id, &c1, None)).await.unwrap().into_inner();
    assert_eq!(r.source_key_id, a.arn);
    assert_eq!(r.key_id, b.arn);
    assert_eq!(r.source_encryption_algorithm, "SYMMETRIC_DEFAULT");
    assert_eq!(r.destination_encryption_algorithm, "SYMMETRIC_DEFAULT");
    assert_ne!(r.ciphertext_blob, blob);
    // Its audit record names both keys and both contexts' keys (never their values).
    let (text, records) = server.audit_records();
    let record = records.iter().rev().find(|r| r["operation"] == "ReEncrypt").unwrap();
    assert_eq!(record["source_key_arn"], a.arn.as_str());
    assert_eq!(record["key_arn"], b.arn.as_str());
    assert_eq!(record["source_encryption_context_keys"], serde_json::json!(["stage"]));
    assert_eq!(record["encryption_context_keys"], serde_json::json!(["owner", "stage"]));
    assert!(
        !text.contains("\"one\"") && !text.contains("\"two\""),
        "a context value was audited"
    );

    // The new blob decrypts under B with c2, to the original plaintext...
    let d = c
        .decrypt(decrypt_req(&r.ciphertext_blob, &c2, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, plaintext);
    assert_eq!(d.key_id, b.arn);
    let d = c
        .decrypt(decrypt_req(&r.ciphertext_blob, &c2, Some("alias/destination")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, plaintext);
    // ...and not with the old context, no context, or as A's.
    for wrong in [&c1, &HashMap::new()] {
        expect_err(
            c.decrypt(decrypt_req(&r.ciphertext_blob, wrong, None)).await,
            "InvalidCiphertextException",
        );
    }
    expect_err(
        c.decrypt(decrypt_req(&r.ciphertext_blob, &c2, Some(&a.key_id))).await,
        "IncorrectKeyException",
    );
    // The source blob is untouched and still A's.
    let d = c.decrypt(decrypt_req(&blob, &c1, None)).await.unwrap().into_inner();
    assert_eq!((d.plaintext, d.key_id), (plaintext.clone(), a.arn.clone()));

    // Source key and destination in other forms.
    let r2 = c
        .re_encrypt(req(&alias_arn("alias/destination"), &c1, Some("alias/source")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r2.source_key_id.as_str(), r2.key_id.as_str()),
        (a.arn.as_str(), b.arn.as_str())
    );
    let r3 = c.re_encrypt(req(&b.arn, &c1, Some(&a.arn))).await.unwrap().into_inner();
    let d = c
        .decrypt(decrypt_req(&r3.ciphertext_blob, &c2, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, plaintext);

    // The source side is checked like Decrypt.
    expect_err(
        c.re_encrypt(req(&b.key_id, &c2, None)).await,
        "InvalidCiphertextException",
    );
    expect_err(
        c.re_encrypt(req(&b.key_id, &HashMap::new(), None)).await,
        "InvalidCiphertextException",
    );
    expect_err(
        c.re_encrypt(req(&b.key_id, &c1, Some(&b.key_id))).await,
        "IncorrectKeyException",
    );
    let mut tampered = req(&b.key_id, &c1, None);
    let last = tampered.ciphertext_blob.len() - 1;
    tampered.ciphertext_blob[last] ^= 1;
    expect_err(c.re_encrypt(tampered).await, "InvalidCiphertextException");
    expect_err(c.re_encrypt(req("alias/nowhere", &c1, None)).await, "NotFoundException");

    // Re-encrypting under the same key changes only the context.
    let same = c
        .re_encrypt(pb::ReEncryptRequest {
            ciphertext_blob: blob.clone(),
            source_encryption_context: c1.clone(),
            destination_key_id: a.key_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (same.source_key_id.as_str(), same.key_id.as_str()),
        (a.arn.as_str(), a.arn.as_str())
    );
    let d = c
        .decrypt(decrypt_req(&same.ciphertext_blob, &HashMap::new(), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, plaintext);
}

#[tokio::test]
async fn data_keys_and_random_bytes() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    alias(&mut c, "alias/data", &key.key_id).await;
    let none = HashMap::new();

    // GenerateDataKey: the plaintext has the requested length and the blob decrypts to it.
    let cases: [(Option<&str>, Option<i32>, usize); 5] = [
        (Some("AES_256"), None, 32),
        (Some("AES_128"), None, 16),
        (None, Some(1), 1),
        (None, Some(64), 64),
        (None, Some(1024), 1024),
    ];
    for (spec, n, len) in cases {
        let dk = c
            .generate_data_key(pb::GenerateDataKeyRequest {
                key_id: "alias/data".into(),
                key_spec: spec.map(str::to_string),
                number_of_bytes: n,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dk.plaintext.len(), len, "{spec:?} {n:?}");
        assert_eq!(dk.key_id, key.arn);
        let d = c
            .decrypt(decrypt_req(&dk.ciphertext_blob, &none, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, dk.plaintext);
        assert_eq!(d.key_id, key.arn);
    }
    // Two data keys differ.
    let gdk = |spec: &str| pb::GenerateDataKeyRequest {
        key_id: key.key_id.clone(),
        key_spec: Some(spec.into()),
        ..Default::default()
    };
    let one = c.generate_data_key(gdk("AES_256")).await.unwrap().into_inner();
    let two = c.generate_data_key(gdk("AES_256")).await.unwrap().into_inner();
    assert_ne!(one.plaintext, two.plaintext);
    assert_ne!(one.ciphertext_blob, two.ciphertext_blob);
    assert_ne!(one.plaintext, vec![0u8; 32]);

    // GenerateDataKeyWithoutPlaintext: the response has no plaintext field at all (this
    // destructuring stops compiling if one is added), and the blob holds a key of the requested length.
    let mut seen = Vec::new();
    for (spec, n, len) in [
        (Some("AES_128"), None, 16),
        (Some("AES_256"), None, 32),
        (Some("AES_256"), None, 32),
        (None, Some(1024), 1024),
    ] {
        let pb::GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob,
            key_id,
        } = c
            .generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                key_id: key.arn.clone(),
                key_spec: spec.map(str::to_string),
                number_of_bytes: n,
                encryption_context: ctx(&[("use", "later")]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(key_id, key.arn);
        expect_err(
            c.decrypt(decrypt_req(&ciphertext_blob, &none, None)).await,
            "InvalidCiphertextException",
        );
        let d = c
            .decrypt(decrypt_req(&ciphertext_blob, &ctx(&[("use", "later")]), None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext.len(), len, "{spec:?} {n:?}");
        assert_eq!(d.key_id, key.arn);
        seen.push(d.plaintext);
    }
    assert_ne!(seen[1], seen[2], "two AES_256 data keys are the same");

    // GenerateRandom: the requested length, and two calls differ.
    for n in [1, 16, 32, 1024] {
        let r = c
            .generate_random(pb::GenerateRandomRequest {
                number_of_bytes: Some(n),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.plaintext.len(), n as usize);
    }
    let r = |n| pb::GenerateRandomRequest {
        number_of_bytes: Some(n),
    };
    let x = c.generate_random(r(32)).await.unwrap().into_inner().plaintext;
    let y = c.generate_random(r(32)).await.unwrap().into_inner().plaintext;
    assert_ne!(x, y);
    let big = c.generate_random(r(1024)).await.unwrap().into_inner().plaintext;
    let distinct: std::collections::HashSet<u8> = big.iter().copied().collect();
    assert!(
        distinct.len() > 128,
        "1024 random bytes with only {} distinct values",
        distinct.len()
    );
}

/// A blob that happens to start like a symmetric header (as one random RSA ciphertext in 256
/// does) but names no key is an invalid ciphertext, whatever algorithm the caller names.
#[tokio::test]
async fn a_header_lookalike_naming_no_key_is_an_invalid_ciphertext() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut blob = vec![0x5au8; 256];
    blob[0] = 1; // the symmetric format's version byte
    for algorithm in [None, Some("SYMMETRIC_DEFAULT"), Some("RSAES_OAEP_SHA_256")] {
        let req = pb::DecryptRequest {
            ciphertext_blob: blob.clone(),
            encryption_algorithm: algorithm.map(String::from),
            ..Default::default()
        };
        expect_err(c.decrypt(req).await, "InvalidCiphertextException");
    }
}

/// A new symmetric key and a blob it made.
async fn symmetric_blob(c: &mut Client) -> (pb::KeyMetadata, Vec<u8>) {
    let sym = create_key(c).await;
    let blob = encrypt(c, &sym.key_id, b"secret", &HashMap::new())
        .await
        .ciphertext_blob;
    (sym, blob)
}

/// A symmetric blob whose key id was changed to name an existing HMAC or signing key is an
/// invalid ciphertext, as any other changed byte: the answer doesn't reveal that key's usage.
#[tokio::test]
async fn a_blob_changed_to_name_a_non_encryption_key_is_an_invalid_ciphertext() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (_, blob) = symmetric_blob(&mut c).await;
    for (spec, usage) in [("HMAC_256", "GENERATE_VERIFY_MAC"), ("ECC_NIST_P256", "SIGN_VERIFY")] {
        let other = create_key_of(&mut c, spec, usage).await;
        let mut changed = blob.clone();
        changed[1..17].copy_from_slice(uuid::Uuid::parse_str(&other.key_id).unwrap().as_bytes());
        for algorithm in [None, Some("RSAES_OAEP_SHA_1")] {
            let answer = c
                .decrypt(pb::DecryptRequest {
                    ciphertext_blob: changed.clone(),
                    encryption_algorithm: algorithm.map(String::from),
                    ..Default::default()
                })
                .await;
            let message = expect_err(answer, "InvalidCiphertextException");
            assert!(!message.contains(usage), "{spec}: {message}");
        }
    }
}

/// A symmetric blob decrypted with KeyId naming a key that doesn't encrypt (HMAC, signing) is
/// IncorrectKeyException: the blob names its key, and it is another. AWS answers so for an HMAC key
/// (LocalStack's test_error_messaging_for_invalid_keys, recorded against AWS), before looking at
/// the named key's usage. ReEncrypt's SourceKeyId is checked the same way. An RSA encryption key
/// takes the blob for an RSA ciphertext, whatever it looks like.
#[tokio::test]
async fn a_symmetric_blob_with_key_id_naming_a_key_of_another_kind_is_the_incorrect_key() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let (sym, blob) = symmetric_blob(&mut c).await;
    for (spec, usage) in [("HMAC_256", "GENERATE_VERIFY_MAC"), ("ECC_NIST_P256", "SIGN_VERIFY")] {
        let other = create_key_of(&mut c, spec, usage).await;
        for algorithm in [None, Some("SYMMETRIC_DEFAULT")] {
            let answer = c
                .decrypt(pb::DecryptRequest {
                    ciphertext_blob: blob.clone(),
                    key_id: Some(other.key_id.clone()),
                    encryption_algorithm: algorithm.map(String::from),
                    ..Default::default()
                })
                .await;
            let message = expect_err(answer, "IncorrectKeyException");
            assert!(message.contains(&other.arn), "{spec}: {message}");
            let answer = c
                .re_encrypt(pb::ReEncryptRequest {
                    ciphertext_blob: blob.clone(),
                    source_key_id: Some(other.key_id.clone()),
                    source_encryption_algorithm: algorithm.map(String::from),
                    destination_key_id: sym.key_id.clone(),
                    ..Default::default()
                })
                .await;
            expect_err(answer, "IncorrectKeyException");
        }
    }
    let rsa = create_key_of(&mut c, "RSA_2048", "ENCRYPT_DECRYPT").await;
    for (algorithm, expected) in [
        (None, "InvalidKeyUsageException"),
        (Some("RSAES_OAEP_SHA_256"), "InvalidCiphertextException"),
    ] {
        let answer = c
            .decrypt(pb::DecryptRequest {
                ciphertext_blob: blob.clone(),
                key_id: Some(rsa.key_id.clone()),
                encryption_algorithm: algorithm.map(String::from),
                ..Default::default()
            })
            .await;
        expect_err(answer, expected);
    }
}
