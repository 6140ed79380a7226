//! Key policies and identity policies through the server: conditions from the AWS KMS key policy
//! examples, deny over allow, cross-account access, PutKeyPolicy / GetKeyPolicy /
//! ListKeyPolicies with the lockout safety check, and identity policies reloaded on SIGHUP.

use std::time::Duration;

use kms::proto as pb;
use serde_json::{json, Value};

use crate::auth::*;
use crate::common::*;
use crate::tls::Pki;

const APP: &str = "arn:aws:iam::111122223333:user/app";
const OTHER: &str = "arn:aws:iam::111122223333:user/other";
const EXT: &str = "arn:aws:iam::444455556666:user/ext";
const EXT_NO_IDENTITY: &str = "arn:aws:iam::444455556666:user/ext-without-identity-policy";
const EXT_ROOT: &str = "arn:aws:iam::444455556666:root";

/// Each principal's token is its name with a suffix.
fn token(principal: &str) -> String {
    format!("token-{}-7d41", principal.rsplit([':', '/']).next().unwrap())
}

/// A plaintext client that authenticates as `principal` with its token.
async fn client_as(server: &Server, principal: &str) -> AuthClient {
    plain_client(server, Bearer::token(Some(&token(principal)))).await
}

fn tokens<'a>(principals: &[&'a str]) -> Vec<(String, &'a str)> {
    principals.iter().map(|p| (token(p), *p)).collect()
}

fn token_config(dev_mode: bool, principals: &[&str], identity: Option<&std::path::Path>) -> String {
    let t = tokens(principals);
    let refs: Vec<(&str, &str)> = t.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    auth_config(dev_mode, &refs, &[], identity)
}

/// A key policy: the account's root administers (as in the default policy), then `statements`.
fn key_policy(statements: &[Value]) -> String {
    let mut all = vec![json!({
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"
    })];
    all.extend_from_slice(statements);
    json!({"Version": "2012-10-17", "Statement": all}).to_string()
}

fn allow_app(sid: &str, actions: &[&str], condition: Value) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Principal": {"AWS": APP},
           "Action": actions, "Resource": "*", "Condition": condition})
}

async fn create_key(c: &mut AuthClient, policy: &str) -> String {
    create_key_spec(c, policy, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await
}

async fn create_key_spec(c: &mut AuthClient, policy: &str, spec: &str, usage: &str) -> String {
    c.create_key(pb::CreateKeyRequest {
        key_spec: Some(spec.into()),
        key_usage: Some(usage.into()),
        policy: Some(policy.into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .key_metadata
    .unwrap()
    .arn
}

async fn encrypt(
    c: &mut AuthClient,
    key: &str,
    pairs: &[(&str, &str)],
) -> Result<tonic::Response<pb::EncryptResponse>, tonic::Status> {
    c.encrypt(pb::EncryptRequest {
        key_id: key.into(),
        plaintext: b"policy test".to_vec(),
        encryption_context: ctx(pairs),
        ..Default::default()
    })
    .await
}

async fn decrypt(
    c: &mut AuthClient,
    blob: &[u8],
    pairs: &[(&str, &str)],
) -> Result<tonic::Response<pb::DecryptResponse>, tonic::Status> {
    c.decrypt(pb::DecryptRequest {
        ciphertext_blob: blob.to_vec(),
        encryption_context: ctx(pairs),
        ..Default::default()
    })
    .await
}

async fn put_policy(
    c: &mut AuthClient,
    key: &str,
    policy: &str,
    bypass: bool,
) -> Result<tonic::Response<pb::PutKeyPolicyResponse>, tonic::Status> {
    c.put_key_policy(pb::PutKeyPolicyRequest {
        key_id: key.into(),
        policy_name: None,
        policy: policy.into(),
        bypass_policy_lockout_safety_check: bypass,
    })
    .await
}

async fn get_policy(c: &mut AuthClient, key: &str) -> String {
    c.get_key_policy(pb::GetKeyPolicyRequest {
        key_id: key.into(),
        policy_name: None,
    })
    .await
    .unwrap()
    .into_inner()
    .policy
}

#[tokio::test]
async fn identity_policies_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.toml");
    let describe = allow(&["kms:DescribeKey"], "*");
    std::fs::write(
        &path,
        identity_file(&[("describe", &describe)], &[(APP, &["describe"])]),
    )
    .unwrap();
    let server = Server::start_with(&token_config(false, &[ROOT, APP], Some(&path))).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    // The default key policy: the account's identity policies decide for app.
    let key = root
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn;
    app.describe_key(pb::DescribeKeyRequest {
        key_id: key.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let msg = expect_denied(encrypt(&mut app, &key, &[]).await, APP, "kms:Encrypt", Some(&key));
    assert!(
        msg.ends_with("because no identity-based policy allows the kms:Encrypt action"),
        "{msg}"
    );
    expect_denied(
        app.list_keys(pb::ListKeysRequest::default()).await,
        APP,
        "kms:ListKeys",
        None,
    );

    // Through a group, from the new file, after SIGHUP.
    let crypto = allow(&["kms:Encrypt", "kms:ListKeys"], "*");
    let granted = format!(
        "{}[groups.crypto-users]\npolicies = [\"crypto\"]\n[principals.{APP:?}]\npolicies = [\"describe\"]\ngroups = [\"crypto-users\"]\n",
        identity_file(&[("describe", &describe), ("crypto", &crypto)], &[])
    );
    std::fs::write(&path, granted).unwrap();
    server.sighup();
    let mut reloaded = false;
    for _ in 0..400 {
        if encrypt(&mut app, &key, &[]).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the new identity policies did not take effect after SIGHUP");
    app.list_keys(pb::ListKeysRequest::default()).await.unwrap();

    // Broken files keep the policies in force.
    for broken in [
        "[policies]\nbad = '{\"Statement\": ['\n".to_string(),
        "this is not toml".to_string(),
        identity_file(&[("crypto", &crypto)], &[("arn:aws:iam::1:user/app", &["crypto"])]),
        identity_file(&[], &[(APP, &["no-such-policy"])]),
    ] {
        std::fs::write(&path, broken).unwrap();
        server.sighup();
        tokio::time::sleep(Duration::from_millis(300)).await;
        encrypt(&mut app, &key, &[]).await.unwrap();
        app.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    }

    // And a good file after them is taken: app is back to DescribeKey only.
    std::fs::write(
        &path,
        identity_file(&[("describe", &describe)], &[(APP, &["describe"])]),
    )
    .unwrap();
    server.sighup();
    let mut revoked = false;
    for _ in 0..400 {
        if encrypt(&mut app, &key, &[]).await.is_err() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        revoked,
        "the revoking identity policies did not take effect after SIGHUP"
    );
    expect_denied(encrypt(&mut app, &key, &[]).await, APP, "kms:Encrypt", Some(&key));
    app.describe_key(pb::DescribeKeyRequest {
        key_id: key.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn put_get_list_key_policies_and_the_lockout_check() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP, OTHER], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let mut other = client_as(&server, OTHER).await;
    let admin = key_policy(&[allow_app("AppAdministers", &["kms:*"], json!({}))]);
    let key = create_key(&mut root, &admin).await;

    // What was put is what is got, byte for byte; the only policy is "default".
    assert_eq!(get_policy(&mut app, &key).await, admin);
    let names = app
        .list_key_policies(pb::ListKeyPoliciesRequest {
            key_id: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names.policy_names, ["default"]);
    assert!(!names.truncated);
    let named = app
        .get_key_policy(pb::GetKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: Some("default".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (named.policy.as_str(), named.policy_name.as_str()),
        (admin.as_str(), "default")
    );
    let msg = expect_err(
        app.get_key_policy(pb::GetKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: Some("other".into()),
        })
        .await,
        "NotFoundException",
    );
    assert!(msg.contains("other"), "{msg}");
    expect_err(
        app.put_key_policy(pb::PutKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: Some("other".into()),
            policy: admin.clone(),
            bypass_policy_lockout_safety_check: false,
        })
        .await,
        "NotFoundException",
    );
    // The default policy of a key created without one.
    let default_key = root
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn;
    let default: Value = serde_json::from_str(&get_policy(&mut root, &default_key).await).unwrap();
    assert_eq!(default["Statement"][0]["Sid"], "Enable IAM User Permissions");
    assert_eq!(default["Statement"][0]["Principal"]["AWS"], ROOT);

    // The lockout safety check: a policy that no longer lets app change the policy, or that
    // denies it, is refused; the policy in force doesn't change.
    let only_other = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "OtherAdministers", "Effect": "Allow", "Principal": {"AWS": OTHER},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "AppEncrypts", "Effect": "Allow", "Principal": {"AWS": APP},
         "Action": ["kms:Encrypt", "kms:DescribeKey"], "Resource": "*"}
    ]})
    .to_string();
    let denies_app = key_policy(&[
        allow_app("AppAdministers", &["kms:*"], json!({})),
        json!({"Sid": "NoPolicyChanges", "Effect": "Deny", "Principal": {"AWS": APP},
               "Action": "kms:PutKeyPolicy", "Resource": "*"}),
    ]);
    for lockout in [&only_other, &denies_app] {
        let msg = expect_err(
            put_policy(&mut app, &key, lockout, false).await,
            "MalformedPolicyDocumentException",
        );
        assert_eq!(msg, kms::policy::LOCKOUT_MESSAGE);
        assert_eq!(get_policy(&mut app, &key).await, admin);
    }
    // CreateKey checks too.
    expect_err(
        root.create_key(pb::CreateKeyRequest {
            policy: Some(only_other.clone()),
            ..Default::default()
        })
        .await,
        "MalformedPolicyDocumentException",
    );

    // BypassPolicyLockoutSafetyCheck puts it, and it decides the very next request.
    let blob = encrypt(&mut app, &key, &[]).await.unwrap().into_inner().ciphertext_blob;
    decrypt(&mut app, &blob, &[]).await.unwrap();
    put_policy(&mut app, &key, &only_other, true).await.unwrap();
    assert_eq!(get_policy(&mut other, &key).await, only_other);
    expect_denied(decrypt(&mut app, &blob, &[]).await, APP, "kms:Decrypt", Some(&key));
    encrypt(&mut app, &key, &[]).await.unwrap();
    expect_denied(
        put_policy(&mut app, &key, &admin, false).await,
        APP,
        "kms:PutKeyPolicy",
        Some(&key),
    );
    expect_denied(
        app.get_key_policy(pb::GetKeyPolicyRequest {
            key_id: key.clone(),
            policy_name: None,
        })
        .await,
        APP,
        "kms:GetKeyPolicy",
        Some(&key),
    );
    // The account root is locked out as well: the policy no longer names the account.
    expect_denied(
        put_policy(&mut root, &key, &admin, false).await,
        ROOT,
        "kms:PutKeyPolicy",
        Some(&key),
    );
    // Other restores the admin policy (it names other's account, which passes the check).
    put_policy(&mut other, &key, &admin, false).await.unwrap();
    decrypt(&mut app, &blob, &[]).await.unwrap();
    let key_created_bypassing = root
        .create_key(pb::CreateKeyRequest {
            policy: Some(only_other.clone()),
            bypass_policy_lockout_safety_check: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn;
    expect_denied(
        root.describe_key(pb::DescribeKeyRequest {
            key_id: key_created_bypassing.clone(),
            ..Default::default()
        })
        .await,
        ROOT,
        "kms:DescribeKey",
        Some(&key_created_bypassing),
    );

    // Malformed documents: refused, naming where, echoing no values.
    let secret = "s3cr3t-condition-value";
    let statement = |extra: Value| {
        let mut s = json!({"Effect": "Allow", "Principal": {"AWS": APP}, "Action": "kms:*", "Resource": "*"});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    let admin_statement = json!({"Sid": "AppAdministers", "Effect": "Allow",
        "Principal": {"AWS": APP}, "Action": "kms:*", "Resource": "*"});
    for (doc, starts) in [
        ("{".to_string(), "Policy"),
        // (An empty policy is ValidationException: validation.rs.)
        ("[]".to_string(), "Policy"),
        (
            json!({"Version": "2012-10-17"}).to_string(),
            "Policy: missing required element Statement",
        ),
        (
            json!({"Version": "2013-01-01", "Statement": [admin_statement]}).to_string(),
            "Version",
        ),
        (
            json!({"Statement": [admin_statement, statement(json!({"Effect": "Permit"}))]}).to_string(),
            "Statement[1].Effect",
        ),
        (
            json!({"Statement": [admin_statement, statement(json!({"Action": ["kms:Encrypt", "s3:GetObject"]}))]})
                .to_string(),
            "Statement[1].Action[1]",
        ),
        (
            json!({"Statement": [admin_statement, statement(json!({"Resources": "*"}))]}).to_string(),
            "Statement[1]",
        ),
        (
            json!({"Statement": [admin_statement, statement(json!({"Principal": {"AWS": "arn:aws:iam::1:user/x"}}))]})
                .to_string(),
            "Statement[1].Principal.AWS",
        ),
        (
            json!({"Statement": [admin_statement, statement(json!({
                "Condition": {"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": secret}}
            }))]})
            .to_string(),
            "Statement[1].Condition.NumericLessThan",
        ),
        (
            json!({"Statement": [admin_statement, statement(json!({
                "Condition": {"StringEqualz": {"kms:ViaService": secret}}
            }))]})
            .to_string(),
            "Statement[1].Condition",
        ),
    ] {
        for bypass in [false, true] {
            let msg = expect_err(
                put_policy(&mut app, &key, &doc, bypass).await,
                "MalformedPolicyDocumentException",
            );
            assert!(msg.starts_with(starts), "{doc}: {msg}");
            assert!(!msg.contains(secret), "{msg}");
        }
    }
    assert_eq!(get_policy(&mut app, &key).await, admin);

    // At most 32768 bytes (trailing whitespace counts, and is kept).
    let exactly = format!("{admin}{}", " ".repeat(32 * 1024 - admin.len()));
    put_policy(&mut app, &key, &exactly, false).await.unwrap();
    assert_eq!(get_policy(&mut app, &key).await, exactly);
    // Over the quota is LimitExceededException, as AWS documents for PutKeyPolicy and CreateKey.
    let over = format!("{exactly} ");
    let msg = expect_err(put_policy(&mut app, &key, &over, false).await, "LimitExceededException");
    assert!(msg.contains("32768"), "{msg}");
    assert_eq!(get_policy(&mut app, &key).await, exactly);
    // Only tab, LF, CR and U+0020..U+00FF may appear (Latin-1 is fine, the euro sign is not).
    let latin1 = admin.replacen("AppAdministers", "AppAdministers-\u{e9}", 1);
    assert_ne!(latin1, admin, "the Sid was renamed");
    put_policy(&mut app, &key, &latin1, false).await.unwrap();
    let euro = admin.replacen("AppAdministers", "AppAdministers-\u{20ac}", 1);
    let msg = expect_err(put_policy(&mut app, &key, &euro, false).await, "ValidationException");
    assert!(msg.contains("U+20AC"), "{msg}");
    assert_eq!(get_policy(&mut app, &key).await, latin1);
    // The parameter's constraints come before the quota, as in AWS: a text over 32 KB with a
    // character it may not have, or over the parameter's 131072 characters, is malformed
    // (ValidationException), not merely too large.
    let large_euro = format!("{euro}{}", " ".repeat(40 * 1024));
    let msg = expect_err(
        put_policy(&mut app, &key, &large_euro, false).await,
        "ValidationException",
    );
    assert!(msg.contains("U+20AC"), "{msg}");
    let huge = format!("{admin}{}", " ".repeat(131_073 - admin.len()));
    let msg = expect_err(put_policy(&mut app, &key, &huge, false).await, "ValidationException");
    assert!(msg.contains("less than or equal to 131072"), "{msg}");
    assert_eq!(get_policy(&mut app, &key).await, latin1);
}

#[tokio::test]
async fn key_policy_conditions_from_the_aws_examples() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.toml");
    let ext_policy = allow(
        &["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
        "arn:aws:kms:us-east-1:111122223333:key/*",
    );
    std::fs::write(&identity, identity_file(&[("ext", &ext_policy)], &[(EXT, &["ext"])])).unwrap();
    let config = format!(
        "{}{}",
        pki.tls_config(),
        token_config(false, &[ROOT, APP, EXT, EXT_NO_IDENTITY], Some(&identity))
    );
    let server = Server::start_with(&config).await;
    let connect = |p: &'static str| {
        let t = token(p);
        let (server, ca) = (&server, pki.ca.cert.clone());
        async move { tls_client(server, &ca, None, Bearer::token(Some(&t))).await.unwrap() }
    };
    let mut root = connect(ROOT).await;
    let mut app = connect(APP).await;

    // kms:EncryptionContext:<key> (AWS: "Department": "IT").
    let key = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "ITOnly",
            &["kms:Encrypt", "kms:Decrypt"],
            json!({"StringEquals": {"kms:EncryptionContext:Department": "IT"}}),
        )]),
    )
    .await;
    let it = [("Department", "IT")];
    let blob = encrypt(&mut app, &key, &it).await.unwrap().into_inner().ciphertext_blob;
    decrypt(&mut app, &blob, &it).await.unwrap();
    for ctx in [
        &[("Department", "HR")][..],
        &[("Department", "it")],
        &[("Team", "IT")],
        &[],
    ] {
        let msg = expect_denied(encrypt(&mut app, &key, ctx).await, APP, "kms:Encrypt", Some(&key));
        assert!(!msg.contains("HR") && !msg.contains("Department"), "{msg}");
    }
    // More pairs than the condition names still match it.
    encrypt(&mut app, &key, &[("Department", "IT"), ("Project", "x")])
        .await
        .unwrap();

    // ForAllValues:StringEquals on kms:EncryptionContextKeys.
    let keys_only = allow_app(
        "ContextKeys",
        &["kms:Encrypt"],
        json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]}}),
    );
    let key = create_key(&mut root, &key_policy(&[keys_only])).await;
    for ok in [
        &[("Department", "a")][..],
        &[("Department", "a"), ("Project", "b")],
        &[],
    ] {
        encrypt(&mut app, &key, ok).await.unwrap();
    }
    expect_denied(
        encrypt(&mut app, &key, &[("Department", "a"), ("Owner", "b")]).await,
        APP,
        "kms:Encrypt",
        Some(&key),
    );
    // AWS's advice: ForAllValues also holds for an empty context; Null false requires one. The
    // new policy decides the very next request.
    let with_null = allow_app(
        "ContextKeysRequired",
        &["kms:Encrypt"],
        json!({
            "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]},
            "Null": {"kms:EncryptionContextKeys": "false"}
        }),
    );
    put_policy(&mut root, &key, &key_policy(&[with_null]), false)
        .await
        .unwrap();
    expect_denied(encrypt(&mut app, &key, &[]).await, APP, "kms:Encrypt", Some(&key));
    encrypt(&mut app, &key, &[("Project", "b")]).await.unwrap();

    // An explicit Deny wins over kms:*.
    let key = create_key(
        &mut root,
        &key_policy(&[
            allow_app("AppEverything", &["kms:*"], json!({})),
            json!({"Sid": "DenyDecryptToApp", "Effect": "Deny", "Principal": {"AWS": APP},
                   "Action": "kms:Decrypt", "Resource": "*"}),
        ]),
    )
    .await;
    let blob = encrypt(&mut app, &key, &[]).await.unwrap().into_inner().ciphertext_blob;
    let msg = expect_denied(decrypt(&mut app, &blob, &[]).await, APP, "kms:Decrypt", Some(&key));
    assert!(
        msg.ends_with("with an explicit deny in a resource-based policy"),
        "{msg}"
    );
    assert!(!msg.contains("DenyDecryptToApp"), "{msg}");
    decrypt(&mut root, &blob, &[]).await.unwrap();
    app.generate_data_key(pb::GenerateDataKeyRequest {
        key_id: key.clone(),
        number_of_bytes: Some(16),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, recs) = server.audit_records();
    let denial = recs
        .iter()
        .find(|r| r["principal"] == APP && r["operation"] == "Decrypt" && r["key_arn"] == key.as_str())
        .unwrap();
    assert_eq!(
        denial["decision"].as_str().unwrap(),
        "denied explicitly by key policy statement \"DenyDecryptToApp\""
    );

    // Cross-account: the key policy names a user of 444455556666 (and the account, for
    // GenerateDataKey); that account's identity policies must allow too.
    let key = create_key(
        &mut root,
        &key_policy(&[
            json!({"Sid": "ExternalUsers", "Effect": "Allow", "Principal": {"AWS": [EXT, EXT_NO_IDENTITY]},
                   "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}),
            json!({"Sid": "ExternalAccount", "Effect": "Allow", "Principal": {"AWS": EXT_ROOT},
                   "Action": "kms:GenerateDataKey", "Resource": "*"}),
        ]),
    )
    .await;
    let mut ext = connect(EXT).await;
    let mut ext_without = connect(EXT_NO_IDENTITY).await;
    let blob = encrypt(&mut ext, &key, &[]).await.unwrap().into_inner().ciphertext_blob;
    decrypt(&mut ext, &blob, &[]).await.unwrap();
    let gdk = |key: &str| pb::GenerateDataKeyRequest {
        key_id: key.into(),
        number_of_bytes: Some(32),
        ..Default::default()
    };
    ext.generate_data_key(gdk(&key)).await.unwrap();
    for (op, result) in [
        ("kms:Encrypt", encrypt(&mut ext_without, &key, &[]).await.map(drop)),
        ("kms:Decrypt", decrypt(&mut ext_without, &blob, &[]).await.map(drop)),
        (
            "kms:GenerateDataKey",
            ext_without.generate_data_key(gdk(&key)).await.map(drop),
        ),
    ] {
        let msg = expect_denied(result.map(tonic::Response::new), EXT_NO_IDENTITY, op, Some(&key));
        assert!(msg.contains("because no identity-based policy allows"), "{msg}");
    }
    // Its identity policy is not enough where the key policy doesn't name it or its account.
    let msg = expect_denied(
        encrypt(&mut ext, &default_key(&mut root).await, &[]).await,
        EXT,
        "kms:Encrypt",
        None,
    );
    assert!(msg.contains("because no resource-based policy allows"), "{msg}");
    expect_denied(
        ext.create_key(pb::CreateKeyRequest::default()).await,
        EXT,
        "kms:CreateKey",
        None,
    );

    // kms:ViaService is never set here: a policy requiring it denies.
    let key = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "ViaEC2",
            &["kms:Encrypt"],
            json!({"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}),
        )]),
    )
    .await;
    expect_denied(encrypt(&mut app, &key, &[]).await, APP, "kms:Encrypt", Some(&key));

    // aws:SecureTransport (this connection is TLS) and aws:SourceIp (127.0.0.1).
    let key = create_key(
        &mut root,
        &key_policy(&[
            allow_app(
                "OverTLS",
                &["kms:Encrypt"],
                json!({"Bool": {"aws:SecureTransport": "true"}}),
            ),
            json!({"Sid": "DenyPlaintext", "Effect": "Deny", "Principal": "*", "Action": "kms:*",
                   "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
            allow_app(
                "FromLoopback",
                &["kms:GenerateDataKey"],
                json!({"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}}),
            ),
            allow_app(
                "FromTheOfficeNetwork",
                &["kms:GenerateDataKeyWithoutPlaintext"],
                json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
            ),
        ]),
    )
    .await;
    encrypt(&mut app, &key, &[]).await.unwrap();
    app.generate_data_key(gdk(&key)).await.unwrap();
    expect_denied(
        app.generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
            key_id: key.clone(),
            number_of_bytes: Some(32),
            ..Default::default()
        })
        .await,
        APP,
        "kms:GenerateDataKeyWithoutPlaintext",
        Some(&key),
    );

    // kms:RequestAlias: allowed only when the key is named by alias/x.
    let key = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "ByAliasX",
            &["kms:Encrypt", "kms:DescribeKey"],
            json!({"StringEquals": {"kms:RequestAlias": "alias/x"}}),
        )]),
    )
    .await;
    for alias in ["alias/x", "alias/y"] {
        root.create_alias(pb::CreateAliasRequest {
            alias_name: alias.into(),
            target_key_id: key.clone(),
        })
        .await
        .unwrap();
    }
    encrypt(&mut app, "alias/x", &[]).await.unwrap();
    encrypt(&mut app, "arn:aws:kms:us-east-1:111122223333:alias/x", &[])
        .await
        .unwrap();
    app.describe_key(pb::DescribeKeyRequest {
        key_id: "alias/x".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let key_id = key.rsplit('/').next().unwrap().to_string();
    for name in ["alias/y", key.as_str(), key_id.as_str()] {
        expect_denied(encrypt(&mut app, name, &[]).await, APP, "kms:Encrypt", Some(&key));
    }

    // kms:EncryptionAlgorithm (RSA encryption key): OAEP with SHA-256 only.
    let key = create_key_spec(
        &mut root,
        &key_policy(&[allow_app(
            "OaepSha256Only",
            &["kms:Encrypt", "kms:Decrypt"],
            json!({"StringEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        )]),
        "RSA_2048",
        "ENCRYPT_DECRYPT",
    )
    .await;
    let rsa_encrypt = |alg: &str| pb::EncryptRequest {
        key_id: key.clone(),
        plaintext: b"rsa".to_vec(),
        encryption_algorithm: Some(alg.into()),
        ..Default::default()
    };
    let blob = app
        .encrypt(rsa_encrypt("RSAES_OAEP_SHA_256"))
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    app.decrypt(pb::DecryptRequest {
        ciphertext_blob: blob,
        key_id: Some(key.clone()),
        encryption_algorithm: Some("RSAES_OAEP_SHA_256".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_denied(
        app.encrypt(rsa_encrypt("RSAES_OAEP_SHA_1")).await,
        APP,
        "kms:Encrypt",
        Some(&key),
    );

    // kms:SigningAlgorithm (RSA signing key): PSS only.
    let key = create_key_spec(
        &mut root,
        &key_policy(&[allow_app(
            "PssOnly",
            &["kms:Sign", "kms:Verify"],
            json!({"StringLike": {"kms:SigningAlgorithm": "RSASSA_PSS_*"}}),
        )]),
        "RSA_2048",
        "SIGN_VERIFY",
    )
    .await;
    let sign = |alg: &str| pb::SignRequest {
        key_id: key.clone(),
        message: b"signed".to_vec(),
        signing_algorithm: alg.into(),
        ..Default::default()
    };
    let signature = app
        .sign(sign("RSASSA_PSS_SHA_256"))
        .await
        .unwrap()
        .into_inner()
        .signature;
    app.verify(pb::VerifyRequest {
        key_id: key.clone(),
        message: b"signed".to_vec(),
        signature,
        signing_algorithm: "RSASSA_PSS_SHA_256".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_denied(
        app.sign(sign("RSASSA_PKCS1_V1_5_SHA_256")).await,
        APP,
        "kms:Sign",
        Some(&key),
    );
}

/// A key with the default policy (only the account root and the account's identity policies).
async fn default_key(root: &mut AuthClient) -> String {
    root.create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn
}

#[tokio::test]
async fn identity_policy_deny_caller_account_and_alias_moves() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.toml");
    let ext_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"},
        {"Sid": "NoRestrictedDecrypt", "Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:Tier": "restricted"}}}
    ]})
    .to_string();
    // Alias operations need the caller's identity policy to allow them on the alias itself.
    let app_aliases = allow(
        &["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"],
        "arn:aws:kms:us-east-1:111122223333:alias/moving",
    );
    std::fs::write(
        &identity,
        identity_file(
            &[("ext", &ext_policy), ("app-aliases", &app_aliases)],
            &[(EXT, &["ext"]), (APP, &["app-aliases"])],
        ),
    )
    .unwrap();
    let server = Server::start_with(&token_config(false, &[ROOT, APP, EXT], Some(&identity))).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let mut ext = client_as(&server, EXT).await;

    // AWS's "Allow access through ... for all principals in the account": Principal "*" with
    // kms:CallerAccount. The external user (whose identity policy allows) is not of that account.
    let key = create_key(
        &mut root,
        &key_policy(&[
            json!({"Sid": "AccountCallers", "Effect": "Allow", "Principal": {"AWS": "*"},
                   "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
                   "Condition": {"StringEquals": {"kms:CallerAccount": "111122223333"}}}),
            json!({"Sid": "External", "Effect": "Allow", "Principal": {"AWS": EXT},
                   "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
                   "Condition": {"StringEquals": {"kms:EncryptionContext:Tier": ["restricted", "open"]}}}),
        ]),
    )
    .await;
    encrypt(&mut app, &key, &[]).await.unwrap();
    expect_denied(encrypt(&mut ext, &key, &[]).await, EXT, "kms:Encrypt", Some(&key));

    // An explicit Deny in an identity policy wins over the key policy's Allow.
    let open = encrypt(&mut ext, &key, &[("Tier", "open")]).await.unwrap().into_inner();
    decrypt(&mut ext, &open.ciphertext_blob, &[("Tier", "open")])
        .await
        .unwrap();
    let restricted = encrypt(&mut ext, &key, &[("Tier", "restricted")])
        .await
        .unwrap()
        .into_inner();
    let msg = expect_denied(
        decrypt(&mut ext, &restricted.ciphertext_blob, &[("Tier", "restricted")]).await,
        EXT,
        "kms:Decrypt",
        Some(&key),
    );
    assert!(
        msg.ends_with("with an explicit deny in an identity-based policy"),
        "{msg}"
    );
    let (_, recs) = server.audit_records();
    let denial = recs
        .iter()
        .find(|r| r["principal"] == EXT && r["operation"] == "Decrypt" && r["outcome"] == "AccessDeniedException")
        .unwrap();
    assert_eq!(
        denial["decision"],
        "denied explicitly by ext statement \"NoRestrictedDecrypt\""
    );

    // Moving an alias needs kms:UpdateAlias on the key it points to and on the new one (AWS).
    let may_move = key_policy(&[allow_app(
        "AppMovesAliases",
        &["kms:UpdateAlias", "kms:CreateAlias"],
        json!({}),
    )]);
    let (a, b) = (
        create_key(&mut root, &may_move).await,
        create_key(&mut root, &may_move).await,
    );
    let c = create_key(&mut root, &key_policy(&[])).await;
    // The key policy allows app on a, but no identity policy allows it on this alias (AWS
    // decides CreateAlias on both): denied, naming the alias.
    let msg = expect_denied(
        app.create_alias(pb::CreateAliasRequest {
            alias_name: "alias/elsewhere".into(),
            target_key_id: a.clone(),
        })
        .await,
        APP,
        "kms:CreateAlias",
        Some("arn:aws:kms:us-east-1:111122223333:alias/elsewhere"),
    );
    assert!(
        msg.ends_with("because no identity-based policy allows the kms:CreateAlias action"),
        "{msg}"
    );
    app.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/moving".into(),
        target_key_id: a.clone(),
    })
    .await
    .unwrap();
    let update = |target: &str| pb::UpdateAliasRequest {
        alias_name: "alias/moving".into(),
        target_key_id: target.into(),
    };
    app.update_alias(update(&b)).await.unwrap();
    expect_denied(app.update_alias(update(&c)).await, APP, "kms:UpdateAlias", Some(&c));
    root.update_alias(update(&c)).await.unwrap();
    // Now the alias points to c, on which app may not: moving it away is refused too.
    expect_denied(app.update_alias(update(&a)).await, APP, "kms:UpdateAlias", Some(&c));
    expect_denied(
        app.delete_alias(pb::DeleteAliasRequest {
            alias_name: "alias/moving".into(),
        })
        .await,
        APP,
        "kms:DeleteAlias",
        Some(&c),
    );
    let (_, recs) = server.audit_records();
    let refused_move = recs
        .iter()
        .rfind(|r| r["principal"] == APP && r["operation"] == "UpdateAlias")
        .unwrap();
    assert_eq!(refused_move["outcome"], "AccessDeniedException");
    assert_eq!(
        refused_move["decision"],
        "denied: the key policy delegates to IAM but no identity policy allows"
    );
    // The record names the key that refused: the one the alias pointed to.
    assert_eq!(refused_move["key_arn"], c.as_str());
}

/// kms:ResourceAliases (AWS's "use aliases to control access" example): the key's aliases as they
/// are now, so creating, moving and deleting an alias changes who may use the key at once.
#[tokio::test]
async fn resource_aliases_follow_alias_changes() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let finance_only = key_policy(&[allow_app(
        "FinanceAliases",
        &["kms:Encrypt"],
        json!({"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/finance-*"}}),
    )]);
    let (a, b) = (
        create_key(&mut root, &finance_only).await,
        create_key(&mut root, &finance_only).await,
    );
    let alias = |name: &str, target: &str| pb::CreateAliasRequest {
        alias_name: name.into(),
        target_key_id: target.into(),
    };

    // No alias: kms:ResourceAliases is absent, ForAnyValue does not match.
    expect_denied(encrypt(&mut app, &a, &[]).await, APP, "kms:Encrypt", Some(&a));
    root.create_alias(alias("alias/other", &a)).await.unwrap();
    expect_denied(encrypt(&mut app, &a, &[]).await, APP, "kms:Encrypt", Some(&a));
    // A matching alias among several: allowed, by key ARN (the alias need not be in the request).
    root.create_alias(alias("alias/finance-payroll", &a)).await.unwrap();
    encrypt(&mut app, &a, &[]).await.unwrap();
    expect_denied(encrypt(&mut app, &b, &[]).await, APP, "kms:Encrypt", Some(&b));

    // Moving the alias moves the permission, with no stale answer from a cache.
    root.update_alias(pb::UpdateAliasRequest {
        alias_name: "alias/finance-payroll".into(),
        target_key_id: b.clone(),
    })
    .await
    .unwrap();
    expect_denied(encrypt(&mut app, &a, &[]).await, APP, "kms:Encrypt", Some(&a));
    encrypt(&mut app, &b, &[]).await.unwrap();
    root.delete_alias(pb::DeleteAliasRequest {
        alias_name: "alias/finance-payroll".into(),
    })
    .await
    .unwrap();
    expect_denied(encrypt(&mut app, &b, &[]).await, APP, "kms:Encrypt", Some(&b));
}

/// kms:RequestAlias is the alias that named the key being decided: in ReEncrypt, the source's alias
/// does not count for the destination.
#[tokio::test]
async fn request_alias_is_per_key_in_re_encrypt() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let source = create_key(
        &mut root,
        &key_policy(&[allow_app("Use", &["kms:Encrypt", "kms:ReEncryptFrom"], json!({}))]),
    )
    .await;
    let destination = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "ToByFinanceAlias",
            &["kms:ReEncryptTo"],
            json!({"StringLike": {"kms:RequestAlias": "alias/finance-*"}}),
        )]),
    )
    .await;
    for (alias, key) in [("alias/finance-src", &source), ("alias/finance-dst", &destination)] {
        root.create_alias(pb::CreateAliasRequest {
            alias_name: alias.into(),
            target_key_id: key.clone(),
        })
        .await
        .unwrap();
    }
    let blob = encrypt(&mut app, &source, &[])
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let re_encrypt = |source: &str, destination: &str| pb::ReEncryptRequest {
        ciphertext_blob: blob.clone(),
        source_key_id: Some(source.into()),
        destination_key_id: destination.into(),
        ..Default::default()
    };
    expect_denied(
        app.re_encrypt(re_encrypt("alias/finance-src", &destination)).await,
        APP,
        "kms:ReEncryptTo",
        Some(&destination),
    );
    let done = app
        .re_encrypt(re_encrypt(&source, "alias/finance-dst"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.key_id, destination);
}

/// Condition keys AWS fills in for data key pairs, data keys, ReEncrypt, tags and grants, through
/// the server, each with a policy from the AWS docs that decides differently without it.
#[tokio::test]
async fn condition_keys_for_data_keys_re_encrypt_tags_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.toml");
    // App may create keys, but tag them only with the Project tag (AWS's aws:TagKeys example).
    let app_identity = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:TagResource", "Resource": "*",
         "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["Project"]},
                       "StringEquals": {"aws:RequestTag/Project": "alpha"}}}
    ]})
    .to_string();
    std::fs::write(&identity, identity_file(&[("app", &app_identity)], &[(APP, &["app"])])).unwrap();
    let server = Server::start_with(&token_config(false, &[ROOT, APP, EXT], Some(&identity))).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let mut ext = client_as(&server, EXT).await;

    // kms:DataKeyPairSpec (AWS: "RSA*" only), and kms:EncryptionAlgorithm on GenerateDataKey*:
    // AWS's "AllowOnlySymmetricAlgorithm" Deny does not stop data keys, which are SYMMETRIC_DEFAULT.
    let key = create_key(
        &mut root,
        &key_policy(&[
            allow_app(
                "EccPairs",
                &["kms:GenerateDataKeyPair"],
                json!({"StringLike": {"kms:DataKeyPairSpec": "ECC_*"}}),
            ),
            allow_app("DataKeys", &["kms:GenerateDataKey"], json!({})),
            json!({"Sid": "AllowOnlySymmetricAlgorithm", "Effect": "Deny", "Principal": {"AWS": APP},
                   "Action": ["kms:GenerateDataKey*", "kms:Encrypt"], "Resource": "*",
                   "Condition": {"StringNotEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}}),
        ]),
    )
    .await;
    let pair = |spec: &str| pb::GenerateDataKeyPairRequest {
        key_id: key.clone(),
        key_pair_spec: spec.into(),
        ..Default::default()
    };
    app.generate_data_key_pair(pair("ECC_NIST_P256")).await.unwrap();
    expect_denied(
        app.generate_data_key_pair(pair("RSA_2048")).await,
        APP,
        "kms:GenerateDataKeyPair",
        Some(&key),
    );
    app.generate_data_key(gdk(&key)).await.unwrap();

    // kms:ReEncryptOnSameKey (AWS: refuse re-encryption to another key).
    let same_only = key_policy(&[
        allow_app("Use", &["kms:Encrypt", "kms:ReEncrypt*"], json!({})),
        json!({"Sid": "SameKeyOnly", "Effect": "Deny", "Principal": {"AWS": APP},
               "Action": "kms:ReEncrypt*", "Resource": "*",
               "Condition": {"Bool": {"kms:ReEncryptOnSameKey": "false"}}}),
    ]);
    let (a, b) = (
        create_key(&mut root, &same_only).await,
        create_key(&mut root, &same_only).await,
    );
    let blob = encrypt(&mut app, &a, &[]).await.unwrap().into_inner().ciphertext_blob;
    let re_encrypt = |to: &str| pb::ReEncryptRequest {
        ciphertext_blob: blob.clone(),
        destination_key_id: to.into(),
        ..Default::default()
    };
    app.re_encrypt(re_encrypt(&a)).await.unwrap();
    expect_denied(app.re_encrypt(re_encrypt(&b)).await, APP, "kms:ReEncryptFrom", Some(&a));

    // aws:ResourceTag/<key> follows TagResource and UntagResource.
    let tagged = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "AlphaOnly",
            &["kms:Encrypt"],
            json!({"StringEquals": {"aws:ResourceTag/Project": "alpha"}}),
        )]),
    )
    .await;
    expect_denied(encrypt(&mut app, &tagged, &[]).await, APP, "kms:Encrypt", Some(&tagged));
    let tag = |k: &str, v: &str| pb::Tag {
        tag_key: k.into(),
        tag_value: v.into(),
    };
    root.tag_resource(pb::TagResourceRequest {
        key_id: tagged.clone(),
        tags: vec![tag("Project", "alpha")],
    })
    .await
    .unwrap();
    encrypt(&mut app, &tagged, &[]).await.unwrap();
    root.untag_resource(pb::UntagResourceRequest {
        key_id: tagged.clone(),
        tag_keys: vec!["Project".into()],
    })
    .await
    .unwrap();
    expect_denied(encrypt(&mut app, &tagged, &[]).await, APP, "kms:Encrypt", Some(&tagged));

    // CreateKey with Tags also needs kms:TagResource, decided on aws:RequestTag/* and aws:TagKeys.
    let create = |tags: Vec<pb::Tag>| pb::CreateKeyRequest {
        tags,
        ..Default::default()
    };
    app.create_key(create(vec![])).await.unwrap();
    app.create_key(create(vec![tag("Project", "alpha")])).await.unwrap();
    for tags in [
        vec![tag("Project", "beta")],
        vec![tag("Project", "alpha"), tag("Owner", "x")],
    ] {
        let msg = expect_denied(app.create_key(create(tags)).await, APP, "kms:TagResource", None);
        assert!(
            msg.ends_with("because no identity-based policy allows the kms:TagResource action"),
            "{msg}"
        );
    }

    // Account-level actions are decided by identity policies alone: a caller of another account
    // is told no identity-based policy allows (not a resource-based one).
    let msg = expect_denied(ext.create_key(create(vec![])).await, EXT, "kms:CreateKey", None);
    assert!(
        msg.ends_with("because no identity-based policy allows the kms:CreateKey action"),
        "{msg}"
    );

    // kms:GrantConstraintType and the constraint's kms:EncryptionContext:* on CreateGrant.
    let grants = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "ConstrainedGrantsOnly",
            &["kms:CreateGrant"],
            json!({"StringEquals": {"kms:GrantConstraintType": "EncryptionContextSubset",
                                    "kms:EncryptionContext:Team": "blue"}}),
        )]),
    )
    .await;
    let grant = |subset: &[(&str, &str)]| pb::CreateGrantRequest {
        key_id: grants.clone(),
        grantee_principal: OTHER.into(),
        operations: vec!["Decrypt".into()],
        constraints: (!subset.is_empty()).then(|| pb::GrantConstraints {
            encryption_context_subset: ctx(subset),
            ..Default::default()
        }),
        ..Default::default()
    };
    expect_denied(
        app.create_grant(grant(&[])).await,
        APP,
        "kms:CreateGrant",
        Some(&grants),
    );
    expect_denied(
        app.create_grant(grant(&[("Team", "red")])).await,
        APP,
        "kms:CreateGrant",
        Some(&grants),
    );
    app.create_grant(grant(&[("Team", "blue")])).await.unwrap();
}

/// The lockout safety check decides with the key's own condition values: a policy that denies
/// PutKeyPolicy on keys tagged locked=true is a lockout for a key so tagged, or created so, and
/// not for another.
#[tokio::test]
async fn the_lockout_check_sees_the_keys_tags() {
    let server = Server::start_with(&token_config(false, &[ROOT], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let (locked, open) = (
        create_key(&mut root, &key_policy(&[])).await,
        create_key(&mut root, &key_policy(&[])).await,
    );
    root.tag_resource(pb::TagResourceRequest {
        key_id: locked.clone(),
        tags: vec![pb::Tag {
            tag_key: "locked".into(),
            tag_value: "true".into(),
        }],
    })
    .await
    .unwrap();
    let locks_tagged = key_policy(&[json!({
        "Sid": "NoChangesWhenLocked", "Effect": "Deny", "Principal": {"AWS": ROOT},
        "Action": "kms:PutKeyPolicy", "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/locked": "true"}}})]);
    expect_err(
        put_policy(&mut root, &locked, &locks_tagged, false).await,
        "MalformedPolicyDocumentException",
    );
    put_policy(&mut root, &open, &locks_tagged, false).await.unwrap();
    // CreateKey decides with the tags the key is created with (before, it saw none, and made a
    // key tagged locked=true whose policy could not be changed until the tag was taken off).
    let create = |locked: &str| pb::CreateKeyRequest {
        policy: Some(locks_tagged.clone()),
        tags: vec![pb::Tag {
            tag_key: "locked".into(),
            tag_value: locked.into(),
        }],
        ..Default::default()
    };
    expect_err(
        root.create_key(create("true")).await,
        "MalformedPolicyDocumentException",
    );
    root.create_key(create("false")).await.unwrap();
    // With the check bypassed the policy goes in, and then it does what it says.
    put_policy(&mut root, &locked, &locks_tagged, true).await.unwrap();
    expect_denied(
        put_policy(&mut root, &locked, &key_policy(&[]), false).await,
        ROOT,
        "kms:PutKeyPolicy",
        Some(&locked),
    );
}

/// The lockout safety check decides as a later PutKeyPolicy would: with
/// kms:BypassPolicyLockoutSafetyCheck "false" (the check runs only then), and on CreateKey with
/// the new key's spec, usage and origin. Before, both keys were missing there, so a policy whose
/// PutKeyPolicy statement tests them was refused as a lockout, though it let the caller in.
#[tokio::test]
async fn the_lockout_check_sees_the_bypass_flag_and_a_new_keys_spec() {
    let server = Server::start_with(&token_config(false, &[ROOT], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let guarded = |condition: Value| {
        json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Others", "Effect": "Allow", "Principal": {"AWS": ROOT},
             "NotAction": "kms:PutKeyPolicy", "Resource": "*"},
            {"Sid": "Policy", "Effect": "Allow", "Principal": {"AWS": ROOT},
             "Action": "kms:PutKeyPolicy", "Resource": "*", "Condition": condition}]})
        .to_string()
    };
    let no_bypass = guarded(json!({"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "false"}}));
    let key = create_key(&mut root, &key_policy(&[])).await;
    put_policy(&mut root, &key, &no_bypass, false).await.unwrap();
    // Now in force, it lets the caller change the policy without the bypass, not with it.
    put_policy(&mut root, &key, &no_bypass, false).await.unwrap();
    expect_denied(
        put_policy(&mut root, &key, &no_bypass, true).await,
        ROOT,
        "kms:PutKeyPolicy",
        Some(&key),
    );
    let symmetric_only = guarded(json!({"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}));
    let key = create_key(&mut root, &symmetric_only).await;
    put_policy(&mut root, &key, &symmetric_only, false).await.unwrap();
    let status = root
        .create_key(pb::CreateKeyRequest {
            key_spec: Some("ECC_NIST_P256".into()),
            key_usage: Some("SIGN_VERIFY".into()),
            policy: Some(symmetric_only),
            ..Default::default()
        })
        .await;
    expect_err(status, "MalformedPolicyDocumentException");
}

/// A change whose request is cancelled while its store write waits still invalidates the caches
/// once the write lands: here a DeleteAlias whose client gives up while another process holds the
/// database's write lock. Before, the invalidation ran after the `.await` and was skipped, and
/// kms:ResourceAliases kept the deleted alias for good.
#[tokio::test]
async fn a_cancelled_change_still_invalidates_once_written() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let key = create_key(
        &mut root,
        &key_policy(&[allow_app(
            "ByAlias",
            &["kms:Encrypt"],
            json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/ok"}}),
        )]),
    )
    .await;
    root.create_alias(pb::CreateAliasRequest {
        alias_name: "alias/ok".into(),
        target_key_id: key.clone(),
    })
    .await
    .unwrap();
    encrypt(&mut app, &key, &[]).await.unwrap(); // kms:ResourceAliases of the key is now cached

    let db = rusqlite::Connection::open(server.data_dir().join("kms.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap(); // the server's writes wait (busy_timeout)
    let delete = root.delete_alias(pb::DeleteAliasRequest {
        alias_name: "alias/ok".into(),
    });
    // Long enough for the server to have read the request, well inside its 5 s wait for the lock.
    let gave_up = tokio::time::timeout(Duration::from_millis(1500), delete).await;
    assert!(gave_up.is_err(), "the write should still be waiting for the lock");
    db.execute_batch("COMMIT").unwrap();

    // The write lands after the request is gone; the alias list must not be served from cache.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match encrypt(&mut app, &key, &[]).await {
            Err(status) if error_type(&status) == "AccessDeniedException" => break,
            Err(status) => panic!("{status:?}"),
            Ok(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(_) => panic!("the deleted alias still allows: a stale kms:ResourceAliases cache"),
        }
    }
    let aliases = root
        .list_aliases(pb::ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .aliases;
    assert!(aliases.iter().all(|a| a.alias_name != "alias/ok"), "the delete landed");
}

/// Input is checked before the caller's permissions, as AWS does: a caller that may not list keys
/// or aliases, or move an alias, still learns that its Limit, Marker or TargetKeyId is malformed,
/// and ReEncrypt's ciphertext and a Sign or Verify digest are measured before any key is looked up.
#[tokio::test]
async fn malformed_input_is_refused_before_authorization() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP], None)).await;
    let mut app = client_as(&server, APP).await;
    expect_err(
        app.list_keys(pb::ListKeysRequest::default()).await,
        "AccessDeniedException",
    );
    let zero = pb::ListKeysRequest {
        limit: Some(0),
        ..Default::default()
    };
    expect_err(app.list_keys(zero).await, "ValidationException");
    let garbage = pb::ListAliasesRequest {
        marker: Some("not-a-marker".into()),
        ..Default::default()
    };
    expect_err(app.list_aliases(garbage).await, "InvalidMarkerException");
    let empty_target = pb::UpdateAliasRequest {
        alias_name: "alias/none-yet".into(),
        target_key_id: String::new(),
    };
    expect_err(app.update_alias(empty_target).await, "ValidationException");
    let empty_blob = pb::ReEncryptRequest {
        destination_key_id: "00000000-0000-4000-8000-000000000000".into(),
        ..Default::default()
    };
    expect_err(app.re_encrypt(empty_blob).await, "ValidationException");
    // A DIGEST's length is fixed by the request's own SigningAlgorithm.
    let short_digest = pb::SignRequest {
        key_id: "00000000-0000-4000-8000-000000000000".into(),
        message: vec![0; 5],
        message_type: Some("DIGEST".into()),
        signing_algorithm: "ECDSA_SHA_256".into(),
        ..Default::default()
    };
    let msg = expect_err(app.sign(short_digest).await, "ValidationException");
    assert!(msg.contains("must be 32 bytes, got 5"), "{msg}");
    let short_digest = pb::VerifyRequest {
        key_id: "00000000-0000-4000-8000-000000000000".into(),
        message: vec![0; 5],
        message_type: Some("DIGEST".into()),
        signing_algorithm: "RSASSA_PSS_SHA_512".into(),
        signature: vec![1; 64],
        ..Default::default()
    };
    let msg = expect_err(app.verify(short_digest).await, "ValidationException");
    assert!(msg.contains("must be 64 bytes, got 5"), "{msg}");
    // A KeyId's length is a parameter constraint too, checked before the listing is authorized.
    let empty_key = pb::ListAliasesRequest {
        key_id: Some(String::new()),
        ..Default::default()
    };
    expect_err(app.list_aliases(empty_key).await, "ValidationException");
}

/// With several things wrong, the parameters' constraints (ValidationException) are reported
/// before the service's rules, as AWS checks them: a marker not ours, a policy name other than
/// `default`, reserved tag keys and too many tags, the 32 KB policy quota, reserved alias names.
#[tokio::test]
async fn constraints_come_before_the_services_rules() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let k = crate::common::create_key(&mut c).await.key_id;
    let v = "ValidationException";
    let foreign_marker = Some("x".to_string());
    expect_err(
        c.list_aliases(pb::ListAliasesRequest {
            key_id: Some(String::new()),
            marker: foreign_marker.clone(),
            ..Default::default()
        })
        .await,
        v,
    );
    expect_err(
        c.list_resource_tags(pb::ListResourceTagsRequest {
            key_id: String::new(),
            marker: foreign_marker.clone(),
            ..Default::default()
        })
        .await,
        v,
    );
    expect_err(
        c.list_key_policies(pb::ListKeyPoliciesRequest {
            key_id: String::new(),
            marker: foreign_marker.clone(),
            ..Default::default()
        })
        .await,
        v,
    );
    expect_err(
        c.put_key_policy(pb::PutKeyPolicyRequest {
            key_id: k.clone(),
            policy_name: Some("foo".into()),
            policy: String::new(),
            ..Default::default()
        })
        .await,
        v,
    );
    expect_err(
        c.get_key_policy(pb::GetKeyPolicyRequest {
            key_id: String::new(),
            policy_name: Some("foo".into()),
        })
        .await,
        v,
    );
    let tag = |key: &str, value: &str| pb::Tag {
        tag_key: key.into(),
        tag_value: value.into(),
    };
    let mut fifty_one: Vec<pb::Tag> = (0..50).map(|i| tag(&format!("t{i}"), "v")).collect();
    fifty_one.push(tag(&"k".repeat(129), "v"));
    for (key_id, tags) in [
        (k.clone(), vec![tag("aws:x", "v"), tag("k", &"v".repeat(257))]),
        (k.clone(), fifty_one.clone()),
        (String::new(), vec![tag("aws:x", "v")]),
    ] {
        expect_err(c.tag_resource(pb::TagResourceRequest { key_id, tags }).await, v);
    }
    expect_err(
        c.untag_resource(pb::UntagResourceRequest {
            key_id: k.clone(),
            tag_keys: vec!["aws:x".into(), String::new()],
        })
        .await,
        v,
    );
    let large_policy = format!("{{\"Version\": \"2012-10-17\"}}{}", " ".repeat(40 * 1024));
    expect_err(
        c.create_key(pb::CreateKeyRequest {
            policy: Some(large_policy),
            tags: vec![tag(&"k".repeat(129), "v")],
            ..Default::default()
        })
        .await,
        v,
    );
    expect_err(
        c.create_alias(pb::CreateAliasRequest {
            alias_name: "alias/aws/x".into(),
            target_key_id: String::new(),
        })
        .await,
        v,
    );
    // Each rule alone still gets its own exception.
    expect_err(
        c.tag_resource(pb::TagResourceRequest {
            key_id: k.clone(),
            tags: vec![tag("aws:x", "v")],
        })
        .await,
        "TagException",
    );
    expect_err(
        c.get_key_policy(pb::GetKeyPolicyRequest {
            key_id: k.clone(),
            policy_name: Some("foo".into()),
        })
        .await,
        "NotFoundException",
    );
    expect_err(
        c.create_alias(pb::CreateAliasRequest {
            alias_name: "alias/aws/x".into(),
            target_key_id: k.clone(),
        })
        .await,
        "InvalidAliasNameException",
    );
}

/// Condition keys AWS sets on every request from an IAM user (`aws:PrincipalType`,
/// `aws:username`) and on every key (`kms:MultiRegion`, false for single-Region keys), with
/// policies that decide otherwise when they are missing: AWS's single-Region Allow, and Denies
/// on the principal's type and name.
#[tokio::test]
async fn principal_type_user_name_and_multi_region_are_in_the_context() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP, OTHER], None)).await;
    let mut root = client_as(&server, ROOT).await;
    let mut app = client_as(&server, APP).await;
    let mut other = client_as(&server, OTHER).await;
    let allow_other = |sid: &str, actions: &[&str]| json!({"Sid": sid, "Effect": "Allow", "Principal": {"AWS": OTHER}, "Action": actions, "Resource": "*"});
    let key = create_key(
        &mut root,
        &key_policy(&[
            allow_app(
                "SingleRegionOnly",
                &["kms:Encrypt"],
                json!({"Bool": {"kms:MultiRegion": "false"}}),
            ),
            allow_other("Use", &["kms:Encrypt", "kms:GenerateDataKey"]),
            json!({"Sid": "NoUsersGenerate", "Effect": "Deny", "Principal": {"AWS": "*"},
                   "Action": "kms:GenerateDataKey", "Resource": "*",
                   "Condition": {"StringEquals": {"aws:PrincipalType": "User"}}}),
            json!({"Sid": "NotOther", "Effect": "Deny", "Principal": {"AWS": "*"},
                   "Action": "kms:Encrypt", "Resource": "*",
                   "Condition": {"StringEquals": {"aws:username": "other"}}}),
        ]),
    )
    .await;
    encrypt(&mut app, &key, &[]).await.unwrap();
    expect_denied(encrypt(&mut other, &key, &[]).await, OTHER, "kms:Encrypt", Some(&key));
    expect_denied(
        other.generate_data_key(gdk(&key)).await,
        OTHER,
        "kms:GenerateDataKey",
        Some(&key),
    );
    // The account's root is of type Account: the Deny on users doesn't stop it.
    root.generate_data_key(gdk(&key)).await.unwrap();
}
