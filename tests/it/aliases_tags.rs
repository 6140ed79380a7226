//! Aliases (create, move, delete, list with a key filter and pages) and tags (overwrite, untag, the
//! 50-tag limit, pages).

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use kms::proto as pb;

use crate::common::*;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn create_alias_req(name: &str, target: &str) -> pb::CreateAliasRequest {
    pb::CreateAliasRequest {
        alias_name: name.into(),
        target_key_id: target.into(),
    }
}

fn update_alias_req(name: &str, target: &str) -> pb::UpdateAliasRequest {
    pb::UpdateAliasRequest {
        alias_name: name.into(),
        target_key_id: target.into(),
    }
}

fn delete_alias_req(name: &str) -> pb::DeleteAliasRequest {
    pb::DeleteAliasRequest {
        alias_name: name.into(),
    }
}

fn encrypt_req(key_id: &str) -> pb::EncryptRequest {
    pb::EncryptRequest {
        key_id: key_id.into(),
        plaintext: b"aliased".to_vec(),
        ..Default::default()
    }
}

fn decrypt_req(blob: &[u8], key_id: Option<&str>) -> pb::DecryptRequest {
    pb::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        key_id: key_id.map(str::to_string),
        ..Default::default()
    }
}

fn tag(k: &str, v: &str) -> pb::Tag {
    pb::Tag {
        tag_key: k.into(),
        tag_value: v.into(),
    }
}

/// All aliases (of `key_id`, if given), following markers with `limit`; checks each page's shape.
async fn all_aliases(
    c: &mut Client,
    key_id: Option<&str>,
    limit: Option<i32>,
) -> (Vec<pb::AliasListEntry>, Vec<usize>) {
    let (mut out, mut pages, mut marker) = (Vec::new(), Vec::new(), None);
    loop {
        let page = c
            .list_aliases(pb::ListAliasesRequest {
                key_id: key_id.map(str::to_string),
                limit,
                marker,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.truncated, page.next_marker.is_some(), "{page:?}");
        if let Some(l) = limit {
            assert!(page.aliases.len() <= l as usize);
        }
        pages.push(page.aliases.len());
        out.extend(page.aliases);
        if !page.truncated {
            return (out, pages);
        }
        marker = page.next_marker;
        assert!(pages.len() < 50, "pagination does not end");
    }
}

async fn all_tags(c: &mut Client, key_id: &str, limit: Option<i32>) -> (Vec<pb::Tag>, Vec<usize>) {
    let (mut out, mut pages, mut marker) = (Vec::new(), Vec::new(), None);
    loop {
        let page = c
            .list_resource_tags(pb::ListResourceTagsRequest {
                key_id: key_id.into(),
                limit,
                marker,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.truncated, page.next_marker.is_some(), "{page:?}");
        pages.push(page.tags.len());
        out.extend(page.tags);
        if !page.truncated {
            return (out, pages);
        }
        marker = page.next_marker;
        assert!(pages.len() < 60, "pagination does not end");
    }
}

fn as_map(tags: &[pb::Tag]) -> HashMap<String, String> {
    let map: HashMap<String, String> = tags.iter().map(|t| (t.tag_key.clone(), t.tag_value.clone())).collect();
    assert_eq!(map.len(), tags.len(), "a tag key is listed twice: {tags:?}");
    map
}

#[tokio::test]
async fn aliases_move_between_keys_and_disappear_when_deleted() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let k1 = create_key(&mut c).await;
    let k2 = create_key(&mut c).await;

    let before = now();
    c.create_alias(create_alias_req("alias/app", &k1.key_id)).await.unwrap();
    let e1 = c.encrypt(encrypt_req("alias/app")).await.unwrap().into_inner();
    assert_eq!(e1.key_id, k1.arn);
    let (listed, _) = all_aliases(&mut c, None, None).await;
    assert_eq!(listed.len(), 1);
    let entry = &listed[0];
    assert_eq!(entry.alias_name, "alias/app");
    assert_eq!(entry.alias_arn, "arn:aws:kms:us-east-1:111122223333:alias/app");
    assert_eq!(entry.target_key_id, k1.key_id);
    assert!(entry.creation_date >= before && entry.creation_date <= now());
    assert_eq!(entry.last_updated_date, entry.creation_date);

    // The name is taken, whichever key the second attempt names.
    for target in [&k1.key_id, &k2.key_id] {
        expect_err(
            c.create_alias(create_alias_req("alias/app", target)).await,
            "AlreadyExistsException",
        );
    }
    assert_eq!(
        c.describe_key(pb::DescribeKeyRequest {
            key_id: "alias/app".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .key_id,
        k1.key_id
    );

    // Move the alias to K2 (named by ARN): new ciphertexts are K2's, old ones still K1's.
    c.update_alias(update_alias_req("alias/app", &k2.arn)).await.unwrap();
    let e2 = c.encrypt(encrypt_req("alias/app")).await.unwrap().into_inner();
    assert_eq!(e2.key_id, k2.arn);
    let d2 = c
        .decrypt(decrypt_req(&e2.ciphertext_blob, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d2.key_id, k2.arn);
    assert_eq!(d2.plaintext, b"aliased");
    let d1 = c
        .decrypt(decrypt_req(&e1.ciphertext_blob, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d1.key_id, k1.arn);
    assert_eq!(d1.plaintext, b"aliased");
    // Decrypt's KeyId follows the alias too.
    c.decrypt(decrypt_req(&e2.ciphertext_blob, Some("alias/app")))
        .await
        .unwrap();
    expect_err(
        c.decrypt(decrypt_req(&e1.ciphertext_blob, Some("alias/app"))).await,
        "IncorrectKeyException",
    );
    let dk = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: "alias/app".into(),
            key_spec: Some("AES_128".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dk.key_id, k2.arn);
    let (listed, _) = all_aliases(&mut c, None, None).await;
    assert_eq!(listed[0].target_key_id, k2.key_id);
    assert_eq!(listed[0].creation_date, entry.creation_date);
    assert!(listed[0].last_updated_date >= entry.last_updated_date);

    // And back, by key id.
    c.update_alias(update_alias_req("alias/app", &k1.key_id)).await.unwrap();
    let e3 = c.encrypt(encrypt_req("alias/app")).await.unwrap().into_inner();
    assert_eq!(e3.key_id, k1.arn);

    // Unknown names and targets.
    let missing = expect_err(
        c.update_alias(update_alias_req("alias/unknown", &k1.key_id)).await,
        "NotFoundException",
    );
    assert!(missing.ends_with(":alias/unknown is not found."), "{missing}");
    expect_err(
        c.update_alias(update_alias_req("alias/app", "00000000-0000-4000-8000-000000000000"))
            .await,
        "NotFoundException",
    );
    expect_err(
        c.create_alias(create_alias_req("alias/other", "00000000-0000-4000-8000-000000000000"))
            .await,
        "NotFoundException",
    );
    // An alias may not point at an alias.
    expect_err(
        c.create_alias(create_alias_req("alias/other", "alias/app")).await,
        "NotFoundException",
    );
    expect_err(
        c.update_alias(update_alias_req("alias/app", "alias/app")).await,
        "NotFoundException",
    );
    // None of that changed the alias.
    assert_eq!(
        c.encrypt(encrypt_req("alias/app")).await.unwrap().into_inner().key_id,
        k1.arn
    );

    // Delete: the alias no longer resolves anywhere; the keys and their ciphertexts are unaffected.
    c.delete_alias(delete_alias_req("alias/app")).await.unwrap();
    expect_err(c.encrypt(encrypt_req("alias/app")).await, "NotFoundException");
    expect_err(
        c.describe_key(pb::DescribeKeyRequest {
            key_id: "alias/app".into(),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );
    expect_err(
        c.describe_key(pb::DescribeKeyRequest {
            key_id: "arn:aws:kms:us-east-1:111122223333:alias/app".into(),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );
    expect_err(
        c.decrypt(decrypt_req(&e1.ciphertext_blob, Some("alias/app"))).await,
        "NotFoundException",
    );
    expect_err(
        c.update_alias(update_alias_req("alias/app", &k2.key_id)).await,
        "NotFoundException",
    );
    expect_err(c.delete_alias(delete_alias_req("alias/app")).await, "NotFoundException");
    expect_err(
        c.delete_alias(delete_alias_req("alias/never-existed")).await,
        "NotFoundException",
    );
    assert!(all_aliases(&mut c, None, None).await.0.is_empty());
    for blob in [&e1.ciphertext_blob, &e2.ciphertext_blob] {
        c.decrypt(decrypt_req(blob, None)).await.unwrap();
    }
    // The name is free again.
    c.create_alias(create_alias_req("alias/app", &k2.key_id)).await.unwrap();
    assert_eq!(
        c.encrypt(encrypt_req("alias/app")).await.unwrap().into_inner().key_id,
        k2.arn
    );
}

#[tokio::test]
async fn list_aliases_filters_by_key_and_pages() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let k1 = create_key(&mut c).await;
    let k2 = create_key(&mut c).await;
    let k3 = create_key(&mut c).await;
    let of_k1 = ["alias/k1-a", "alias/k1-b", "alias/k1/nested_c"];
    let of_k2 = ["alias/K2-upper", "alias/k2-x"];
    for name in of_k1 {
        c.create_alias(create_alias_req(name, &k1.key_id)).await.unwrap();
    }
    for name in of_k2 {
        c.create_alias(create_alias_req(name, &k2.arn)).await.unwrap();
    }
    let targets: HashMap<&str, &str> = of_k1
        .iter()
        .map(|n| (*n, k1.key_id.as_str()))
        .chain(of_k2.iter().map(|n| (*n, k2.key_id.as_str())))
        .collect();

    // Unfiltered, in one page and in pages of 2.
    let (everything, pages) = all_aliases(&mut c, None, None).await;
    assert_eq!(pages, vec![5]);
    for limit in [2, 1] {
        let (paged, pages) = all_aliases(&mut c, None, Some(limit)).await;
        let names: Vec<&str> = paged.iter().map(|a| a.alias_name.as_str()).collect();
        assert_eq!(names.len(), 5, "limit {limit}: {names:?}");
        assert_eq!(names.iter().collect::<HashSet<_>>().len(), 5, "duplicates: {names:?}");
        for a in &paged {
            assert_eq!(
                targets.get(a.alias_name.as_str()).copied(),
                Some(a.target_key_id.as_str()),
                "{a:?}"
            );
            assert_eq!(
                a.alias_arn,
                format!("arn:aws:kms:us-east-1:111122223333:{}", a.alias_name)
            );
        }
        assert_eq!(paged, everything, "limit {limit}");
        if limit == 2 {
            assert_eq!(pages, vec![2, 2, 1]);
        } else {
            assert_eq!(pages, vec![1; 5]);
        }
    }

    // Filtered by key id or key ARN: only that key's aliases, also across pages.
    for (key, expected) in [(&k1, &of_k1[..]), (&k2, &of_k2[..])] {
        for form in [&key.key_id, &key.arn] {
            for limit in [None, Some(1), Some(2)] {
                let (got, _) = all_aliases(&mut c, Some(form), limit).await;
                let mut names: Vec<&str> = got.iter().map(|a| a.alias_name.as_str()).collect();
                names.sort();
                let mut want = expected.to_vec();
                want.sort();
                assert_eq!(names, want, "KeyId {form}, limit {limit:?}");
                assert!(got.iter().all(|a| a.target_key_id == key.key_id));
            }
        }
    }
    // A Marker belongs to the key, whichever form named it: one got by key id serves the next
    // page asked for by the key's ARN, and the other way round; not another key's listing.
    for (first, then) in [(&k1.key_id, &k1.arn), (&k1.arn, &k1.key_id)] {
        let list = |key: &str, marker: Option<String>| pb::ListAliasesRequest {
            key_id: Some(key.to_string()),
            limit: Some(1),
            marker,
        };
        let page = c.list_aliases(list(first, None)).await.unwrap().into_inner();
        let next = c
            .list_aliases(list(then, page.next_marker.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next.aliases.len(), 1, "{first} then {then}");
        assert_ne!(next.aliases[0].alias_name, page.aliases[0].alias_name);
        let other = c.list_aliases(list(&k2.key_id, page.next_marker)).await;
        assert_eq!(error_type(&other.unwrap_err()), "InvalidMarkerException");
    }
    let (none, pages) = all_aliases(&mut c, Some(&k3.key_id), Some(2)).await;
    assert!(none.is_empty());
    assert_eq!(pages, vec![0]);

    // Moving an alias moves it between the filtered lists.
    c.update_alias(update_alias_req("alias/k1-a", &k3.key_id))
        .await
        .unwrap();
    let (k3s, _) = all_aliases(&mut c, Some(&k3.key_id), None).await;
    assert_eq!(
        k3s.iter().map(|a| a.alias_name.as_str()).collect::<Vec<_>>(),
        vec!["alias/k1-a"]
    );
    let (k1s, _) = all_aliases(&mut c, Some(&k1.key_id), None).await;
    assert_eq!(k1s.len(), 2);
}

#[tokio::test]
async fn tags_overwrite_untag_limit_and_pages() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let bystander = c
        .create_key(pb::CreateKeyRequest {
            tags: vec![tag("k1", "bystander")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();

    let five: Vec<pb::Tag> = (1..=5).map(|i| tag(&format!("k{i}"), &format!("v{i}"))).collect();
    c.tag_resource(pb::TagResourceRequest {
        key_id: key.key_id.clone(),
        tags: five.clone(),
    })
    .await
    .unwrap();

    // Pages of 2 over 5 tags: 2, 2, 1, each tag once with its value.
    let (tags, pages) = all_tags(&mut c, &key.key_id, Some(2)).await;
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(as_map(&tags), as_map(&five));
    let (tags, pages) = all_tags(&mut c, &key.arn, None).await;
    assert_eq!(pages, vec![5]);
    assert_eq!(as_map(&tags), as_map(&five));

    // TagResource overwrites an existing key's value and adds new ones.
    c.tag_resource(pb::TagResourceRequest {
        key_id: key.arn.clone(),
        tags: vec![tag("k1", "changed"), tag("k6", "")],
    })
    .await
    .unwrap();
    let (tags, _) = all_tags(&mut c, &key.key_id, Some(2)).await;
    let map = as_map(&tags);
    assert_eq!(map.len(), 6);
    assert_eq!(map["k1"], "changed");
    assert_eq!(map["k6"], "");
    assert_eq!(map["k2"], "v2");

    // UntagResource removes; unknown tag keys are ignored.
    c.untag_resource(pb::UntagResourceRequest {
        key_id: key.key_id.clone(),
        tag_keys: vec!["k1".into(), "k2".into(), "not-there".into()],
    })
    .await
    .unwrap();
    let (tags, _) = all_tags(&mut c, &key.key_id, None).await;
    let map = as_map(&tags);
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, vec!["k3", "k4", "k5", "k6"]);
    c.untag_resource(pb::UntagResourceRequest {
        key_id: key.arn.clone(),
        tag_keys: vec!["k6".into()],
    })
    .await
    .unwrap();
    assert_eq!(all_tags(&mut c, &key.key_id, None).await.0.len(), 3);
    // A thousand names may be given (a key has 50 tags at most), not more.
    let names = |n: usize| (0..n).map(|i| format!("absent-{i}")).collect::<Vec<String>>();
    c.untag_resource(pb::UntagResourceRequest {
        key_id: key.key_id.clone(),
        tag_keys: names(1000),
    })
    .await
    .unwrap();
    let too_many = c
        .untag_resource(pb::UntagResourceRequest {
            key_id: key.key_id.clone(),
            tag_keys: names(1001),
        })
        .await;
    let message = expect_err(too_many, "ValidationException");
    assert!(
        message.contains("1001 given") && message.contains("at most 1000"),
        "{message}"
    );
    assert_eq!(all_tags(&mut c, &key.key_id, None).await.0.len(), 3);

    // The other key's tags were never touched.
    let (theirs, _) = all_tags(&mut c, &bystander.key_id, None).await;
    assert_eq!(
        as_map(&theirs),
        HashMap::from([("k1".to_string(), "bystander".to_string())])
    );

    // Fill up to the limit of 50.
    let more: Vec<pb::Tag> = (0..47).map(|i| tag(&format!("fill-{i:02}"), "x")).collect();
    c.tag_resource(pb::TagResourceRequest {
        key_id: key.key_id.clone(),
        tags: more,
    })
    .await
    .unwrap();
    let (tags, pages) = all_tags(&mut c, &key.key_id, None).await;
    assert_eq!(tags.len(), 50);
    assert_eq!(pages, vec![50], "the default page holds all 50");
    let (paged, pages) = all_tags(&mut c, &key.key_id, Some(7)).await;
    assert_eq!(pages, vec![7, 7, 7, 7, 7, 7, 7, 1]);
    assert_eq!(as_map(&paged), as_map(&tags));

    // One more is refused, alone or together with an overwrite, and nothing changes.
    expect_err(
        c.tag_resource(pb::TagResourceRequest {
            key_id: key.key_id.clone(),
            tags: vec![tag("one-too-many", "x")],
        })
        .await,
        "TagException",
    );
    expect_err(
        c.tag_resource(pb::TagResourceRequest {
            key_id: key.key_id.clone(),
            tags: vec![tag("k3", "overwritten"), tag("one-too-many", "x")],
        })
        .await,
        "TagException",
    );
    let (after, _) = all_tags(&mut c, &key.key_id, None).await;
    assert_eq!(as_map(&after), as_map(&tags));
    assert_eq!(as_map(&after)["k3"], "v3");
    // Overwriting at the limit is fine: the count stays 50.
    c.tag_resource(pb::TagResourceRequest {
        key_id: key.key_id.clone(),
        tags: vec![tag("k3", "overwritten")],
    })
    .await
    .unwrap();
    let (after, _) = all_tags(&mut c, &key.key_id, None).await;
    assert_eq!(after.len(), 50);
    assert_eq!(as_map(&after)["k3"], "overwritten");
    // Removing one makes room for one.
    c.untag_resource(pb::UntagResourceRequest {
        key_id: key.key_id.clone(),
        tag_keys: vec!["fill-00".into()],
    })
    .await
    .unwrap();
    c.tag_resource(pb::TagResourceRequest {
        key_id: key.key_id.clone(),
        tags: vec![tag("room", "made")],
    })
    .await
    .unwrap();
    let map = as_map(&all_tags(&mut c, &key.key_id, None).await.0);
    assert_eq!(map.len(), 50);
    assert!(map.contains_key("room") && !map.contains_key("fill-00"));
}

/// AWS's "Aliases per KMS key" quota (50): the 51st alias of a key, created or moved onto it, is a
/// LimitExceededException that changes nothing.
#[tokio::test]
async fn a_key_has_at_most_50_aliases() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let full = create_key(&mut c).await;
    let other = create_key(&mut c).await;
    for i in 0..50 {
        c.create_alias(create_alias_req(&format!("alias/a{i:02}"), &full.key_id))
            .await
            .unwrap();
    }
    let msg = expect_err(
        c.create_alias(create_alias_req("alias/a50", &full.key_id)).await,
        "LimitExceededException",
    );
    assert!(
        msg.contains("already has 50 aliases") && msg.contains("at most 50"),
        "{msg}"
    );
    c.create_alias(create_alias_req("alias/elsewhere", &other.key_id))
        .await
        .unwrap();
    expect_err(
        c.update_alias(pb::UpdateAliasRequest {
            alias_name: "alias/elsewhere".into(),
            target_key_id: full.key_id.clone(),
        })
        .await,
        "LimitExceededException",
    );
    let (on_full, _) = all_aliases(&mut c, Some(&full.key_id), None).await;
    assert_eq!(on_full.len(), 50);
    let (on_other, _) = all_aliases(&mut c, Some(&other.key_id), None).await;
    assert_eq!(on_other.len(), 1, "the refused move left the alias where it was");
    // Re-pointing one of the key's own aliases at it is not a 51st.
    c.update_alias(pb::UpdateAliasRequest {
        alias_name: "alias/a00".into(),
        target_key_id: full.key_id.clone(),
    })
    .await
    .unwrap();
}

/// UpdateAlias moves an alias between keys of the same type (symmetric, asymmetric, HMAC) and
/// usage, as AWS documents; the key spec may differ.
#[tokio::test]
async fn update_alias_needs_the_same_key_type_and_usage_not_the_same_spec() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let make = |spec: &str, usage: &str| pb::CreateKeyRequest {
        key_spec: Some(spec.into()),
        key_usage: Some(usage.into()),
        ..Default::default()
    };
    let id = |r: pb::CreateKeyRequest| {
        let mut c = c.clone();
        async move { c.create_key(r).await.unwrap().into_inner().key_metadata.unwrap().key_id }
    };
    let ecc_sign = id(make("ECC_NIST_P256", "SIGN_VERIFY")).await;
    let rsa_sign = id(make("RSA_2048", "SIGN_VERIFY")).await;
    let rsa_encrypt = id(make("RSA_2048", "ENCRYPT_DECRYPT")).await;
    let hmac_256 = id(make("HMAC_256", "GENERATE_VERIFY_MAC")).await;
    let hmac_512 = id(make("HMAC_512", "GENERATE_VERIFY_MAC")).await;
    let symmetric = id(make("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")).await;

    c.create_alias(create_alias_req("alias/signer", &ecc_sign))
        .await
        .unwrap();
    c.update_alias(update_alias_req("alias/signer", &rsa_sign))
        .await
        .unwrap();
    let msg = expect_err(
        c.update_alias(update_alias_req("alias/signer", &rsa_encrypt)).await,
        "ValidationException",
    );
    assert!(msg.contains("same key usage"), "{msg}");
    c.create_alias(create_alias_req("alias/mac", &hmac_256)).await.unwrap();
    c.update_alias(update_alias_req("alias/mac", &hmac_512)).await.unwrap();
    let msg = expect_err(
        c.update_alias(update_alias_req("alias/mac", &symmetric)).await,
        "ValidationException",
    );
    assert!(msg.contains("HMAC") && msg.contains("symmetric"), "{msg}");
    let (listed, _) = all_aliases(&mut c, None, None).await;
    let target = |name: &str| {
        listed
            .iter()
            .find(|a| a.alias_name == name)
            .unwrap()
            .target_key_id
            .clone()
    };
    assert_eq!(target("alias/signer"), rsa_sign);
    assert_eq!(target("alias/mac"), hmac_512);
}
