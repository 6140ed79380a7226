//! Key policies and identity policies through the server: conditions from the AWS KMS key policy
//! examples, deny over allow, cross-account access, PutKeyPolicy / GetKeyPolicy /
//! ListKeyPolicies with the lockout safety check, and identity policies reloaded on SIGHUP.

use std::collections::HashMap;
use std::time::Duration;

use kms::proto as pb;
use serde_json::{json, Value};

use crate::auth::*;
use crate::common::*;

const APP: &str = "arn:aws:iam::111122223333:user/app";
const OTHER: &str = "arn:aws:iam::111122223333:user/other";

/// Each principal's token is its name with a suffix.
fn token(principal: &str) -> String {
    format!("token-{}-7d41", principal.rsplit([':', '/']).next().unwrap())
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

fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn encrypt(
    c: &mut AuthClient,
    key: &str,
    pairs: &[(&str, &str)],
) -> Result<tonic::Response<pb::EncryptResponse>, tonic::Status> {
    c.encrypt(pb::EncryptRequest {
        key_id: key.into(),
        plaintext: b"policy test".to_vec(),
        encryption_context: context(pairs),
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
        encryption_context: context(pairs),
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
    let mut root = plain_client(&server, Bearer::token(Some(&token(ROOT)))).await;
    let mut app = plain_client(&server, Bearer::token(Some(&token(APP)))).await;
    // The default key policy: the account's identity policies decide for app.
    let key = root
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn;
    app.describe_key(pb::DescribeKeyRequest { key_id: key.clone() })
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
    for _ in 0..100 {
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
    for _ in 0..100 {
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
    app.describe_key(pb::DescribeKeyRequest { key_id: key.clone() })
        .await
        .unwrap();
}

#[tokio::test]
async fn put_get_list_key_policies_and_the_lockout_check() {
    let server = Server::start_with(&token_config(false, &[ROOT, APP, OTHER], None)).await;
    let mut root = plain_client(&server, Bearer::token(Some(&token(ROOT)))).await;
    let mut app = plain_client(&server, Bearer::token(Some(&token(APP)))).await;
    let mut other = plain_client(&server, Bearer::token(Some(&token(OTHER)))).await;
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
        ("".to_string(), "Policy"),
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
    let over = format!("{exactly} ");
    let msg = expect_err(
        put_policy(&mut app, &key, &over, false).await,
        "MalformedPolicyDocumentException",
    );
    assert!(msg.starts_with("Policy") && msg.contains("32768"), "{msg}");
    assert_eq!(get_policy(&mut app, &key).await, exactly);
}
