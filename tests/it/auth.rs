//! Authentication and authorization through the real server: mTLS client certificates made with
//! openssl, bearer tokens, dev mode, and an authorization matrix over every operation of the
//! service for a principal the key policy allows and one it doesn't.

use std::collections::HashMap;
use std::path::Path;

use kms::proto as pb;
use tonic::{Code, Status};

use crate::common::*;
use crate::tls::*;

pub const ROOT: &str = "arn:aws:iam::111122223333:root";
pub const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
pub const BOB: &str = "arn:aws:iam::111122223333:user/bob";
pub const CAROL: &str = "arn:aws:iam::111122223333:role/carol";
pub const DAVE: &str = "arn:aws:iam::111122223333:user/dave";
pub const BOB_TOKEN: &str = "bob-service-token-5b0e41c7d2a94f18";
pub const WRONG_TOKEN: &str = "wrong-token-0000-not-configured";

/// `[auth]` outside or inside dev mode, with token and certificate rules and an identity file.
pub fn auth_config(dev_mode: bool, tokens: &[(&str, &str)], certs: &[(&str, &str)], identity: Option<&Path>) -> String {
    let mut s = format!("[auth]\ndev_mode = {dev_mode}\n");
    if let Some(p) = identity {
        s += &format!("identity_policies_file = {:?}\n", p.display().to_string());
    }
    for (token, principal) in tokens {
        s += &format!(
            "[[auth.tokens]]\nsha256 = {:?}\nprincipal = {principal:?}\n",
            kms::auth::token_digest(token)
        );
    }
    for (rule, principal) in certs {
        s += &format!("[[auth.certificates]]\nmatch = {rule:?}\nprincipal = {principal:?}\n");
    }
    s
}

/// An identity-policy file: named policy documents, and the policies attached to each principal.
pub fn identity_file(policies: &[(&str, &str)], principals: &[(&str, &[&str])]) -> String {
    let mut s = String::from("[policies]\n");
    for (name, doc) in policies {
        s += &format!("{name} = '''{doc}'''\n");
    }
    for (arn, names) in principals {
        s += &format!("[principals.{arn:?}]\npolicies = {names:?}\n");
    }
    s
}

/// An identity policy allowing `actions` on `resource`.
pub fn allow(actions: &[&str], resource: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]
    })
    .to_string()
}

/// Asserts an AccessDeniedException (PERMISSION_DENIED) naming `principal`, `action` and, when
/// given, `resource`; returns its message.
#[track_caller]
pub fn expect_denied<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    principal: &str,
    action: &str,
    resource: Option<&str>,
) -> String {
    if let Err(s) = &result {
        assert_eq!(s.code(), Code::PermissionDenied, "{action}: {}", s.message());
    }
    let msg = expect_err(result, "AccessDeniedException");
    assert!(
        msg.starts_with(&format!(
            "User: {principal} is not authorized to perform: {action} on resource: "
        )),
        "{msg}"
    );
    if let Some(r) = resource {
        assert!(msg.contains(&format!("on resource: {r} ")), "{action}: {msg}");
    }
    msg
}

/// Asserts an UnrecognizedClientException (UNAUTHENTICATED).
#[track_caller]
pub fn expect_unrecognized<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> String {
    if let Err(s) = &result {
        assert_eq!(s.code(), Code::Unauthenticated, "{}", s.message());
    }
    expect_err(result, "UnrecognizedClientException")
}

/// Every operation of the service, in an order in which alice can run them all on the fixture.
const OPS: [&str; 36] = [
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "UpdateKeyDescription",
    "DisableKey",
    "EnableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "CreateAlias",
    "UpdateAlias",
    "DeleteAlias",
    "ListAliases",
    "TagResource",
    "UntagResource",
    "ListResourceTags",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "Sign",
    "Verify",
    "GetPublicKey",
    "GenerateMac",
    "VerifyMac",
    "PutKeyPolicy",
    "GetKeyPolicy",
    "ListKeyPolicies",
    "CreateGrant",
    "ListGrants",
    "ListRetirableGrants",
    "RetireGrant",
    "RevokeGrant",
];

#[test]
fn the_matrix_covers_every_operation_of_the_service() {
    let proto = include_str!("../../proto/kms/v1/kms.proto");
    let mut methods: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap().trim())
        .collect();
    methods.sort();
    let mut ops = OPS.to_vec();
    ops.sort();
    assert_eq!(ops, methods, "OPS must list every rpc of proto/kms/v1/kms.proto");
}

/// Decided by identity policies only.
const ACCOUNT_OPS: [&str; 5] = [
    "CreateKey",
    "ListKeys",
    "ListAliases",
    "GenerateRandom",
    "ListRetirableGrants",
];

/// Keys (ARNs) and inputs the matrix runs on; all keys have `policy`.
struct Fixture {
    sym: String,
    other: String,
    victim: String,
    ecc: String,
    hmac: String,
    blob: Vec<u8>,
    signature: Vec<u8>,
    mac: Vec<u8>,
    policy: String,
    /// Grants on `sym` to carol: one alice retires (its retiring principal), one she revokes.
    retire: String,
    revoke: String,
}

const FIXED_ALIAS: &str = "alias/matrix-fixed";
const NEW_ALIAS: &str = "alias/matrix-new";
const MESSAGE: &[u8] = b"matrix message";

fn matrix_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "matrix",
        "Statement": [
            {"Sid": "AliceAdministersAndUsesTheKey", "Effect": "Allow",
             "Principal": {"AWS": ALICE}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "BobOnlyDescribes", "Effect": "Allow",
             "Principal": {"AWS": BOB}, "Action": "kms:DescribeKey", "Resource": "*"}
        ]
    })
    .to_string()
}

fn ctx() -> HashMap<String, String> {
    HashMap::from([("Purpose".to_string(), "matrix".to_string())])
}

/// The action an operation is authorized as, and the key it is decided on (None: account level).
fn action(op: &str) -> String {
    match op {
        "ReEncrypt" => "kms:ReEncryptFrom".into(),
        _ => format!("kms:{op}"),
    }
}

fn resource<'a>(op: &str, fx: &'a Fixture) -> Option<&'a str> {
    match op {
        _ if ACCOUNT_OPS.contains(&op) => None,
        "ScheduleKeyDeletion" | "CancelKeyDeletion" => Some(&fx.victim),
        "UpdateAlias" => Some(&fx.other),
        "Sign" | "Verify" | "GetPublicKey" => Some(&fx.ecc),
        "GenerateMac" | "VerifyMac" => Some(&fx.hmac),
        _ => Some(&fx.sym),
    }
}

async fn call(c: &mut AuthClient, op: &str, fx: &Fixture) -> Result<(), Status> {
    let sym = fx.sym.clone();
    match op {
        "CreateKey" => c
            .create_key(pb::CreateKeyRequest {
                description: "made by the matrix".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "DescribeKey" => c
            .describe_key(pb::DescribeKeyRequest {
                key_id: sym,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListKeys" => c.list_keys(pb::ListKeysRequest::default()).await.map(drop),
        "UpdateKeyDescription" => c
            .update_key_description(pb::UpdateKeyDescriptionRequest {
                key_id: sym,
                description: "updated by the matrix".into(),
            })
            .await
            .map(drop),
        "DisableKey" => c.disable_key(pb::DisableKeyRequest { key_id: sym }).await.map(drop),
        "EnableKey" => c.enable_key(pb::EnableKeyRequest { key_id: sym }).await.map(drop),
        "ScheduleKeyDeletion" => c
            .schedule_key_deletion(pb::ScheduleKeyDeletionRequest {
                key_id: fx.victim.clone(),
                pending_window_in_days: Some(7),
            })
            .await
            .map(drop),
        "CancelKeyDeletion" => c
            .cancel_key_deletion(pb::CancelKeyDeletionRequest {
                key_id: fx.victim.clone(),
            })
            .await
            .map(drop),
        "CreateAlias" => c
            .create_alias(pb::CreateAliasRequest {
                alias_name: NEW_ALIAS.into(),
                target_key_id: sym,
            })
            .await
            .map(drop),
        "UpdateAlias" => c
            .update_alias(pb::UpdateAliasRequest {
                alias_name: FIXED_ALIAS.into(),
                target_key_id: fx.other.clone(),
            })
            .await
            .map(drop),
        "DeleteAlias" => c
            .delete_alias(pb::DeleteAliasRequest {
                alias_name: FIXED_ALIAS.into(),
            })
            .await
            .map(drop),
        "ListAliases" => c.list_aliases(pb::ListAliasesRequest::default()).await.map(drop),
        "TagResource" => c
            .tag_resource(pb::TagResourceRequest {
                key_id: sym,
                tags: vec![pb::Tag {
                    tag_key: "team".into(),
                    tag_value: "matrix".into(),
                }],
            })
            .await
            .map(drop),
        "UntagResource" => c
            .untag_resource(pb::UntagResourceRequest {
                key_id: sym,
                tag_keys: vec!["team".into()],
            })
            .await
            .map(drop),
        "ListResourceTags" => c
            .list_resource_tags(pb::ListResourceTagsRequest {
                key_id: sym,
                ..Default::default()
            })
            .await
            .map(drop),
        "Encrypt" => c
            .encrypt(pb::EncryptRequest {
                key_id: sym,
                plaintext: b"matrix".to_vec(),
                encryption_context: ctx(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Decrypt" => c
            .decrypt(pb::DecryptRequest {
                ciphertext_blob: fx.blob.clone(),
                encryption_context: ctx(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ReEncrypt" => c
            .re_encrypt(pb::ReEncryptRequest {
                ciphertext_blob: fx.blob.clone(),
                source_encryption_context: ctx(),
                destination_key_id: fx.other.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GenerateDataKey" => c
            .generate_data_key(pb::GenerateDataKeyRequest {
                key_id: sym,
                encryption_context: ctx(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            })
            .await
            .map(drop),
        "GenerateDataKeyWithoutPlaintext" => c
            .generate_data_key_without_plaintext(pb::GenerateDataKeyWithoutPlaintextRequest {
                key_id: sym,
                encryption_context: ctx(),
                key_spec: Some("AES_256".into()),
                ..Default::default()
            })
            .await
            .map(drop),
        "GenerateRandom" => c
            .generate_random(pb::GenerateRandomRequest {
                number_of_bytes: Some(32),
            })
            .await
            .map(drop),
        "GenerateDataKeyPair" => c
            .generate_data_key_pair(pb::GenerateDataKeyPairRequest {
                key_id: sym,
                encryption_context: ctx(),
                key_pair_spec: "ECC_NIST_P256".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GenerateDataKeyPairWithoutPlaintext" => c
            .generate_data_key_pair_without_plaintext(pb::GenerateDataKeyPairWithoutPlaintextRequest {
                key_id: sym,
                encryption_context: ctx(),
                key_pair_spec: "ECC_NIST_P256".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Sign" => c
            .sign(pb::SignRequest {
                key_id: fx.ecc.clone(),
                message: MESSAGE.to_vec(),
                signing_algorithm: "ECDSA_SHA_256".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Verify" => c
            .verify(pb::VerifyRequest {
                key_id: fx.ecc.clone(),
                message: MESSAGE.to_vec(),
                signature: fx.signature.clone(),
                signing_algorithm: "ECDSA_SHA_256".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetPublicKey" => c
            .get_public_key(pb::GetPublicKeyRequest {
                key_id: fx.ecc.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GenerateMac" => c
            .generate_mac(pb::GenerateMacRequest {
                key_id: fx.hmac.clone(),
                message: MESSAGE.to_vec(),
                mac_algorithm: "HMAC_SHA_256".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "VerifyMac" => c
            .verify_mac(pb::VerifyMacRequest {
                key_id: fx.hmac.clone(),
                message: MESSAGE.to_vec(),
                mac_algorithm: "HMAC_SHA_256".into(),
                mac: fx.mac.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "PutKeyPolicy" => c
            .put_key_policy(pb::PutKeyPolicyRequest {
                key_id: sym,
                policy: fx.policy.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetKeyPolicy" => c
            .get_key_policy(pb::GetKeyPolicyRequest {
                key_id: sym,
                policy_name: None,
            })
            .await
            .map(drop),
        "ListKeyPolicies" => c
            .list_key_policies(pb::ListKeyPoliciesRequest {
                key_id: sym,
                ..Default::default()
            })
            .await
            .map(drop),
        "CreateGrant" => c
            .create_grant(pb::CreateGrantRequest {
                key_id: sym,
                grantee_principal: CAROL.into(),
                operations: vec!["Decrypt".into()],
                ..Default::default()
            })
            .await
            .map(drop),
        "ListGrants" => c
            .list_grants(pb::ListGrantsRequest {
                key_id: sym,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListRetirableGrants" => c
            .list_retirable_grants(pb::ListRetirableGrantsRequest {
                retiring_principal: ALICE.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "RetireGrant" => c
            .retire_grant(pb::RetireGrantRequest {
                key_id: Some(sym),
                grant_id: Some(fx.retire.clone()),
                ..Default::default()
            })
            .await
            .map(drop),
        "RevokeGrant" => c
            .revoke_grant(pb::RevokeGrantRequest {
                key_id: sym,
                grant_id: fx.revoke.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        other => panic!("no such operation {other}"),
    }
}

async fn create(c: &mut AuthClient, spec: &str, usage: &str, policy: &str) -> String {
    c.create_key(pb::CreateKeyRequest {
        description: "matrix key".into(),
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

async fn fixture(alice: &mut AuthClient) -> Fixture {
    let policy = matrix_policy();
    let sym = create(alice, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", &policy).await;
    let other = create(alice, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", &policy).await;
    let victim = create(alice, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", &policy).await;
    let ecc = create(alice, "ECC_NIST_P256", "SIGN_VERIFY", &policy).await;
    let hmac = create(alice, "HMAC_256", "GENERATE_VERIFY_MAC", &policy).await;
    alice
        .create_alias(pb::CreateAliasRequest {
            alias_name: FIXED_ALIAS.into(),
            target_key_id: sym.clone(),
        })
        .await
        .unwrap();
    let blob = alice
        .encrypt(pb::EncryptRequest {
            key_id: sym.clone(),
            plaintext: b"matrix".to_vec(),
            encryption_context: ctx(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext_blob;
    let signature = alice
        .sign(pb::SignRequest {
            key_id: ecc.clone(),
            message: MESSAGE.to_vec(),
            signing_algorithm: "ECDSA_SHA_256".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .signature;
    let mac = alice
        .generate_mac(pb::GenerateMacRequest {
            key_id: hmac.clone(),
            message: MESSAGE.to_vec(),
            mac_algorithm: "HMAC_SHA_256".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mac;
    let grant = |retiring: Option<&str>| {
        let request = pb::CreateGrantRequest {
            key_id: sym.clone(),
            grantee_principal: CAROL.into(),
            retiring_principal: retiring.map(str::to_string),
            operations: vec!["Encrypt".into()],
            ..Default::default()
        };
        let mut alice = alice.clone();
        async move { alice.create_grant(request).await.unwrap().into_inner().grant_id }
    };
    let retire = grant(Some(ALICE)).await;
    let revoke = grant(None).await;
    Fixture {
        retire,
        revoke,
        sym,
        other,
        victim,
        ecc,
        hmac,
        blob,
        signature,
        mac,
        policy,
    }
}

/// A TLS server outside dev mode: alice by certificate (SAN URI), carol (SAN DNS), dave (CN),
/// bob by token; identity policies from `identity`.
async fn tls_server(pki: &Pki, identity: &str) -> Server {
    let path = pki.path("identity.toml");
    std::fs::write(&path, identity).unwrap();
    let config = format!(
        "{}{}",
        pki.tls_config(),
        auth_config(
            false,
            &[(BOB_TOKEN, BOB)],
            &[
                (&format!("uri:{ALICE_URI}"), ALICE),
                (&format!("dns:{CAROL_DNS}"), CAROL),
                (&format!("cn:{DAVE_CN}"), DAVE),
            ],
            Some(&path),
        )
    );
    Server::start_with(&config).await
}

fn records<'a>(
    records: &'a [serde_json::Value],
    principal: &'a str,
    op: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    records
        .iter()
        .filter(move |r| r["principal"] == principal && r["operation"] == op)
}

#[tokio::test]
async fn authorization_matrix_over_mtls_and_tokens() {
    let pki = Pki::new();
    let alice_account_actions = allow(
        &[
            "kms:CreateKey",
            "kms:ListKeys",
            "kms:ListAliases",
            "kms:GenerateRandom",
            "kms:ListRetirableGrants",
        ],
        "*",
    );
    // Alias operations are decided on the alias (identity policies only) and on its key.
    let aliases = ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"];
    let alice_aliases = allow(&aliases, "arn:aws:kms:us-east-1:111122223333:alias/matrix-*");
    // An identity policy alone gives bob nothing: the key policy names bob, not the account.
    let bob_encrypt = allow(
        &[
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:CreateAlias",
            "kms:UpdateAlias",
            "kms:DeleteAlias",
        ],
        "*",
    );
    let identity = identity_file(
        &[
            ("alice-account", &alice_account_actions),
            ("alice-aliases", &alice_aliases),
            ("bob-crypto", &bob_encrypt),
        ],
        &[(ALICE, &["alice-account", "alice-aliases"]), (BOB, &["bob-crypto"])],
    );
    let server = tls_server(&pki, &identity).await;
    let mut alice = tls_client(&server, &pki.ca.cert, pki.alice.identity(), Bearer::default())
        .await
        .unwrap();
    let mut bob = tls_client(&server, &pki.ca.cert, None, Bearer::token(Some(BOB_TOKEN)))
        .await
        .unwrap();
    let mut nobody = tls_client(&server, &pki.ca.cert, None, Bearer::default())
        .await
        .unwrap();
    let mut wrong = tls_client(&server, &pki.ca.cert, None, Bearer::token(Some(WRONG_TOKEN)))
        .await
        .unwrap();
    let fx = fixture(&mut alice).await;

    // No credential, or a wrong token: refused before any operation, whatever the request.
    for op in OPS {
        let msg = expect_unrecognized(call(&mut nobody, op, &fx).await.map(tonic::Response::new));
        assert!(msg.contains("bearer token or a client certificate"), "{op}: {msg}");
        let msg = expect_unrecognized(call(&mut wrong, op, &fx).await.map(tonic::Response::new));
        assert!(!msg.contains(WRONG_TOKEN), "{op}: {msg}");
    }

    // Bob: DescribeKey only.
    for op in OPS {
        let result = call(&mut bob, op, &fx).await.map(tonic::Response::new);
        if op == "DescribeKey" {
            result.unwrap_or_else(|e| panic!("bob DescribeKey: {e:?}"));
            continue;
        }
        let msg = expect_denied(result, BOB, &action(op), resource(op, &fx));
        if op == "RetireGrant" {
            // Decided by the grant (retiring principal, grantee, account), not by a policy.
            assert!(
                msg.ends_with("because the grant does not allow it to retire the grant"),
                "{msg}"
            );
            continue;
        }
        for secret in [BOB_TOKEN, ALICE, "Statement", "Bob", "Sid", &fx.policy] {
            // ListRetirableGrants' resource is the principal bob himself named (alice), as in AWS.
            if op == "ListRetirableGrants" && secret == ALICE {
                assert!(msg.contains(&format!("on resource: {ALICE} ")), "{msg}");
                continue;
            }
            assert!(!msg.contains(secret), "{op}: {msg} mentions {secret:?}");
        }
        let why = if ACCOUNT_OPS.contains(&op) {
            "because no identity-based policy allows"
        } else {
            "because no resource-based policy allows"
        };
        assert!(
            msg.ends_with(&format!("{why} the {} action", action(op))),
            "{op}: {msg}"
        );
    }
    // By alias too.
    bob.describe_key(pb::DescribeKeyRequest {
        key_id: FIXED_ALIAS.into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Nothing the refused requests asked for happened.
    let victim = alice
        .describe_key(pb::DescribeKeyRequest {
            key_id: fx.victim.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    assert_eq!(victim.key_state, "Enabled");
    let sym = alice
        .describe_key(pb::DescribeKeyRequest {
            key_id: fx.sym.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    assert_eq!(sym.description, "matrix key");
    let aliases = alice
        .list_aliases(pb::ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .aliases;
    assert_eq!(
        aliases.iter().map(|a| a.alias_name.as_str()).collect::<Vec<_>>(),
        [FIXED_ALIAS]
    );

    // Alice: everything.
    for op in OPS {
        call(&mut alice, op, &fx)
            .await
            .unwrap_or_else(|e| panic!("alice {op}: {e:?}"));
    }
    let victim = alice
        .describe_key(pb::DescribeKeyRequest {
            key_id: fx.victim.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap();
    assert_eq!(
        victim.key_state, "Disabled",
        "CancelKeyDeletion leaves the key disabled"
    );

    // The audit log: alice's requests under her principal, bob's refusals with the deciding rule,
    // the unauthenticated ones as such, and never a token.
    let (text, recs) = server.audit_records();
    for op in OPS {
        assert!(
            records(&recs, ALICE, op).any(|r| r["outcome"] == "Success" && r.get("decision").is_none()),
            "no successful audit record of alice's {op}"
        );
        let bobs: Vec<_> = records(&recs, BOB, op).collect();
        assert!(!bobs.is_empty(), "no audit record of bob's {op}");
        for r in bobs {
            if op == "DescribeKey" {
                assert_eq!(r["outcome"], "Success");
                continue;
            }
            assert_eq!(r["outcome"], "AccessDeniedException", "{r}");
            if op == "RetireGrant" {
                assert!(r["decision"].as_str().unwrap().contains("retiring principal"), "{r}");
                continue;
            }
            let decision = r["decision"].as_str().unwrap_or_else(|| panic!("no decision: {r}"));
            let expected = if ACCOUNT_OPS.contains(&op) {
                "denied: the key policy delegates to IAM but no identity policy allows"
            } else {
                "denied: no key policy statement allows"
            };
            assert_eq!(decision, expected, "{op}");
            if let Some(arn) = resource(op, &fx) {
                assert_eq!(r["key_arn"], arn, "{op}");
            }
        }
    }
    let refused: Vec<_> = recs.iter().filter(|r| r["principal"] == "unauthenticated").collect();
    assert_eq!(refused.len(), 2 * OPS.len());
    assert!(refused.iter().all(|r| r["outcome"] == "UnrecognizedClientException"));
    assert!(refused
        .iter()
        .all(|r| r.get("key_arn").is_none() && r["source_ip"] == "127.0.0.1"));
    for secret in [BOB_TOKEN, WRONG_TOKEN, &kms::auth::token_digest(BOB_TOKEN)] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}");
    }

    // Input is checked before permission, as in AWS: a bad length is a ValidationException even
    // for a caller who may not call GenerateRandom at all. (Last: the audit checks above expect
    // only denials from bob.)
    for bad in [Some(0), Some(1025), None] {
        let result = bob
            .generate_random(pb::GenerateRandomRequest { number_of_bytes: bad })
            .await;
        let msg = expect_err(result, "ValidationException");
        assert!(msg.contains("numberOfBytes"), "{bad:?}: {msg}");
    }
}

#[tokio::test]
async fn authentication_outside_dev_mode() {
    let pki = Pki::new();
    let list = allow(&["kms:ListKeys"], "*");
    let create = allow(&["kms:CreateKey"], "*");
    let identity = identity_file(
        &[("list", &list), ("create", &create)],
        &[
            (ALICE, &["list", "create"]),
            (BOB, &["list"]),
            (CAROL, &["list"]),
            (DAVE, &["list"]),
        ],
    );
    let server = tls_server(&pki, &identity).await;
    async fn connect(
        server: &Server,
        pki: &Pki,
        pem: Option<&Pem>,
        bearer: Bearer,
    ) -> Result<AuthClient, tonic::transport::Error> {
        tls_client(server, &pki.ca.cert, pem.and_then(Pem::identity), bearer).await
    }
    let mut alice = connect(&server, &pki, Some(&pki.alice), Bearer::default())
        .await
        .unwrap();
    let key = alice
        .create_key(pb::CreateKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn;

    // Each kind of certificate rule, and a token, authenticate; the principal is the mapped one.
    for (pem, bearer, principal) in [
        (Some(&pki.alice), Bearer::default(), ALICE),
        (Some(&pki.carol), Bearer::default(), CAROL),
        (Some(&pki.dave), Bearer::default(), DAVE),
        (None, Bearer::token(Some(BOB_TOKEN)), BOB),
        // A token wins over a certificate.
        (Some(&pki.alice), Bearer::token(Some(BOB_TOKEN)), BOB),
    ] {
        let mut c = connect(&server, &pki, pem, bearer).await.unwrap();
        c.list_keys(pb::ListKeysRequest::default()).await.unwrap();
        // Nobody but the account (through identity policies) is named by the default key policy.
        expect_denied(
            c.describe_key(pb::DescribeKeyRequest {
                key_id: key.clone(),
                ..Default::default()
            })
            .await,
            principal,
            "kms:DescribeKey",
            Some(&key),
        );
    }
    let (_, recs) = server.audit_records();
    for p in [ALICE, BOB, CAROL, DAVE] {
        assert!(records(&recs, p, "ListKeys").any(|r| r["outcome"] == "Success"), "{p}");
    }

    // Refusals: a certificate that maps to nothing, no credential, a wrong token (also next to
    // a good certificate: the token is not ignored), a header that is not a bearer token.
    let mut eve = connect(&server, &pki, Some(&pki.eve), Bearer::default()).await.unwrap();
    let msg = expect_unrecognized(eve.list_keys(pb::ListKeysRequest::default()).await);
    assert!(msg.contains("maps to no principal"), "{msg}");
    // A subject with two common names, dave's last: refused when the cn: rule is reached, not
    // taken as dave's (nor as someone-else's).
    let mut two = connect(&server, &pki, Some(&pki.two_cns), Bearer::default())
        .await
        .unwrap();
    let msg = expect_unrecognized(two.list_keys(pb::ListKeysRequest::default()).await);
    assert!(msg.contains("more than one common name"), "{msg}");
    for (pem, bearer) in [
        (None, Bearer::default()),
        (None, Bearer::token(Some(WRONG_TOKEN))),
        (Some(&pki.alice), Bearer::token(Some(WRONG_TOKEN))),
        (None, Bearer::header(&format!("Basic {BOB_TOKEN}"))),
        (None, Bearer::header(BOB_TOKEN)),
        (None, Bearer::token(Some(""))),
    ] {
        let mut c = connect(&server, &pki, pem, bearer).await.unwrap();
        let msg = expect_unrecognized(c.list_keys(pb::ListKeysRequest::default()).await);
        assert!(!msg.contains(BOB_TOKEN) && !msg.contains(WRONG_TOKEN), "{msg}");
        expect_unrecognized(
            c.describe_key(pb::DescribeKeyRequest {
                key_id: key.clone(),
                ..Default::default()
            })
            .await,
        );
    }

    // A certificate from a CA the server doesn't trust (with alice's SAN URI) fails the TLS
    // handshake: no answer from the service, no audit record.
    let before = server.audit_records().1.len();
    match connect(&server, &pki, Some(&pki.mallory), Bearer::default()).await {
        Err(e) => eprintln!("mallory refused at connect: {e}"),
        Ok(mut c) => {
            let s = c.list_keys(pb::ListKeysRequest::default()).await.unwrap_err();
            assert!(s.metadata().get("x-kms-error-type").is_none(), "{s:?}");
            assert!(
                matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
                "{s:?}"
            );
        }
    }
    // A client that doesn't trust the server's CA refuses it: the connection (the TLS handshake:
    // the channel connects eagerly) fails, although the client has a valid token. The same
    // client trusting the right CA connects (and bob lists keys, above).
    let untrusting = tls_client(&server, &pki.mallory.cert, None, Bearer::token(Some(BOB_TOKEN))).await;
    let Err(err) = untrusting else {
        panic!("a client that doesn't trust the server's CA connected");
    };
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain += &format!(": {s}");
        source = s.source();
    }
    assert!(chain.contains("certificate"), "not a certificate error: {chain}");
    // Plaintext to a TLS port fails.
    if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
    {
        let mut plain = kms::proto::key_management_service_client::KeyManagementServiceClient::new(channel);
        let s = plain.list_keys(pb::ListKeysRequest::default()).await.unwrap_err();
        assert!(s.metadata().get("x-kms-error-type").is_none(), "{s:?}");
    }
    assert_eq!(
        server.audit_records().1.len(),
        before,
        "a refused handshake is not a request"
    );

    let (text, recs) = server.audit_records();
    let refused = recs.iter().filter(|r| r["principal"] == "unauthenticated").count();
    assert_eq!(refused, 2 + 6 * 2);
    assert!(!text.contains(BOB_TOKEN) && !text.contains(WRONG_TOKEN));
}

/// A client certificate whose extended key usage leaves out `clientAuth` (here the server's own,
/// serverAuth only) is refused at the handshake, whatever rule its names match; one with no
/// extended key usage is accepted, as RFC 5280 reads it (README, `tls.client_ca_file`).
#[tokio::test]
async fn client_certificates_are_checked_for_client_authentication_use() {
    const NO_EKU_DNS: &str = "no-eku.clients.example.org";
    let pki = Pki::new();
    let no_eku = leaf(
        pki.dir.path(),
        "test-ca",
        "no-eku",
        "/CN=no-eku",
        &format!("subjectAltName=DNS:{NO_EKU_DNS}"),
        1010,
    );
    let server_as_client = Pem {
        cert: std::fs::read(pki.path("server.pem")).unwrap(),
        key: std::fs::read(pki.path("server.key")).unwrap(),
    };
    let identity = identity_file(
        &[("list", &allow(&["kms:ListKeys"], "*"))],
        &[(ALICE, &["list"]), (CAROL, &["list"])],
    );
    let identity_path = pki.path("identity.toml");
    std::fs::write(&identity_path, identity).unwrap();
    let config = pki.tls_config()
        + &auth_config(
            false,
            &[],
            &[("dns:localhost", ALICE), (&format!("dns:{NO_EKU_DNS}"), CAROL)],
            Some(&identity_path),
        );
    let server = Server::start_with(&config).await;
    refused_by_tls(tls_client(&server, &pki.ca.cert, server_as_client.identity(), Bearer::default()).await).await;
    assert!(records(&server.audit_records().1, ALICE, "ListKeys").next().is_none());
    let mut carol = tls_client(&server, &pki.ca.cert, no_eku.identity(), Bearer::default())
        .await
        .unwrap();
    carol.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    assert_eq!(records(&server.audit_records().1, CAROL, "ListKeys").count(), 1);
}

/// TLS with `crl` as the client CAs' revocation list: alice (by SAN URI) and dave (by CN) by
/// certificate, bob by token, each allowed ListKeys.
fn crl_config(pki: &Pki, crl: &std::path::Path) -> String {
    let identity = identity_file(
        &[("list", &allow(&["kms:ListKeys"], "*"))],
        &[(ALICE, &["list"]), (DAVE, &["list"]), (BOB, &["list"])],
    );
    let identity_path = pki.path("identity.toml");
    std::fs::write(&identity_path, identity).unwrap();
    pki.tls_config()
        + &format!("client_crl_file = {:?}\n", crl.display().to_string())
        + &auth_config(
            false,
            &[(BOB_TOKEN, BOB)],
            &[(&format!("uri:{ALICE_URI}"), ALICE), (&format!("cn:{DAVE_CN}"), DAVE)],
            Some(&identity_path),
        )
}

/// With `tls.client_crl_file`, a revoked client certificate is refused: at the handshake, and,
/// once a new list is loaded on SIGHUP, on a connection opened before, bearer-token callers on it
/// included. A list that doesn't check out at SIGHUP (not a list, from a CA the server doesn't
/// trust, a forged signature, two lists of one CA) keeps the one in force. Certificates the list
/// doesn't name keep working.
#[tokio::test]
async fn a_revoked_client_certificate_is_refused_after_a_sighup() {
    let pki = Pki::new();
    let crl = pki.write_crl(&[]);
    let config = crl_config(&pki, &crl);
    let server = Server::start_with(&config).await;
    let connect = |who: &'static str, bearer: Bearer| {
        let pem = match who {
            "alice" => &pki.alice,
            _ => &pki.dave,
        };
        tls_client(&server, &pki.ca.cert, pem.identity(), bearer)
    };
    let mut alice = connect("alice", Bearer::default()).await.unwrap();
    alice.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    // Bob's token, on a connection alice's certificate opened.
    let mut bob = connect("alice", Bearer::token(Some(BOB_TOKEN))).await.unwrap();
    bob.list_keys(pb::ListKeysRequest::default()).await.unwrap();

    // Lists that don't check out: each refused at the reload, and the list in force stays. Had
    // one been taken, dave's new connections would fail (test-ca's status unknown, or forged).
    let good = std::fs::read(&crl).unwrap();
    pki.write_crl_of("rogue-ca", &[]);
    let rogue = std::fs::read(&crl).unwrap();
    pki.write_crl(&[]);
    pki.forge_crl();
    let forged = std::fs::read(&crl).unwrap();
    let twice = [good.clone(), good.clone()].concat();
    for bad in [b"not a CRL".to_vec(), rogue, forged, twice] {
        std::fs::write(&crl, bad).unwrap();
        server.sighup();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut dave = connect("dave", Bearer::default()).await.unwrap();
        dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();
        alice.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    }

    pki.write_crl(&["alice"]);
    server.sighup();
    let message = refused_after_reload(&mut alice).await;
    assert!(message.contains("revoked"), "{message}");
    let message = unrecognized(bob.list_keys(pb::ListKeysRequest::default()).await).expect("bob still served");
    assert!(message.contains("revoked"), "{message}");
    // A new connection is refused.
    refused_by_tls(connect("alice", Bearer::default()).await).await;
    let mut dave = connect("dave", Bearer::default()).await.unwrap();
    dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();
}

/// A client CA removed from `tls.client_ca_file` on SIGHUP no longer serves the connections its
/// certificates opened, bearer-token callers on them included, and new ones are refused at the
/// handshake. The CA that stays keeps serving its clients.
#[tokio::test]
async fn a_client_ca_removed_on_sighup_no_longer_serves_its_open_connections() {
    let pki = Pki::new();
    let cas = pki.path("client-cas.pem");
    let both = [pki.path("test-ca.pem"), pki.path("rogue-ca.pem")].map(|p| std::fs::read(p).unwrap());
    std::fs::write(&cas, both.concat()).unwrap();
    let quoted = |p: std::path::PathBuf| format!("{:?}", p.display().to_string());
    let tls = pki
        .tls_config()
        .replace(&quoted(pki.path("test-ca.pem")), &quoted(cas.clone()));
    let identity = identity_file(
        &[("list", &allow(&["kms:ListKeys"], "*"))],
        &[(ALICE, &["list"]), (DAVE, &["list"]), (BOB, &["list"])],
    );
    let identity_path = pki.path("identity.toml");
    std::fs::write(&identity_path, identity).unwrap();
    let rules = [
        (&format!("uri:{ALICE_URI}")[..], ALICE),
        (&format!("cn:{DAVE_CN}"), DAVE),
    ];
    let config = tls + &auth_config(false, &[(BOB_TOKEN, BOB)], &rules, Some(&identity_path));
    let server = Server::start_with(&config).await;
    // Mallory's certificate is rogue-ca's, for alice's URI.
    let connect = |pem: &'static str, bearer: Bearer| {
        let pem = if pem == "mallory" { &pki.mallory } else { &pki.dave };
        tls_client(&server, &pki.ca.cert, pem.identity(), bearer)
    };
    let mut mallory = connect("mallory", Bearer::default()).await.unwrap();
    let mut bob = connect("mallory", Bearer::token(Some(BOB_TOKEN))).await.unwrap();
    let mut dave = connect("dave", Bearer::default()).await.unwrap();
    for c in [&mut mallory, &mut bob, &mut dave] {
        c.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    }

    std::fs::copy(pki.path("test-ca.pem"), &cas).unwrap();
    server.sighup();
    let message = refused_after_reload(&mut mallory).await;
    assert!(message.contains("no longer trusted"), "{message}");
    let message = unrecognized(bob.list_keys(pb::ListKeysRequest::default()).await).expect("bob still served");
    assert!(message.contains("no longer trusted"), "{message}");
    dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    refused_by_tls(connect("mallory", Bearer::default()).await).await;
    let mut dave = connect("dave", Bearer::default()).await.unwrap();
    dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();
}

/// The message of an `UnrecognizedClientException`; None for any other answer.
fn unrecognized(r: Result<tonic::Response<pb::ListKeysResponse>, Status>) -> Option<String> {
    match r {
        Err(s) if error_type(&s) == "UnrecognizedClientException" => Some(s.message().to_string()),
        _ => None,
    }
}

/// Waits (up to 20 s, after a SIGHUP) for `client`'s open connection to be refused; the message.
async fn refused_after_reload(client: &mut AuthClient) -> String {
    for _ in 0..200 {
        if let Some(message) = unrecognized(client.list_keys(pb::ListKeysRequest::default()).await) {
            return message;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the open connection is still served 20 s after the reload");
}

/// A connection the TLS layer refuses: at the handshake, or (TLS 1.3, where the client's
/// certificate is checked after the client thinks it is connected) at its first request, which
/// then never reaches the service.
async fn refused_by_tls(connected: Result<AuthClient, tonic::transport::Error>) {
    if let Ok(mut c) = connected {
        let s = c.list_keys(pb::ListKeysRequest::default()).await.unwrap_err();
        assert!(
            s.metadata().get("x-kms-error-type").is_none(),
            "answered by the service: {s:?}"
        );
    }
}

/// Waits up to 20 s for `what` in a captured log: the server may log after the client has its
/// answer, and a busy machine may take a while.
async fn wait_for_log(log: &std::sync::Mutex<String>, what: &str) {
    for _ in 0..200 {
        if log.lock().unwrap().contains(what) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not logged: {what:?}\n{}", log.lock().unwrap());
}

/// A revocation list past its nextUpdate no longer says who is revoked (OpenSSL treats it so):
/// from then on its CA's clients are refused, at the handshake (with a warning in the log) and on
/// connections opened before, bearer-token callers on them included, until a current list is
/// loaded on SIGHUP. A list already out of date is refused at SIGHUP and at start.
#[tokio::test]
async fn an_out_of_date_revocation_list_refuses_its_cas_clients() {
    let pki = Pki::new();
    let crl = pki.write_crl(&[]);
    let config = crl_config(&pki, &crl);
    let mut server = Server::start_with(&config).await;
    let log = server.restart_capturing_log().await;
    let connect = |pem: &'static str, bearer: Bearer| {
        let pem = if pem == "alice" { &pki.alice } else { &pki.dave };
        tls_client(&server, &pki.ca.cert, pem.identity(), bearer)
    };
    let logged = |what: &str| log.lock().unwrap().contains(what);

    // An out-of-date list is refused at SIGHUP; the one in force stays.
    pki.write_out_of_date_crl();
    server.sighup();
    wait_for_log(&log, "not reloaded").await;
    assert!(logged("went out of date"), "{}", log.lock().unwrap());
    let mut dave = connect("dave", Bearer::default()).await.unwrap();
    dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();

    // A list in date for a few seconds more, loaded on SIGHUP (not at start, so that a slow start
    // can't use up its life).
    const IN_DATE_FOR: u64 = 25;
    pki.write_crl_for_seconds(IN_DATE_FOR as u32);
    let out_of_date_at = std::time::Instant::now() + std::time::Duration::from_secs(IN_DATE_FOR);
    server.sighup();
    wait_for_log(&log, "revocation lists reloaded").await;
    let mut alice = connect("alice", Bearer::default()).await.unwrap();
    alice.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    let mut bob = connect("alice", Bearer::token(Some(BOB_TOKEN))).await.unwrap();
    bob.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    dave = connect("dave", Bearer::default()).await.unwrap();
    dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    assert!(
        std::time::Instant::now() < out_of_date_at,
        "the machine took the list's whole life to connect three clients"
    );

    // Past its nextUpdate: open connections serve no one, new ones are refused.
    tokio::time::sleep_until(out_of_date_at.into()).await;
    let refused = |r: Result<tonic::Response<pb::ListKeysResponse>, Status>| match r {
        Err(s) if error_type(&s) == "UnrecognizedClientException" => s.message().to_string(),
        other => panic!("served or refused otherwise: {other:?}"),
    };
    let message = refused(alice.list_keys(pb::ListKeysRequest::default()).await);
    assert!(message.contains("out of date"), "{message}");
    let message = refused(bob.list_keys(pb::ListKeysRequest::default()).await);
    assert!(message.contains("out of date"), "{message}");
    let message = refused(dave.list_keys(pb::ListKeysRequest::default()).await);
    assert!(message.contains("out of date"), "{message}");
    // A new connection is refused.
    refused_by_tls(connect("dave", Bearer::default()).await).await;
    wait_for_log(&log, "revocation list in tls.client_crl_file is out of date").await;

    // A current list on SIGHUP: served again, on the old connections too.
    pki.write_crl(&[]);
    server.sighup();
    let mut served = false;
    for _ in 0..200 {
        if alice.list_keys(pb::ListKeysRequest::default()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "alice not served after a current list was loaded");
    bob.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    let mut dave = connect("dave", Bearer::default()).await.unwrap();
    dave.list_keys(pb::ListKeysRequest::default()).await.unwrap();

    // An out-of-date list at start: the server refuses to start, and says why.
    server.stop();
    pki.write_out_of_date_crl();
    let out = server.output_of_start_with(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an out-of-date list: {stderr}");
    assert!(stderr.contains("went out of date"), "{stderr}");
}

/// With `tls.require_client_certificate`, a client without a certificate is refused at the
/// handshake, bearer token or not; one with a certificate is served.
#[tokio::test]
async fn a_required_client_certificate_is_required() {
    let pki = Pki::new();
    let identity = identity_file(&[("list", &allow(&["kms:ListKeys"], "*"))], &[(ALICE, &["list"])]);
    let identity_path = pki.path("identity.toml");
    std::fs::write(&identity_path, identity).unwrap();
    let config = pki.tls_config()
        + "require_client_certificate = true\n"
        + &auth_config(
            false,
            &[(BOB_TOKEN, BOB)],
            &[(&format!("uri:{ALICE_URI}"), ALICE)],
            Some(&identity_path),
        );
    let server = Server::start_with(&config).await;
    refused_by_tls(tls_client(&server, &pki.ca.cert, None, Bearer::token(Some(BOB_TOKEN))).await).await;
    let mut alice = tls_client(&server, &pki.ca.cert, pki.alice.identity(), Bearer::default())
        .await
        .unwrap();
    alice.list_keys(pb::ListKeysRequest::default()).await.unwrap();
    let (_, records) = server.audit_records();
    assert!(
        records.iter().all(|r| r["principal"] != BOB),
        "bob got as far as a record"
    );
}

/// The serial number of the certificate the server presents, as `openssl s_client` sees it.
fn served_serial(server: &Server) -> String {
    let shown = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial",
            server.addr
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout).trim().to_string()
}

/// A renewed server certificate is served after a SIGHUP, without a restart; a key that doesn't
/// go with it keeps the pair in force.
#[tokio::test]
async fn a_renewed_server_certificate_is_served_after_a_sighup() {
    let pki = Pki::new();
    let server = Server::start_with(&pki.tls_config()).await;
    assert_eq!(
        served_serial(&server),
        "serial=03E9",
        "the first certificate, serial 1001"
    );
    let renewed = leaf(
        pki.dir.path(),
        "test-ca",
        "renewed",
        "/CN=localhost",
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1",
        1011,
    );
    // The certificate first, its key not yet: the pair doesn't match, so nothing changes.
    std::fs::write(pki.path("server.pem"), &renewed.cert).unwrap();
    server.sighup();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(served_serial(&server), "serial=03E9");
    std::fs::write(pki.path("server.key"), &renewed.key).unwrap();
    server.sighup();
    let mut served = String::new();
    for _ in 0..200 {
        served = served_serial(&server);
        if served == "serial=03F3" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served, "serial=03F3", "the renewed certificate, serial 1011");
}

#[tokio::test]
async fn dev_mode_is_the_account_root_but_refuses_bad_tokens() {
    // Dev mode is off unless asked for (the comment keeps the harness from passing --dev).
    let off = Server::start_with("[auth]\n# dev_mode is not set\n").await;
    let mut c = plain_client(&off, Bearer::default()).await;
    expect_unrecognized(c.create_key(pb::CreateKeyRequest::default()).await);
    drop(off);

    let server = Server::start_with(&auth_config(true, &[(BOB_TOKEN, BOB)], &[], None)).await;
    let mut anonymous = plain_client(&server, Bearer::default()).await;
    let mut bob = plain_client(&server, Bearer::token(Some(BOB_TOKEN))).await;
    let mut wrong = plain_client(&server, Bearer::token(Some(WRONG_TOKEN))).await;

    // Without credentials: the account root, which may do anything in its account.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
             "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            // AWS's example: refuse Encrypt over plaintext connections (this one is).
            {"Sid": "DenyPlaintextTransport", "Effect": "Deny", "Principal": "*",
             "Action": "kms:Encrypt", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
        ]
    })
    .to_string();
    let key = anonymous
        .create_key(pb::CreateKeyRequest {
            policy: Some(policy),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_metadata
        .unwrap()
        .arn;
    anonymous
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: key.clone(),
            number_of_bytes: Some(32),
            ..Default::default()
        })
        .await
        .unwrap();
    let msg = expect_denied(
        anonymous
            .encrypt(pb::EncryptRequest {
                key_id: key.clone(),
                plaintext: b"x".to_vec(),
                ..Default::default()
            })
            .await,
        ROOT,
        "kms:Encrypt",
        Some(&key),
    );
    assert!(
        msg.ends_with("with an explicit deny in a resource-based policy"),
        "{msg}"
    );

    // A wrong token is refused, not taken for root; a good one is its principal.
    expect_unrecognized(wrong.create_key(pb::CreateKeyRequest::default()).await);
    // So is a header that isn't ASCII (it used to count as no header at all: root).
    let mut not_ascii = plain_client(&server, Bearer::bytes("Bearer tök".as_bytes())).await;
    let msg = expect_unrecognized(not_ascii.create_key(pb::CreateKeyRequest::default()).await);
    assert!(msg.contains("must be 'Bearer <token>'"), "{msg}");
    expect_unrecognized(
        wrong
            .describe_key(pb::DescribeKeyRequest {
                key_id: key.clone(),
                ..Default::default()
            })
            .await,
    );
    // Two credentials, even both good: which one counts would be up to their order.
    let twice = |mut request: tonic::Request<()>| {
        for _ in 0..2 {
            let value = format!("Bearer {BOB_TOKEN}").parse().unwrap();
            request.metadata_mut().append("authorization", value);
        }
        Ok(request)
    };
    let mut two = pb::key_management_service_client::KeyManagementServiceClient::with_interceptor(
        plain_channel(&server).await,
        twice,
    );
    let msg = expect_unrecognized(two.create_key(pb::CreateKeyRequest::default()).await);
    assert!(msg.contains("more than one authorization header"), "{msg}");
    // "Bearer " with nothing after it is malformed, not an empty token.
    let mut empty = plain_client(&server, Bearer::header("Bearer ")).await;
    let msg = expect_unrecognized(empty.create_key(pb::CreateKeyRequest::default()).await);
    assert!(msg.contains("must be 'Bearer <token>'"), "{msg}");
    expect_denied(
        bob.create_key(pb::CreateKeyRequest::default()).await,
        BOB,
        "kms:CreateKey",
        None,
    );

    let (text, recs) = server.audit_records();
    assert!(records(&recs, ROOT, "CreateKey").any(|r| r["outcome"] == "Success"));
    let denied: Vec<_> = records(&recs, ROOT, "Encrypt").collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        denied[0]["decision"],
        "denied explicitly by key policy statement \"DenyPlaintextTransport\""
    );
    assert_eq!(
        recs.iter()
            .filter(|r| r["principal"] == "unauthenticated" && r["outcome"] == "UnrecognizedClientException")
            .count(),
        5,
        "a wrong token twice, a header not ASCII, two headers, an empty token"
    );
    assert!(!text.contains(BOB_TOKEN) && !text.contains(WRONG_TOKEN));
}

#[tokio::test]
async fn configuration_mistakes_stop_the_server_before_it_listens() {
    let mut server = Server::start().await;
    server.stop();
    // Dev mode makes every network peer the account root: loopback only.
    let out = server.output_of_start_with(&["--listen", "0.0.0.0:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kms listening on"));

    let pki = Pki::new();
    let tls = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.path("server.pem").display().to_string(),
        pki.path("server.key").display().to_string(),
    );
    let second = kms::auth::token_digest(BOB_TOKEN);
    let base = std::fs::read_to_string(server.config_path()).unwrap();
    for (extra, expected) in [
        // Certificate rules with no client CA to verify certificates against.
        (
            format!("{tls}{}", auth_config(false, &[], &[("cn:dave", DAVE)], None)),
            "client_ca_file",
        ),
        // One token for two principals.
        (
            format!(
                "{}[[auth.tokens]]\nsha256 = {second:?}\nprincipal = {ALICE:?}\n",
                auth_config(false, &[(BOB_TOKEN, BOB)], &[], None)
            ),
            "auth.tokens[0] and auth.tokens[1] have the same sha256",
        ),
        // A TLS key that isn't one: the reason is printed, not only "transport error".
        (
            format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                pki.path("server.pem").display().to_string(),
                pki.path("server.pem").display().to_string(),
            ),
            "private key",
        ),
    ] {
        std::fs::write(server.config_path(), format!("{base}{extra}")).unwrap();
        let out = server.output_of_start_with(&[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?}: {stderr}");
        assert!(!stderr.contains(BOB_TOKEN), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("kms listening on"));
    }
}

/// A mistake in a file the configuration names stops the server before it creates anything:
/// no data directory, so no store, token or root key left behind.
#[test]
fn a_bad_file_stops_the_server_before_it_creates_anything() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("identity.toml");
    std::fs::write(&policies, "this is [[[ not TOML").unwrap();
    let pki = Pki::new();
    let no_key = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.path("server.pem").display().to_string(),
        pki.path("server.pem").display().to_string(),
    );
    let bad_policies = format!(
        "[auth]\nidentity_policies_file = {:?}\n",
        policies.display().to_string()
    );
    for (extra, expected) in [(bad_policies, "identity"), (no_key, "private key")] {
        let config = dir.path().join("kms.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\n{extra}")).unwrap();
        let data = dir.path().join("data");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kms"))
            .args(["serve", "--dev", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?}: {stderr}");
        assert!(!data.exists(), "created {:?}", files_below(&data));
    }
}

#[tokio::test]
async fn a_sighup_during_a_slow_start_is_survived() {
    const NEW_TOKEN: &str = "bob-token-replaced-during-start-3c9d";
    let mut server = Server::start_on(
        TestHsm::hsm_sim(),
        &auth_config(false, &[(BOB_TOKEN, BOB)], &[], None),
        "",
    )
    .await;
    server.stop();
    // C_Login is held until the faults are cleared: the start-up is slow, and the SIGHUP comes
    // in the middle of it, after the operator replaced Bob's token in the file.
    let faults = server.hsm.dir.path().join("tokens").join("faults.toml");
    let logins = server.hsm.dir.path().join("logins.txt");
    let rule = format!(
        "latency_ms = 60000\nuntil_released = true\nfunctions = [\"C_Login\"]\nrecord = {:?}\n",
        logins.display().to_string()
    );
    std::fs::write(&faults, rule).unwrap();
    let mut child = KillOnDrop(server.spawn_process());
    let stdout = child.0.stdout.take().unwrap();
    wait_for_a_login(&logins).await;
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let replaced = config.replace(&kms::auth::token_digest(BOB_TOKEN), &kms::auth::token_digest(NEW_TOKEN));
    std::fs::write(server.config_path(), replaced).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::fs::write(&faults, "").unwrap();
    let listening = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("kms listening on ").map(str::to_string))
    })
    .await
    .unwrap();
    let exited = child.0.try_wait().unwrap();
    let Some(addr) = listening else {
        panic!("the server did not start: {exited:?}");
    };
    assert!(exited.is_none(), "{exited:?}");

    // The SIGHUP was not lost: once up, the server reloads, and the old token stops working.
    let client = |token: &'static str| {
        let addr = addr.clone();
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            pb::key_management_service_client::KeyManagementServiceClient::with_interceptor(
                channel,
                Bearer::token(Some(token)),
            )
        }
    };
    let (mut old, mut new) = (client(BOB_TOKEN).await, client(NEW_TOKEN).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = old.list_keys(pb::ListKeysRequest::default()).await;
        if matches!(&r, Err(s) if error_type(s) == "UnrecognizedClientException") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the token replaced during start-up still works: the SIGHUP was lost ({r:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    expect_denied(
        new.list_keys(pb::ListKeysRequest::default()).await,
        BOB,
        "kms:ListKeys",
        None,
    );
}

/// A leaked token is revoked without a restart: the config file is changed and the server gets a
/// SIGHUP. A file that doesn't load (here: the same token twice) keeps the tokens in force. Each
/// SIGHUP also reloads the identity policies, which shows when it has been handled.
#[tokio::test]
async fn sighup_reloads_tokens_so_a_leaked_one_stops_working() {
    const NEW_TOKEN: &str = "bob-replacement-token-8e1f0a2b9c";
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.toml");
    std::fs::write(&identity, identity_file(&[], &[])).unwrap();
    let server = Server::start_with(&auth_config(false, &[(BOB_TOKEN, BOB)], &[], Some(&identity))).await;
    let mut leaked = plain_client(&server, Bearer::token(Some(BOB_TOKEN))).await;
    let mut replaced = plain_client(&server, Bearer::token(Some(NEW_TOKEN))).await;
    // Bob may do nothing yet: a recognised token gets AccessDenied, an unknown one UnrecognizedClient.
    let list = || pb::ListKeysRequest::default();
    expect_denied(leaked.list_keys(list()).await, BOB, "kms:ListKeys", None);
    expect_unrecognized(replaced.list_keys(list()).await);

    // A broken config file (the same digest twice), and an identity policy that lets Bob list
    // keys: once Bob can list keys the SIGHUP was handled, and his token must still work.
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let (old_digest, new_digest) = (kms::auth::token_digest(BOB_TOKEN), kms::auth::token_digest(NEW_TOKEN));
    let broken = format!("{config}[[auth.tokens]]\nsha256 = {old_digest:?}\nprincipal = {BOB:?}\n");
    std::fs::write(server.config_path(), &broken).unwrap();
    let bob_may_list = identity_file(&[("list", &allow(&["kms:ListKeys"], "*"))], &[(BOB, &["list"])]);
    std::fs::write(&identity, bob_may_list).unwrap();
    server.sighup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Err(status) = leaked.list_keys(list()).await {
        assert_eq!(error_type(&status), "AccessDeniedException", "the token stays in force");
        assert!(
            std::time::Instant::now() < deadline,
            "the SIGHUP was not handled within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    std::fs::write(server.config_path(), config.replace(&old_digest, &new_digest)).unwrap();
    server.sighup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = leaked.list_keys(list()).await;
        if matches!(&r, Err(s) if error_type(s) == "UnrecognizedClientException") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked token still works 20 s after SIGHUP: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    replaced.list_keys(list()).await.expect("the new token is Bob's");
}
