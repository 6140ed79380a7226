//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, and grants
//! allowing (and not allowing) operations, with constraints, tokens, key-policy denies, restarts.

use kms::proto as pb;

use crate::common::*;

const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const CAROL: &str = "arn:aws:iam::111122223333:user/carol";
const BOB_TOKEN: &str = "grants-test-bob-token";
const CAROL_TOKEN: &str = "grants-test-carol-token";

fn config() -> String {
    let mut s = String::new();
    for (token, principal) in [(BOB_TOKEN, BOB), (CAROL_TOKEN, CAROL)] {
        s += &format!(
            "[[auth.tokens]]\nsha256 = {:?}\nprincipal = {principal:?}\n",
            kms::auth::token_digest(token)
        );
    }
    s
}

/// `config()` plus identity policies: `may` is allowed kms:RetireGrant on every key, `may_not`
/// (if any) denied it (the file lives in the returned directory).
fn config_retiring(may: &str, may_not: Option<&str>) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.toml");
    let retire = crate::auth::allow(&["kms:RetireGrant"], "*");
    let deny = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:RetireGrant", "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
    ]})
    .to_string();
    let mut principals: Vec<(&str, &[&str])> = vec![(may, &["retire"])];
    if let Some(p) = may_not {
        principals.push((p, &["deny"]));
    }
    std::fs::write(
        &identity,
        crate::auth::identity_file(&[("retire", &retire), ("deny", &deny)], &principals),
    )
    .unwrap();
    let cfg = format!(
        "[auth]\nidentity_policies_file = {:?}\n{}",
        identity.display().to_string(),
        config()
    );
    (dir, cfg)
}

/// A request sent as the principal of `token`.
fn as_user<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn ops(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn grant_req(key: &str, grantee: &str, operations: &[&str]) -> pb::CreateGrantRequest {
    pb::CreateGrantRequest {
        key_id: key.into(),
        grantee_principal: grantee.into(),
        operations: ops(operations),
        ..Default::default()
    }
}

fn encrypt_req(key: &str, context: &[(&str, &str)]) -> pb::EncryptRequest {
    pb::EncryptRequest {
        key_id: key.into(),
        plaintext: b"secret".to_vec(),
        encryption_context: ctx(context),
        ..Default::default()
    }
}

async fn create_grant(c: &mut Client, r: pb::CreateGrantRequest) -> pb::CreateGrantResponse {
    c.create_grant(r)
        .await
        .unwrap_or_else(|s| panic!("CreateGrant: {} {}", error_type(&s), s.message()))
        .into_inner()
}

/// Bob's grant allows exactly its operations with a matching context; a Deny in the key policy
/// beats it; a token works; revoking takes the permission away; grants survive kill -9.
#[tokio::test]
async fn a_grant_allows_its_operations_with_matching_context() {
    let mut server = Server::start_with(&config()).await;
    let mut root = server.client().await;
    let key = create_key(&mut root).await;
    let k = key.key_id.as_str();

    // Without a grant bob can't encrypt.
    expect_err(
        root.encrypt(as_user(BOB_TOKEN, encrypt_req(k, &[("dept", "eng")])))
            .await,
        "AccessDeniedException",
    );

    let mut g = grant_req(k, BOB, &["Encrypt", "Decrypt"]);
    g.constraints = Some(pb::GrantConstraints {
        encryption_context_subset: ctx(&[("Dept", "eng")]),
        ..Default::default()
    });
    g.retiring_principal = Some(CAROL.into());
    let created = create_grant(&mut root, g).await;
    assert_eq!(created.grant_id.len(), 64);
    assert!(created.grant_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!created.grant_token.is_empty());

    // Matching context (keys case-insensitive, superset allowed): encrypt and decrypt.
    let ct = root
        .encrypt(as_user(BOB_TOKEN, encrypt_req(k, &[("dept", "eng"), ("x", "1")])))
        .await
        .unwrap_or_else(|s| panic!("bob Encrypt: {} {}", error_type(&s), s.message()))
        .into_inner()
        .ciphertext_blob;
    let pt = root
        .decrypt(as_user(
            BOB_TOKEN,
            pb::DecryptRequest {
                ciphertext_blob: ct.clone(),
                encryption_context: ctx(&[("dept", "eng"), ("x", "1")]),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(pt, b"secret");

    // Not matching: wrong value, missing pair, value case differs.
    for bad in [&[("dept", "ops")][..], &[][..], &[("dept", "ENG")][..]] {
        expect_err(
            root.encrypt(as_user(BOB_TOKEN, encrypt_req(k, bad))).await,
            "AccessDeniedException",
        );
    }
    // Operations the grant does not include.
    expect_err(
        root.generate_data_key(as_user(
            BOB_TOKEN,
            pb::GenerateDataKeyRequest {
                key_id: k.into(),
                encryption_context: ctx(&[("dept", "eng")]),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            },
        ))
        .await,
        "AccessDeniedException",
    );
    expect_err(
        root.describe_key(as_user(
            BOB_TOKEN,
            pb::DescribeKeyRequest {
                key_id: k.into(),
                ..Default::default()
            },
        ))
        .await,
        "AccessDeniedException",
    );
    // Carol is not the grantee.
    expect_err(
        root.encrypt(as_user(CAROL_TOKEN, encrypt_req(k, &[("dept", "eng")])))
            .await,
        "AccessDeniedException",
    );

    // The grant token in the same request.
    let mut with_token = encrypt_req(k, &[("dept", "eng")]);
    with_token.grant_tokens = vec![created.grant_token.clone()];
    root.encrypt(as_user(BOB_TOKEN, with_token)).await.unwrap();

    // Survives kill -9.
    server.kill();
    server.start_again().await;
    let mut root = server.client().await;
    root.encrypt(as_user(BOB_TOKEN, encrypt_req(k, &[("dept", "eng")])))
        .await
        .unwrap();

    // An explicit Deny in the key policy beats the grant.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "no bob", "Effect": "Deny", "Principal": {"AWS": BOB},
             "Action": "kms:Encrypt", "Resource": "*"}
        ]
    });
    root.put_key_policy(pb::PutKeyPolicyRequest {
        key_id: k.into(),
        policy: policy.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_err(
        root.encrypt(as_user(BOB_TOKEN, encrypt_req(k, &[("dept", "eng")])))
            .await,
        "AccessDeniedException",
    );
    // Decrypt is not denied: the grant still allows it.
    root.decrypt(as_user(
        BOB_TOKEN,
        pb::DecryptRequest {
            ciphertext_blob: ct.clone(),
            encryption_context: ctx(&[("dept", "eng"), ("x", "1")]),
            ..Default::default()
        },
    ))
    .await
    .unwrap();

    // Revoked by root: bob is denied again, and the grant is gone.
    root.revoke_grant(pb::RevokeGrantRequest {
        key_id: k.into(),
        grant_id: created.grant_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_err(
        root.decrypt(as_user(
            BOB_TOKEN,
            pb::DecryptRequest {
                ciphertext_blob: ct,
                encryption_context: ctx(&[("dept", "eng"), ("x", "1")]),
                ..Default::default()
            },
        ))
        .await,
        "AccessDeniedException",
    );
    expect_err(
        root.revoke_grant(pb::RevokeGrantRequest {
            key_id: k.into(),
            grant_id: created.grant_id.clone(),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );
    // The token of a revoked grant is refused.
    expect_err(
        root.create_grant({
            let mut r = grant_req(k, BOB, &["Encrypt"]);
            r.grant_tokens = vec![created.grant_token];
            r
        })
        .await,
        "InvalidGrantTokenException",
    );
}

/// ListGrants pages and filters; ListRetirableGrants; RetireGrant by token and by key + id, and
/// only by those the grant allows; idempotent CreateGrant by name.
#[tokio::test]
async fn list_retire_and_idempotent_names() {
    let server = Server::start_with(&config()).await;
    let mut root = server.client().await;
    let key = create_key(&mut root).await;
    let k = key.key_id.as_str();
    let other = create_key(&mut root).await;

    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for (i, grantee) in [BOB, BOB, CAROL].iter().enumerate() {
        let mut r = grant_req(k, grantee, &["Encrypt", "DescribeKey"]);
        r.retiring_principal = Some(CAROL.into());
        r.name = Some(format!("grant-{i}"));
        let g = create_grant(&mut root, r).await;
        ids.push(g.grant_id);
        tokens.push(g.grant_token);
    }
    create_grant(&mut root, grant_req(&other.key_id, BOB, &["Encrypt"])).await;

    // Paging with Limit 1 over 3 grants.
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let page = root
            .list_grants(pb::ListGrantsRequest {
                key_id: k.into(),
                limit: Some(1),
                marker: marker.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.grants.len() <= 1);
        seen.extend(page.grants);
        if !page.truncated {
            assert!(page.next_marker.is_none());
            break;
        }
        marker = page.next_marker;
    }
    assert_eq!(seen.len(), 3);
    let mut listed: Vec<String> = seen.iter().map(|g| g.grant_id.clone()).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let first = seen.iter().find(|g| g.grant_id == ids[0]).unwrap();
    assert_eq!(first.key_id, key.arn);
    assert_eq!(first.grantee_principal, BOB);
    assert_eq!(first.retiring_principal.as_deref(), Some(CAROL));
    assert_eq!(first.issuing_account, "arn:aws:iam::111122223333:root");
    assert_eq!(first.name.as_deref(), Some("grant-0"));
    assert_eq!(first.operations, ops(&["Encrypt", "DescribeKey"]));
    assert!(first.creation_date > 0);

    // Filters.
    let by_grantee = root
        .list_grants(pb::ListGrantsRequest {
            key_id: k.into(),
            grantee_principal: Some(CAROL.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_grantee.grants.len(), 1);
    assert_eq!(by_grantee.grants[0].grant_id, ids[2]);
    // A filter that fits AWS's pattern but no grant's principal matches nothing (not refused);
    // one that doesn't fit the pattern is a ValidationException.
    for (filter, matches) in [("111122223333", Some(0)), ("not a principal", None)] {
        let r = root
            .list_grants(pb::ListGrantsRequest {
                key_id: k.into(),
                grantee_principal: Some(filter.into()),
                ..Default::default()
            })
            .await;
        match matches {
            Some(n) => assert_eq!(r.unwrap().into_inner().grants.len(), n, "{filter}"),
            None => {
                expect_err(r, "ValidationException");
            }
        }
    }
    let by_id = root
        .list_grants(pb::ListGrantsRequest {
            key_id: k.into(),
            grant_id: Some(ids[1].clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.grants.len(), 1);
    // Bob may not list grants (no policy allows it).
    expect_err(
        root.list_grants(as_user(
            BOB_TOKEN,
            pb::ListGrantsRequest {
                key_id: k.into(),
                ..Default::default()
            },
        ))
        .await,
        "AccessDeniedException",
    );

    // Retirable by carol: the three.
    let retirable = root
        .list_retirable_grants(pb::ListRetirableGrantsRequest {
            retiring_principal: CAROL.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retirable.grants.len(), 3);
    // Only a principal of the caller's own account (AWS: "in your AWS account").
    for foreign in ["arn:aws:iam::444455556666:user/carol", "444455556666"] {
        let refused = expect_err(
            root.list_retirable_grants(pb::ListRetirableGrantsRequest {
                retiring_principal: foreign.into(),
                ..Default::default()
            })
            .await,
            "AccessDeniedException",
        );
        assert!(refused.contains("444455556666"), "{refused}");
    }
    // A service principal's grants are on this account's keys: this account lists them.
    root.list_retirable_grants(pb::ListRetirableGrantsRequest {
        retiring_principal: "dynamodb.amazonaws.com".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Idempotent retry by name: same id, a new token that works too.
    let mut again = grant_req(k, BOB, &["DescribeKey", "Encrypt"]);
    again.retiring_principal = Some(CAROL.into());
    again.name = Some("grant-0".into());
    let retry = create_grant(&mut root, again.clone()).await;
    assert_eq!(retry.grant_id, ids[0]);
    assert_ne!(retry.grant_token, tokens[0]);
    // Different parameters under the same name: a new grant.
    again.operations = ops(&["Encrypt"]);
    let distinct = create_grant(&mut root, again).await;
    assert_ne!(distinct.grant_id, ids[0]);

    // Bob (grantee, no RetireGrant operation, not retiring principal) can't retire.
    expect_err(
        root.retire_grant(as_user(
            BOB_TOKEN,
            pb::RetireGrantRequest {
                grant_token: Some(tokens[0].clone()),
                ..Default::default()
            },
        ))
        .await,
        "AccessDeniedException",
    );
    // Carol retires by token (the retry's token names the same grant) ...
    root.retire_grant(as_user(
        CAROL_TOKEN,
        pb::RetireGrantRequest {
            grant_token: Some(retry.grant_token.clone()),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    // ... after which its tokens are invalid,
    expect_err(
        root.retire_grant(as_user(
            CAROL_TOKEN,
            pb::RetireGrantRequest {
                grant_token: Some(tokens[0].clone()),
                ..Default::default()
            },
        ))
        .await,
        "InvalidGrantTokenException",
    );
    // ... and by key + grant id.
    root.retire_grant(as_user(
        CAROL_TOKEN,
        pb::RetireGrantRequest {
            key_id: Some(k.into()),
            grant_id: Some(ids[1].clone()),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    expect_err(
        root.retire_grant(as_user(
            CAROL_TOKEN,
            pb::RetireGrantRequest {
                key_id: Some(k.into()),
                grant_id: Some(ids[1].clone()),
                ..Default::default()
            },
        ))
        .await,
        "NotFoundException",
    );
    // A garbage token.
    expect_err(
        root.retire_grant(pb::RetireGrantRequest {
            grant_token: Some("not-a-token".into()),
            ..Default::default()
        })
        .await,
        "InvalidGrantTokenException",
    );
    // Neither token nor key + id.
    expect_err(
        root.retire_grant(pb::RetireGrantRequest::default()).await,
        "ValidationException",
    );
    // The account (root) may retire any grant of its account.
    root.retire_grant(pb::RetireGrantRequest {
        key_id: Some(k.into()),
        grant_id: Some(distinct.grant_id.clone()),
        ..Default::default()
    })
    .await
    .unwrap();

    // A grantee whose grant includes RetireGrant may retire it.
    let own = create_grant(&mut root, grant_req(k, BOB, &["Encrypt", "RetireGrant"])).await;
    root.retire_grant(as_user(
        BOB_TOKEN,
        pb::RetireGrantRequest {
            grant_token: Some(own.grant_token),
            ..Default::default()
        },
    ))
    .await
    .unwrap();

    let left = grants_of(&mut root, k).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].grant_id, ids[2]);
}

/// RetireGrant answers to identity policies as well as to the grant: a Deny of kms:RetireGrant
/// refuses even the grantee the grant lets retire it, and an Allow (the key's account delegating)
/// lets a caller the grant doesn't name retire it. In a key policy, as AWS says, kms:RetireGrant is
/// not effective either way.
#[tokio::test]
async fn retire_grant_obeys_denies_and_delegation() {
    let (_dir, cfg) = config_retiring(CAROL, Some(BOB));
    let server = Server::start_with(&cfg).await;
    let mut root = server.client().await;
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "NoOneRetires", "Effect": "Deny", "Principal": {"AWS": "*"},
         "Action": "kms:RetireGrant", "Resource": "*"}
    ]})
    .to_string();
    let key = create_key_with_policy(&mut root, policy).await;
    let k = key.key_id.as_str();
    let retire_by_token = |token: &str, grant_token: String| {
        as_user(
            token,
            pb::RetireGrantRequest {
                grant_token: Some(grant_token),
                ..Default::default()
            },
        )
    };
    // Bob's grant lets him retire it, but his identity policy denies him.
    let own = create_grant(&mut root, grant_req(k, BOB, &["Encrypt", "RetireGrant"])).await;
    let msg = expect_err(
        root.retire_grant(retire_by_token(BOB_TOKEN, own.grant_token.clone()))
            .await,
        "AccessDeniedException",
    );
    assert!(msg.contains("explicit deny in an identity-based policy"), "{msg}");
    // Carol is neither grantee nor retiring principal; her identity policy allows kms:RetireGrant,
    // and the key policy's Deny has no effect on it.
    root.retire_grant(retire_by_token(CAROL_TOKEN, own.grant_token))
        .await
        .unwrap();
    let left = grants_of(&mut root, k).await;
    assert!(left.is_empty(), "{left:?}");

    // kms:GrantIsForAWSResource is "false" on ListGrants and RevokeGrant too, as on CreateGrant:
    // a Deny conditioned on it applies to direct calls.
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": ["kms:ListGrants", "kms:RevokeGrant"],
         "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": "false"}}}
    ]})
    .to_string();
    let guarded = create_key_with_policy(&mut root, policy).await;
    let g = create_grant(&mut root, grant_req(&guarded.key_id, BOB, &["Encrypt"])).await;
    expect_err(
        root.list_grants(pb::ListGrantsRequest {
            key_id: guarded.key_id.clone(),
            ..Default::default()
        })
        .await,
        "AccessDeniedException",
    );
    expect_err(
        root.revoke_grant(pb::RevokeGrantRequest {
            key_id: guarded.key_id.clone(),
            grant_id: g.grant_id,
            ..Default::default()
        })
        .await,
        "AccessDeniedException",
    );
}

/// A grant created by another account's principal (allowed by the key policy) is issued under
/// that account, as AWS reports it, not under the key's.
#[tokio::test]
async fn a_grant_from_another_account_is_issued_under_it() {
    const FOREIGN: &str = "arn:aws:iam::444455556666:root";
    const FOREIGN_TOKEN: &str = "grants-test-foreign-root-token";
    const ADMIN: &str = "arn:aws:iam::444455556666:user/admin";
    const ADMIN_TOKEN: &str = "grants-test-foreign-admin-token";
    const INTERN: &str = "arn:aws:iam::444455556666:user/intern";
    const INTERN_TOKEN: &str = "grants-test-foreign-intern-token";
    let (_dir, mut cfg) = config_retiring(ADMIN, None);
    for (token, principal) in [(FOREIGN_TOKEN, FOREIGN), (ADMIN_TOKEN, ADMIN), (INTERN_TOKEN, INTERN)] {
        cfg += &format!(
            "[[auth.tokens]]\nsha256 = {:?}\nprincipal = {principal:?}\n",
            kms::auth::token_digest(token)
        );
    }
    let server = Server::start_with(&cfg).await;
    let mut root = server.client().await;
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": FOREIGN}, "Action": ["kms:CreateGrant", "kms:Encrypt"], "Resource": "*"}
    ]})
    .to_string();
    let key = create_key_with_policy(&mut root, policy).await;
    let g = root
        .create_grant(as_user(FOREIGN_TOKEN, grant_req(&key.arn, BOB, &["Encrypt"])))
        .await
        .unwrap()
        .into_inner();
    let own = create_grant(&mut root, grant_req(&key.key_id, BOB, &["Encrypt"])).await;
    let listed = grants_of(&mut root, &key.key_id).await;
    let issuer = |id: &str| {
        listed
            .iter()
            .find(|e| e.grant_id == id)
            .unwrap()
            .issuing_account
            .clone()
    };
    assert_eq!(issuer(&g.grant_id), FOREIGN);
    assert_eq!(issuer(&own.grant_id), "arn:aws:iam::111122223333:root");

    // The issuing (or retiring) account delegates retiring to its users by identity policy: its
    // admin may retire the grant, its intern (no such policy) may not.
    let retire = |token: &str| {
        as_user(
            token,
            pb::RetireGrantRequest {
                grant_token: Some(g.grant_token.clone()),
                ..Default::default()
            },
        )
    };
    expect_err(root.retire_grant(retire(INTERN_TOKEN)).await, "AccessDeniedException");
    root.retire_grant(retire(ADMIN_TOKEN)).await.unwrap();

    // The foreign root may not list the grants of this account's principals, nor of a service
    // principal (those grants are on this account's keys).
    let list = |principal: &str| {
        as_user(
            FOREIGN_TOKEN,
            pb::ListRetirableGrantsRequest {
                retiring_principal: principal.into(),
                ..Default::default()
            },
        )
    };
    for other in [CAROL, "dynamodb.amazonaws.com"] {
        let refused = expect_err(root.list_retirable_grants(list(other)).await, "AccessDeniedException");
        assert!(refused.contains("caller's account (444455556666)"), "{refused}");
    }
}

/// A grantee with CreateGrant may pass on a subset of its operations, no more.
#[tokio::test]
async fn a_grant_with_create_grant_passes_on_a_subset() {
    let server = Server::start_with(&config()).await;
    let mut root = server.client().await;
    let key = create_key(&mut root).await;
    let k = key.key_id.as_str();
    create_grant(&mut root, grant_req(k, BOB, &["Encrypt", "DescribeKey", "CreateGrant"])).await;
    root.create_grant(as_user(BOB_TOKEN, grant_req(k, CAROL, &["Encrypt"])))
        .await
        .unwrap();
    expect_err(
        root.create_grant(as_user(BOB_TOKEN, grant_req(k, CAROL, &["Encrypt", "Decrypt"])))
            .await,
        "AccessDeniedException",
    );
    root.encrypt(as_user(CAROL_TOKEN, encrypt_req(k, &[]))).await.unwrap();
    root.describe_key(as_user(
        BOB_TOKEN,
        pb::DescribeKeyRequest {
            key_id: k.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn create_grant_validation() {
    let server = Server::start_with(&config()).await;
    let mut root = server.client().await;
    let key = create_key(&mut root).await;
    let k = key.key_id.as_str();

    expect_err(root.create_grant(grant_req(k, BOB, &[])).await, "ValidationException");
    expect_err(
        root.create_grant(grant_req(k, BOB, &["Launch"])).await,
        "ValidationException",
    );
    let msg = expect_err(
        root.create_grant(grant_req(k, BOB, &["Sign"])).await,
        "ValidationException",
    );
    assert!(msg.contains("Encrypt") && msg.contains("Sign"), "{msg}");
    for bad in [
        "",
        "bob",
        "arn:aws:iam::1:user/bob",
        "arn:aws:s3:::bucket",
        "arn:aws:iam::111122223333:group/x",
    ] {
        expect_err(
            root.create_grant(grant_req(k, bad, &["Encrypt"])).await,
            "ValidationException",
        );
    }
    for bad in ["", "has space", "x".repeat(257).as_str(), "semi;colon"] {
        let mut r = grant_req(k, BOB, &["Encrypt"]);
        r.name = Some(bad.into());
        expect_err(root.create_grant(r).await, "ValidationException");
    }
    let mut too_many = grant_req(k, BOB, &["Encrypt"]);
    too_many.constraints = Some(pb::GrantConstraints {
        encryption_context_equals: (0..9).map(|i| (format!("k{i}"), "v".to_string())).collect(),
        ..Default::default()
    });
    expect_err(root.create_grant(too_many).await, "ValidationException");

    // Signing keys: no Encrypt, no constraints.
    let signing = root
        .create_key(pb::CreateKeyRequest {
            key_spec: Some("ECC_NIST_P256".into()),
            key_usage: Some("SIGN_VERIFY".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    let s = signing.key_id.as_str();
    expect_err(
        root.create_grant(grant_req(s, BOB, &["Encrypt"])).await,
        "ValidationException",
    );
    create_grant(&mut root, grant_req(s, BOB, &["Sign", "Verify", "GetPublicKey"])).await;
    let mut constrained = grant_req(s, BOB, &["Sign"]);
    constrained.constraints = Some(pb::GrantConstraints {
        encryption_context_subset: ctx(&[("a", "b")]),
        ..Default::default()
    });
    expect_err(root.create_grant(constrained).await, "ValidationException");

    // Unknown key, unknown grant, bad limits.
    expect_err(
        root.create_grant(grant_req("11111111-2222-3333-4444-555555555555", BOB, &["Encrypt"]))
            .await,
        "NotFoundException",
    );
    for limit in [0, 101] {
        expect_err(
            root.list_grants(pb::ListGrantsRequest {
                key_id: k.into(),
                limit: Some(limit),
                ..Default::default()
            })
            .await,
            "ValidationException",
        );
        expect_err(
            root.list_retirable_grants(pb::ListRetirableGrantsRequest {
                retiring_principal: CAROL.into(),
                limit: Some(limit),
                ..Default::default()
            })
            .await,
            "ValidationException",
        );
    }
    expect_err(
        root.list_grants(pb::ListGrantsRequest {
            key_id: k.into(),
            marker: Some("garbage".into()),
            ..Default::default()
        })
        .await,
        "InvalidMarkerException",
    );
    expect_err(
        root.revoke_grant(pb::RevokeGrantRequest {
            key_id: k.into(),
            grant_id: "0".repeat(64),
            ..Default::default()
        })
        .await,
        "NotFoundException",
    );

    // RetireGrant checks every parameter's constraints before it looks the token up, as AWS.
    let retire = |key_id: Option<String>, grant_id: Option<String>| pb::RetireGrantRequest {
        grant_token: Some("0".repeat(128)),
        key_id,
        grant_id,
        ..Default::default()
    };
    for (key_id, grant_id) in [
        (None, Some("g".repeat(129))),
        (Some(String::new()), None),
        (Some("k".repeat(2049)), None),
    ] {
        expect_err(root.retire_grant(retire(key_id, grant_id)).await, "ValidationException");
    }
    expect_err(
        root.retire_grant(retire(Some(k.into()), Some("g".repeat(128)))).await,
        "InvalidGrantTokenException",
    );
}

/// As AWS's key state table says: a disabled key takes no new grant (DisabledException), one
/// pending deletion neither (KMSInvalidStateException); the grants it has can still be listed,
/// retired and revoked.
#[tokio::test]
async fn create_grant_follows_the_key_state() {
    let server = Server::start_with(&config()).await;
    let mut root = server.client().await;
    let key = create_key(&mut root).await;
    let k = key.key_id.as_str();
    let kept = create_grant(&mut root, grant_req(k, BOB, &["Encrypt"])).await;
    let revoked = create_grant(&mut root, grant_req(k, CAROL, &["Decrypt"])).await;

    root.disable_key(pb::DisableKeyRequest { key_id: k.into() })
        .await
        .unwrap();
    let msg = expect_err(
        root.create_grant(grant_req(k, BOB, &["Decrypt"])).await,
        "DisabledException",
    );
    assert!(msg.ends_with("is disabled."), "{msg}");
    assert_eq!(grants_of(&mut root, k).await.len(), 2);
    root.revoke_grant(pb::RevokeGrantRequest {
        key_id: k.into(),
        grant_id: revoked.grant_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(grants_of(&mut root, k).await.len(), 1);

    root.enable_key(pb::EnableKeyRequest { key_id: k.into() })
        .await
        .unwrap();
    create_grant(&mut root, grant_req(k, BOB, &["Decrypt"])).await;
    root.schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
        key_id: k.into(),
        pending_window_in_days: Some(7),
    })
    .await
    .unwrap();
    expect_err(
        root.create_grant(grant_req(k, BOB, &["Encrypt"])).await,
        "KMSInvalidStateException",
    );
    root.retire_grant(pb::RetireGrantRequest {
        key_id: Some(k.into()),
        grant_id: Some(kept.grant_id.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(grants_of(&mut root, k).await.len(), 1);
}

/// Every cryptographic operation honours GrantTokens: an unknown token is refused, and a grant's
/// token lets its grantee act in the same request.
#[tokio::test]
async fn grant_tokens_on_cryptographic_operations() {
    let server = Server::start_with(&config()).await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let bogus = vec!["not-a-grant-token".to_string()];
    let enc = |tokens: Vec<String>| pb::EncryptRequest {
        grant_tokens: tokens,
        ..encrypt_req(&key.key_id, &[])
    };
    expect_err(c.encrypt(enc(bogus.clone())).await, "InvalidGrantTokenException");
    let gdk = pb::GenerateDataKeyRequest {
        key_id: key.key_id.clone(),
        number_of_bytes: Some(16),
        grant_tokens: bogus.clone(),
        ..Default::default()
    };
    expect_err(c.generate_data_key(gdk).await, "InvalidGrantTokenException");
    let blob = c.encrypt(enc(vec![])).await.unwrap().into_inner().ciphertext_blob;
    let dec = pb::DecryptRequest {
        ciphertext_blob: blob.clone(),
        grant_tokens: bogus,
        ..Default::default()
    };
    expect_err(c.decrypt(dec).await, "InvalidGrantTokenException");

    let grant = create_grant(&mut c, grant_req(&key.key_id, BOB, &["Encrypt", "Decrypt"])).await;
    let with_token = vec![grant.grant_token.clone()];
    c.encrypt(as_user(BOB_TOKEN, enc(with_token.clone()))).await.unwrap();
    let dec = pb::DecryptRequest {
        ciphertext_blob: blob,
        grant_tokens: with_token,
        ..Default::default()
    };
    assert_eq!(
        c.decrypt(as_user(BOB_TOKEN, dec)).await.unwrap().into_inner().plaintext,
        b"secret"
    );
}

/// DescribeKey takes GrantTokens too, as in AWS: an unknown token is refused, more than ten are a
/// ValidationException, and a grant's token lets its grantee describe the key.
#[tokio::test]
async fn describe_key_takes_grant_tokens() {
    let server = Server::start_with(&config()).await;
    let mut c = server.client().await;
    let key = create_key(&mut c).await;
    let describe = |tokens: Vec<String>| pb::DescribeKeyRequest {
        key_id: key.key_id.clone(),
        grant_tokens: tokens,
    };
    expect_err(
        c.describe_key(describe(vec!["not-a-grant-token".into()])).await,
        "InvalidGrantTokenException",
    );
    expect_err(
        c.describe_key(describe(vec!["t".into(); 11])).await,
        "ValidationException",
    );
    expect_err(
        c.describe_key(as_user(BOB_TOKEN, describe(vec![]))).await,
        "AccessDeniedException",
    );
    let grant = create_grant(&mut c, grant_req(&key.key_id, BOB, &["DescribeKey"])).await;
    let described = c
        .describe_key(as_user(BOB_TOKEN, describe(vec![grant.grant_token])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.key_metadata.unwrap().key_id, key.key_id);
}

/// Grants are looked up by grantee: others' grants, before and after the caller's, don't count
/// for it, and each lookup sees the grants made and revoked since, the cached "no grant" of an
/// earlier refusal included.
#[tokio::test]
async fn grants_are_found_by_grantee_among_many() {
    let server = Server::start_with(&config()).await;
    let mut root = server.client().await;
    let key = create_key(&mut root).await;
    let k = key.key_id.as_str();
    let bob_gdk = || as_user(BOB_TOKEN, gdk(k));

    expect_err(root.generate_data_key(bob_gdk()).await, "AccessDeniedException");
    for i in 0..20 {
        let other = format!("arn:aws:iam::111122223333:role/other-{i}");
        create_grant(&mut root, grant_req(k, &other, &["GenerateDataKey"])).await;
    }
    create_grant(&mut root, grant_req(k, CAROL, &["GenerateDataKey"])).await;
    expect_err(root.generate_data_key(bob_gdk()).await, "AccessDeniedException");

    let to_bob = create_grant(&mut root, grant_req(k, BOB, &["GenerateDataKey"])).await;
    create_grant(
        &mut root,
        grant_req(k, "arn:aws:iam::111122223333:role/last", &["Decrypt"]),
    )
    .await;
    root.generate_data_key(bob_gdk())
        .await
        .unwrap_or_else(|s| panic!("bob GenerateDataKey through his grant: {}", s.message()));
    root.revoke_grant(pb::RevokeGrantRequest {
        key_id: k.into(),
        grant_id: to_bob.grant_id,
        ..Default::default()
    })
    .await
    .unwrap();
    expect_err(root.generate_data_key(bob_gdk()).await, "AccessDeniedException");
    // Carol's grant still works: revoking bob's dropped only bob's.
    root.generate_data_key(as_user(CAROL_TOKEN, gdk(k)))
        .await
        .unwrap_or_else(|s| panic!("carol GenerateDataKey: {}", s.message()));

    let again = create_grant(&mut root, grant_req(k, BOB, &["GenerateDataKey"])).await;
    root.generate_data_key(bob_gdk()).await.unwrap();
    root.retire_grant(pb::RetireGrantRequest {
        key_id: Some(k.into()),
        grant_id: Some(again.grant_id),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_err(root.generate_data_key(bob_gdk()).await, "AccessDeniedException");
}
