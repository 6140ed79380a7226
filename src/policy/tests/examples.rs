//! The AWS KMS developer guide's key policy examples, each checked for the request it allows and
//! the request it denies.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

use crate::error::KmsError;
use crate::policy::*;

const ACCT: &str = "111122223333";
const OTHER: &str = "444455556666";
const KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321";
const NO_POLICIES: &[Policy] = &[];

fn user(name: &str) -> String {
    format!("arn:aws:iam::{ACCT}:user/{name}")
}

fn other_user(name: &str) -> String {
    format!("arn:aws:iam::{OTHER}:user/{name}")
}

fn root() -> String {
    format!("arn:aws:iam::{ACCT}:root")
}

fn key_policy(statements: Value) -> Policy {
    let doc = json!({"Version": "2012-10-17", "Statement": statements});
    Policy::parse_key_policy(&doc.to_string()).unwrap()
}

fn identity(name: &str, statements: Value) -> Policy {
    let doc = json!({"Version": "2012-10-17", "Statement": statements});
    Policy::parse_identity_policy(name, &doc.to_string()).unwrap()
}

fn ctx(principal: &str, action: &str) -> RequestContext {
    RequestContext::new(principal, action, KEY)
}

fn decide(kp: &Policy, ids: &[Policy], c: &RequestContext) -> Decision {
    evaluate(kp, ids, false, c)
}

fn allowed(kp: &Policy, ids: &[Policy], c: &RequestContext) -> bool {
    decide(kp, ids, c).is_allowed()
}

/// The "Enable IAM policies" statement plus `extra`.
fn with_root(extra: Value) -> Policy {
    let mut statements = vec![json!({
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": root()},
        "Action": "kms:*",
        "Resource": "*"
    })];
    match extra {
        Value::Array(items) => statements.extend(items),
        other => statements.push(other),
    }
    key_policy(Value::Array(statements))
}

fn allow_all_kms(name: &str) -> Policy {
    identity(name, json!({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}))
}

#[test]
fn default_key_policy_lets_root_in_and_delegates_to_iam() {
    let kp = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    assert_eq!(kp.statements()[0].sid(), Some(DEFAULT_POLICY_SID));
    // The account's root user: allowed by the key policy alone.
    let d = decide(&kp, &[], &ctx(&root(), "kms:ScheduleKeyDeletion"));
    assert!(d.is_allowed());
    assert_eq!(
        d.to_string(),
        "allowed by key policy statement \"Enable IAM User Permissions\""
    );
    // A bare account ID is that account's root.
    assert!(allowed(&kp, &[], &ctx(ACCT, "kms:Encrypt")));
    // An IAM user: needs an identity policy.
    let c = ctx(&user("alice"), "kms:Encrypt");
    assert_eq!(
        decide(&kp, &[], &c),
        Decision::ImplicitDeny(MissingAllow::IdentityPolicy)
    );
    let d = decide(&kp, &[allow_all_kms("alice-kms")], &c);
    assert!(d.is_allowed());
    assert_eq!(d.statements().len(), 2);
    assert_eq!(d.statements()[1].policy, "alice-kms");
    // Another account's user is not named at all.
    assert_eq!(
        decide(&kp, &[allow_all_kms("p")], &ctx(&other_user("eve"), "kms:Encrypt")),
        Decision::ImplicitDeny(MissingAllow::KeyPolicy)
    );
    // Another partition.
    assert!(default_key_policy_in("aws-cn", ACCT).contains("arn:aws-cn:iam::111122223333:root"));
}

#[test]
fn identity_policy_resource_and_action_must_match() {
    let kp = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    let p = identity(
        "decrypt-one-key",
        json!([{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": KEY}]),
    );
    let ids = [p];
    assert!(allowed(&kp, &ids, &ctx(&user("alice"), "kms:Decrypt")));
    assert!(allowed(
        &kp,
        &ids,
        &ctx(&user("alice"), "kms:GenerateDataKeyWithoutPlaintext")
    ));
    assert!(!allowed(&kp, &ids, &ctx(&user("alice"), "kms:Encrypt")));
    assert!(!allowed(
        &kp,
        &ids,
        &RequestContext::new(&user("alice"), "kms:Decrypt", OTHER_KEY)
    ));
    // Wildcard ARNs in identity policies.
    let ids = [identity(
        "all-keys",
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:*:111122223333:key/*"}),
    )];
    assert!(allowed(
        &kp,
        &ids,
        &RequestContext::new(&user("alice"), "kms:Decrypt", OTHER_KEY)
    ));
}

#[test]
fn key_policy_naming_the_user_allows_without_iam() {
    let kp = key_policy(json!([{
        "Sid": "Allow use of the key",
        "Effect": "Allow",
        "Principal": {"AWS": [user("alice"), format!("arn:aws:iam::{ACCT}:role/ops/KeyUser")]},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
        "Resource": "*"
    }]));
    assert!(allowed(&kp, &[], &ctx(&user("alice"), "kms:ReEncryptFrom")));
    assert!(!allowed(&kp, &[], &ctx(&user("alice"), "kms:ScheduleKeyDeletion")));
    assert!(!allowed(&kp, &[], &ctx(&user("bob"), "kms:Encrypt")));
    // An assumed-role session of the named role (the role's path is not in the session ARN).
    let session = format!("arn:aws:sts::{ACCT}:assumed-role/KeyUser/session-1");
    assert!(allowed(&kp, &[], &ctx(&session, "kms:Decrypt")));
    let other_role = format!("arn:aws:sts::{ACCT}:assumed-role/Other/session-1");
    assert!(!allowed(&kp, &[], &ctx(&other_role, "kms:Decrypt")));
    // Action names compare case-insensitively.
    assert!(allowed(&kp, &[], &ctx(&user("alice"), "KMS:encrypt")));
}

#[test]
fn encryption_context_condition_department_it() {
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": ["kms:Encrypt", "kms:Decrypt"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:EncryptionContext:Department": "IT"}}
    }));
    let c = |ec: &[(&str, &str)]| ctx(&user("alice"), "kms:Decrypt").with_encryption_context(ec.iter().copied());
    assert!(allowed(&kp, &[], &c(&[("Department", "IT")])));
    assert!(allowed(&kp, &[], &c(&[("Department", "IT"), ("Project", "Alpha")])));
    // Values compare case-sensitively...
    assert!(!allowed(&kp, &[], &c(&[("Department", "it")])));
    assert!(!allowed(&kp, &[], &c(&[("Department", "HR")])));
    assert!(!allowed(&kp, &[], &c(&[])));
    // ...but the condition key's name, including the context key, does not.
    assert!(allowed(&kp, &[], &c(&[("department", "IT")])));
}

#[test]
fn encryption_context_keys_for_all_values() {
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]}}
    }));
    let c = |ec: &[(&str, &str)]| ctx(&user("alice"), "kms:Encrypt").with_encryption_context(ec.iter().copied());
    assert!(allowed(&kp, &[], &c(&[("Department", "IT")])));
    assert!(allowed(&kp, &[], &c(&[("Department", "IT"), ("Project", "X")])));
    assert!(!allowed(&kp, &[], &c(&[("Department", "IT"), ("Owner", "bob")])));
    // The key names compare case-sensitively with StringEquals.
    assert!(!allowed(&kp, &[], &c(&[("department", "IT")])));
    // ForAllValues on a missing set is true: no encryption context passes too, as AWS warns.
    assert!(allowed(&kp, &[], &c(&[])));

    // The documented fix: also require the key to be present with Null.
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {
            "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department", "Project"]},
            "Null": {"kms:EncryptionContextKeys": "false"}
        }
    }));
    assert!(allowed(&kp, &[], &c(&[("Project", "X")])));
    assert!(!allowed(&kp, &[], &c(&[])));
}

#[test]
fn encryption_context_keys_for_any_value() {
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": "kms:GenerateDataKey",
        "Resource": "*",
        "Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "AppName"}}
    }));
    let c =
        |ec: &[(&str, &str)]| ctx(&user("alice"), "kms:GenerateDataKey").with_encryption_context(ec.iter().copied());
    assert!(allowed(&kp, &[], &c(&[("AppName", "ExampleApp"), ("Other", "x")])));
    assert!(!allowed(&kp, &[], &c(&[("Other", "x")])));
    // ForAnyValue on a missing set is false.
    assert!(!allowed(&kp, &[], &c(&[])));
}

#[test]
fn encryption_context_string_equals_if_exists() {
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringEqualsIfExists": {"kms:EncryptionContext:Department": "IT"}}
    }));
    let c = |ec: &[(&str, &str)]| ctx(&user("alice"), "kms:Decrypt").with_encryption_context(ec.iter().copied());
    assert!(allowed(&kp, &[], &c(&[("Department", "IT")])));
    assert!(allowed(&kp, &[], &c(&[])));
    assert!(allowed(&kp, &[], &c(&[("Project", "X")])));
    assert!(!allowed(&kp, &[], &c(&[("Department", "HR")])));
}

/// Context keys differing only in case name one condition key. Its several values all count: a
/// Deny applies if any of them meets its condition, an Allow only if every one does, whichever
/// order the request gives them in and whichever context store keeps them.
#[test]
fn colliding_encryption_context_keys_cannot_steer_a_condition() {
    let kp = key_policy(json!([
        {
            "Effect": "Allow",
            "Principal": {"AWS": user("alice")},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:Department": "IT"}}
        },
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:classification": "secret"}}
        },
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {
                "StringNotEquals": {"kms:EncryptionContext:Region": "eu"},
                "Null": {"kms:EncryptionContext:Region": "false"}
            }
        }
    ]));
    let read = kp.condition_keys().clone();
    let dept = [("Department", "IT")];
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("Classification", "secret"), ("classification", "public")], false),
        (&[("classification", "public"), ("Classification", "secret")], false),
        (&[("Classification", "public"), ("classification", "public")], true),
        (&[("Region", "eu"), ("REGION", "us")], false),
        (&[("Region", "eu"), ("REGION", "eu")], true),
        (&[("department", "HR")], false),
    ];
    for (extra, expected) in cases {
        let ec: Vec<(&str, &str)> = dept.iter().chain(extra.iter()).copied().collect();
        for only in [None, Some(read.clone())] {
            let c = RequestContext::new_reading(&user("alice"), "kms:Decrypt", KEY, only.clone())
                .with_encryption_context(ec.iter().copied());
            assert_eq!(allowed(&kp, &[], &c), *expected, "{ec:?}, {only:?}");
        }
    }
}

/// Tag keys differing only in case (a request tagging `env` and `Env`, or a key tagged both) name
/// one condition key, as context keys do: a Deny applies if any value meets it, an Allow only if
/// every one does, whatever their order.
#[test]
fn tags_differing_in_case_cannot_steer_a_condition() {
    let kp = key_policy(json!([
        {"Effect": "Allow", "Principal": {"AWS": user("alice")}, "Action": "kms:*", "Resource": "*",
         "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:TagResource", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestTag/env": "prod"}}}
    ]));
    let tagging = |request: &[(&str, &str)], resource: &[(&str, &str)]| {
        let mut c = ctx(&user("alice"), "kms:TagResource");
        for (k, v) in request {
            c.add(&format!("aws:RequestTag/{k}"), *v);
        }
        for (k, v) in resource {
            c.add(&format!("aws:ResourceTag/{k}"), *v);
        }
        allowed(&kp, &[], &c)
    };
    let blue = [("team", "blue")];
    assert!(tagging(&[("env", "dev")], &blue));
    assert!(!tagging(&[("env", "prod"), ("Env", "x")], &blue));
    assert!(!tagging(&[("Env", "x"), ("env", "prod")], &blue));
    assert!(!tagging(&[("env", "dev")], &[("team", "blue"), ("Team", "red")]));
    assert!(!tagging(&[("env", "dev")], &[("Team", "red"), ("team", "blue")]));
}

/// Administration stays with the key's account: a key policy that gives another account (its
/// root, or its users through their identity policies) `kms:*` lets it use the key, not run it.
#[test]
fn another_account_may_use_a_key_but_never_administer_it() {
    let kp = with_root(json!({
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{OTHER}:root")},
        "Action": "kms:*",
        "Resource": "*"
    }));
    let everything = allow_all_kms("everything");
    let other_root = format!("arn:aws:iam::{OTHER}:root");
    for caller in [other_root.as_str(), &other_user("bob")] {
        for action in [
            "kms:PutKeyPolicy",
            "kms:GetKeyPolicy",
            "kms:ScheduleKeyDeletion",
            "kms:DisableKey",
            "kms:TagResource",
            "kms:UpdateKeyDescription",
            "kms:CreateAlias",
        ] {
            assert_eq!(
                decide(&kp, std::slice::from_ref(&everything), &ctx(caller, action)),
                Decision::ImplicitDeny(MissingAllow::KeyPolicy),
                "{caller} {action}"
            );
            // Not through a grant either.
            assert!(!evaluate(&kp, std::slice::from_ref(&everything), true, &ctx(caller, action)).is_allowed());
        }
        for action in [
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "kms:DescribeKey",
            "kms:CreateGrant",
            "kms:ReEncryptFrom",
        ] {
            assert!(
                allowed(&kp, std::slice::from_ref(&everything), &ctx(caller, action)),
                "{caller} {action}"
            );
        }
    }
    // The key's own account is not limited.
    assert!(allowed(&kp, NO_POLICIES, &ctx(&root(), "kms:PutKeyPolicy")));
}

#[test]
fn cross_account_needs_key_policy_and_identity_policy() {
    // The key policy in account A allows account B.
    let kp = with_root(json!({
        "Sid": "Allow an external account to use this KMS key",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{OTHER}:root")},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
        "Resource": "*"
    }));
    let c = ctx(&other_user("bob"), "kms:Decrypt");
    // Bob in account B, no identity policy: denied.
    assert_eq!(
        decide(&kp, &[], &c),
        Decision::ImplicitDeny(MissingAllow::IdentityPolicy)
    );
    // Bob's identity policy in B allows the key: allowed.
    let bob = identity(
        "bob-uses-A-key",
        json!({"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": KEY}),
    );
    let d = decide(&kp, std::slice::from_ref(&bob), &c);
    assert!(d.is_allowed(), "{d}");
    assert!(d
        .to_string()
        .contains("\"Allow an external account to use this KMS key\""));
    // B's identity policy alone does not reach actions the key policy does not grant.
    let everything = allow_all_kms("everything");
    assert!(!allowed(
        &kp,
        std::slice::from_ref(&everything),
        &ctx(&other_user("bob"), "kms:ScheduleKeyDeletion")
    ));
    // Nor keys of its own policy's choosing: identity policy for another key.
    let wrong = identity(
        "other-key",
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": OTHER_KEY}),
    );
    assert!(!allowed(&kp, &[wrong], &c));
    // B's root user: its permissions in B are implicit.
    assert!(allowed(
        &kp,
        &[],
        &ctx(&format!("arn:aws:iam::{OTHER}:root"), "kms:Encrypt")
    ));
    // A third account: denied even with an identity policy.
    assert!(!allowed(
        &kp,
        std::slice::from_ref(&everything),
        &ctx("arn:aws:iam::777788889999:user/x", "kms:Decrypt")
    ));

    // A key policy naming B's user itself: still needs B's identity policy, as across accounts.
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": other_user("bob")},
        "Action": "kms:Decrypt",
        "Resource": "*"
    }));
    assert_eq!(
        decide(&kp, &[], &c),
        Decision::ImplicitDeny(MissingAllow::IdentityPolicy)
    );
    assert!(allowed(&kp, &[bob], &c));
}

#[test]
fn explicit_deny_overrides_every_allow() {
    let kp = with_root(json!([
        {"Sid": "AllowAlice", "Effect": "Allow", "Principal": {"AWS": user("alice")}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "DenyDeletion", "Effect": "Deny", "Principal": "*", "Action": ["kms:ScheduleKeyDeletion", "kms:Disable*"], "Resource": "*"}
    ]));
    let d = decide(&kp, &[], &ctx(&user("alice"), "kms:ScheduleKeyDeletion"));
    assert!(!d.is_allowed());
    assert_eq!(
        d.to_string(),
        "denied explicitly by key policy statement \"DenyDeletion\""
    );
    assert!(!allowed(&kp, &[], &ctx(&root(), "kms:DisableKey")));
    assert!(allowed(&kp, &[], &ctx(&user("alice"), "kms:EnableKey")));
    // A grant does not beat a Deny.
    let c = ctx(&user("alice"), "kms:ScheduleKeyDeletion");
    assert!(!evaluate(&kp, NO_POLICIES, true, &c).is_allowed());

    // A Deny in an identity policy beats a key policy Allow naming the user.
    let deny = identity(
        "no-decrypt",
        json!({"Sid": "NoDecrypt", "Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}),
    );
    let d = decide(&kp, std::slice::from_ref(&deny), &ctx(&user("alice"), "kms:Decrypt"));
    assert_eq!(
        d,
        Decision::ExplicitDeny(StatementRef {
            policy: "no-decrypt".into(),
            kind: PolicyKind::IdentityPolicy,
            sid: Some("NoDecrypt".into()),
            index: 0
        })
    );
    assert!(allowed(&kp, &[deny], &ctx(&user("alice"), "kms:Encrypt")));
}

#[test]
fn deny_naming_an_account_covers_its_users() {
    let kp = key_policy(json!([
        {"Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": OTHER}, "Action": "kms:*", "Resource": "*"}
    ]));
    assert!(allowed(&kp, &[], &ctx(&user("alice"), "kms:DescribeKey")));
    let ids = [allow_all_kms("all")];
    assert!(!allowed(&kp, &ids, &ctx(&other_user("bob"), "kms:DescribeKey")));
}

#[test]
fn grant_hook_allows_when_no_policy_does() {
    let kp = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    let c = ctx(&user("svc"), "kms:Decrypt");
    assert!(!evaluate(&kp, NO_POLICIES, false, &c).is_allowed());
    assert_eq!(evaluate(&kp, NO_POLICIES, true, &c), Decision::Allow(AllowedBy::Grant));
    // Across accounts too: a grant needs no identity policy.
    assert!(evaluate(&kp, NO_POLICIES, true, &ctx(&other_user("svc"), "kms:Decrypt")).is_allowed());
}

#[test]
fn via_service_conditions() {
    let kp = with_root(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("ExampleUser")},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:ViaService": ["ec2.us-west-2.amazonaws.com", "rds.us-west-2.amazonaws.com"]}}
    }));
    let c = ctx(&user("ExampleUser"), "kms:Decrypt");
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with("kms:ViaService", "rds.us-west-2.amazonaws.com")
    ));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with("kms:ViaService", "s3.us-west-2.amazonaws.com")
    ));
    assert!(!allowed(&kp, &[], &c));

    // Deny use outside the services: a direct call (no kms:ViaService) is denied.
    let kp = with_root(json!({
        "Effect": "Deny",
        "Principal": {"AWS": user("ExampleUser")},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringNotEquals": {"kms:ViaService": "ec2.us-west-2.amazonaws.com"}}
    }));
    let ids = [allow_all_kms("all")];
    let c = ctx(&user("ExampleUser"), "kms:Decrypt");
    assert!(allowed(
        &kp,
        &ids,
        &c.clone().with("kms:ViaService", "ec2.us-west-2.amazonaws.com")
    ));
    assert!(!allowed(
        &kp,
        &ids,
        &c.clone().with("kms:ViaService", "s3.us-west-2.amazonaws.com")
    ));
    assert!(!allowed(&kp, &ids, &c));
}

#[test]
fn grant_conditions() {
    let kp = key_policy(json!([
        {
            "Sid": "Allow attachment of persistent resources",
            "Effect": "Allow",
            "Principal": {"AWS": user("ExampleUser")},
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}
        },
        {
            "Sid": "Limit grant operations",
            "Effect": "Allow",
            "Principal": {"AWS": user("GrantAdmin")},
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {
                "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]},
                "StringEquals": {"kms:GranteePrincipal": format!("arn:aws:iam::{ACCT}:role/App")}
            }
        }
    ]));
    let c = ctx(&user("ExampleUser"), "kms:CreateGrant");
    assert!(allowed(&kp, &[], &c.clone().with("kms:GrantIsForAWSResource", "true")));
    assert!(allowed(&kp, &[], &c.clone().with("kms:GrantIsForAWSResource", "TRUE")));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with("kms:GrantIsForAWSResource", "false")
    ));
    assert!(!allowed(&kp, &[], &c));

    let c = ctx(&user("GrantAdmin"), "kms:CreateGrant")
        .with("kms:GranteePrincipal", format!("arn:aws:iam::{ACCT}:role/App"));
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with_values("kms:GrantOperations", ["Decrypt"])
    ));
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with_values("kms:GrantOperations", ["Encrypt", "Decrypt"])
    ));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with_values("kms:GrantOperations", ["Decrypt", "RetireGrant"])
    ));
    let wrong_grantee = c
        .clone()
        .with("kms:GranteePrincipal", format!("arn:aws:iam::{ACCT}:role/Other"));
    assert!(!allowed(
        &kp,
        &[],
        &wrong_grantee.with_values("kms:GrantOperations", ["Decrypt"])
    ));
}

#[test]
fn source_ip_conditions() {
    let kp = with_root(json!({
        "Sid": "DenyOutsideCorpNetwork",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:DB8::/32"]}}
    }));
    let c = ctx(&root(), "kms:Encrypt");
    assert!(allowed(&kp, &[], &c.clone().with("aws:SourceIp", "192.0.2.77")));
    assert!(allowed(&kp, &[], &c.clone().with("aws:SourceIp", "2001:db8:0:1::5")));
    assert!(!allowed(&kp, &[], &c.clone().with("aws:SourceIp", "203.0.113.5")));
    // A request without a source IP (e.g. made by an AWS service) is denied too, as AWS warns.
    assert!(!allowed(&kp, &[], &c));

    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    }));
    let c = ctx(&user("alice"), "kms:Encrypt");
    assert!(allowed(&kp, &[], &c.clone().with("aws:SourceIp", "10.20.30.40")));
    assert!(!allowed(&kp, &[], &c.clone().with("aws:SourceIp", "11.0.0.1")));
    assert!(!allowed(&kp, &[], &c.clone().with("aws:SourceIp", "not an ip")));
    assert!(!allowed(&kp, &[], &c));
}

#[test]
fn secure_transport_bool() {
    let kp = with_root(json!({
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}
    }));
    let c = ctx(&root(), "kms:Decrypt");
    assert!(allowed(&kp, &[], &c.clone().with("aws:SecureTransport", "true")));
    assert!(!allowed(&kp, &[], &c.clone().with("aws:SecureTransport", "false")));
    // Bool on a missing key is false, so the Deny does not apply.
    assert!(allowed(&kp, &[], &c));

    let kp = with_root(json!({
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"BoolIfExists": {"aws:SecureTransport": false}}
    }));
    assert!(!allowed(&kp, &[], &c.clone().with("aws:SecureTransport", "false")));
    assert!(allowed(&kp, &[], &c.clone().with("aws:SecureTransport", "true")));
    // ...IfExists on a missing key is true, so this Deny also covers requests without the key.
    assert!(!allowed(&kp, &[], &c));
}

#[test]
fn not_principal_deny_everyone_else() {
    let admin = user("KeyAdmin");
    let kp = with_root(json!({
        "Sid": "OnlyAdminDeletes",
        "Effect": "Deny",
        "NotPrincipal": {"AWS": [admin.clone(), root()]},
        "Action": "kms:ScheduleKeyDeletion",
        "Resource": "*"
    }));
    let ids = [allow_all_kms("all")];
    assert!(allowed(&kp, &ids, &ctx(&admin, "kms:ScheduleKeyDeletion")));
    assert!(allowed(&kp, &[], &ctx(&root(), "kms:ScheduleKeyDeletion")));
    let d = decide(&kp, &ids, &ctx(&user("bob"), "kms:ScheduleKeyDeletion"));
    assert_eq!(
        d.to_string(),
        "denied explicitly by key policy statement \"OnlyAdminDeletes\""
    );
    assert!(allowed(&kp, &ids, &ctx(&user("bob"), "kms:Encrypt")));

    // Listing the user without its account does not exempt it (IAM evaluates the account too).
    let kp = with_root(json!({
        "Effect": "Deny",
        "NotPrincipal": {"AWS": admin.clone()},
        "Action": "kms:ScheduleKeyDeletion",
        "Resource": "*"
    }));
    assert!(!allowed(&kp, &ids, &ctx(&admin, "kms:ScheduleKeyDeletion")));

    // NotPrincipal with Allow is not supported (IAM): it would grant everyone but the listed.
    let doc = json!({"Statement": {
        "Effect": "Allow",
        "NotPrincipal": {"AWS": [user("mallory"), ACCT]},
        "Action": "kms:DescribeKey",
        "Resource": "*"
    }});
    let err = Policy::parse_key_policy(&doc.to_string()).unwrap_err().to_string();
    assert!(
        err.starts_with("Statement.NotPrincipal: NotPrincipal is supported only with"),
        "{err}"
    );
}

#[test]
fn not_action() {
    let kp = key_policy(json!({
        "Sid": "EverythingButDestruction",
        "Effect": "Allow",
        "Principal": {"AWS": user("operator")},
        "NotAction": ["kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:Delete*"],
        "Resource": "*"
    }));
    assert!(kp.statements()[0].uses_not_action());
    let c = |a: &str| ctx(&user("operator"), a);
    assert!(allowed(&kp, &[], &c("kms:Encrypt")));
    assert!(allowed(&kp, &[], &c("kms:CancelKeyDeletion")));
    assert!(!allowed(&kp, &[], &c("kms:ScheduleKeyDeletion")));
    assert!(!allowed(&kp, &[], &c("kms:DeleteAlias")));
    assert!(!allowed(&kp, &[], &c("kms:deleteimportedkeymaterial")));
}

#[test]
fn not_resource() {
    let kp = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    let p = identity(
        "all-but-one",
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "NotResource": OTHER_KEY}),
    );
    let ids = [p];
    assert!(allowed(&kp, &ids, &ctx(&user("alice"), "kms:Decrypt")));
    assert!(!allowed(
        &kp,
        &ids,
        &RequestContext::new(&user("alice"), "kms:Decrypt", OTHER_KEY)
    ));
}

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

#[test]
fn date_conditions_on_current_time() {
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("contractor")},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {
            "DateGreaterThan": {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
            "DateLessThan": {"aws:CurrentTime": 1735689600}
        }
    }));
    let c = ctx(&user("contractor"), "kms:Decrypt");
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with_current_time(at("2024-06-15T12:00:00Z"))
    ));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with_current_time(at("2023-12-31T23:59:59Z"))
    ));
    // 1735689600 is 2025-01-01T00:00:00Z.
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with_current_time(at("2025-01-01T00:00:00Z"))
    ));
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with_current_time(at("2024-12-31T23:59:59Z"))
    ));
    // The context's default time is now.
    let now_ctx = ctx(&user("contractor"), "kms:Decrypt");
    let now = humantime::parse_rfc3339(&now_ctx.get("aws:currenttime").unwrap()[0]).unwrap();
    assert!(now.duration_since(SystemTime::now() - Duration::from_secs(60)).is_ok());

    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("contractor")},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"DateNotEquals": {"aws:CurrentTime": "2024-02-29"}}
    }));
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with_current_time(at("2024-03-01T00:00:00Z"))
    ));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with_current_time(at("2024-02-29T00:00:00Z"))
    ));
}

#[test]
fn null_condition() {
    let kp = key_policy(json!([
        {
            "Sid": "RequireEncryptionContext",
            "Effect": "Allow",
            "Principal": {"AWS": user("app")},
            "Action": "kms:Encrypt",
            "Resource": "*",
            "Condition": {"Null": {"kms:EncryptionContextKeys": "false"}}
        },
        {
            "Sid": "OnlyDirectCalls",
            "Effect": "Allow",
            "Principal": {"AWS": user("app")},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"Null": {"kms:ViaService": true}}
        }
    ]));
    let c = ctx(&user("app"), "kms:Encrypt");
    assert!(allowed(&kp, &[], &c.clone().with_encryption_context([("a", "b")])));
    assert!(!allowed(&kp, &[], &c));
    let c = ctx(&user("app"), "kms:Decrypt");
    assert!(allowed(&kp, &[], &c));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with("kms:ViaService", "ec2.us-west-2.amazonaws.com")
    ));
}

#[test]
fn numeric_schedule_key_deletion_window() {
    let kp = with_root(json!({
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:ScheduleKeyDeletion",
        "Resource": "*",
        "Condition": {"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": "30"}}
    }));
    let c = ctx(&root(), "kms:ScheduleKeyDeletion");
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with("kms:ScheduleKeyDeletionPendingWindowInDays", "30")
    ));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with("kms:ScheduleKeyDeletionPendingWindowInDays", "7")
    ));
}

#[test]
fn string_like_and_arn_conditions() {
    let kp = key_policy(json!([
        {
            "Effect": "Allow",
            "Principal": {"AWS": ACCT},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringLike": {"kms:RequestAlias": "alias/finance*"},
                "ArnLike": {"aws:PrincipalArn": format!("arn:aws:iam::{ACCT}:role/Finance*")}
            }
        },
        {
            "Effect": "Allow",
            "Principal": {"AWS": ACCT},
            "Action": "kms:Encrypt",
            "Resource": "*",
            "Condition": {
                "ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/project-?"},
                "StringEquals": {"kms:CallerAccount": ACCT}
            }
        }
    ]));
    let ids = [allow_all_kms("all")];
    let session = format!("arn:aws:sts::{ACCT}:assumed-role/FinanceApp/s");
    let c = ctx(&session, "kms:Decrypt");
    assert!(allowed(
        &kp,
        &ids,
        &c.clone().with("kms:RequestAlias", "alias/finance-payroll")
    ));
    assert!(!allowed(&kp, &ids, &c.clone().with("kms:RequestAlias", "alias/hr")));
    let other_role = format!("arn:aws:sts::{ACCT}:assumed-role/HrApp/s");
    assert!(!allowed(
        &kp,
        &ids,
        &ctx(&other_role, "kms:Decrypt").with("kms:RequestAlias", "alias/finance")
    ));

    let c = ctx(&user("alice"), "kms:Encrypt");
    assert!(allowed(
        &kp,
        &ids,
        &c.clone()
            .with_values("kms:ResourceAliases", ["alias/x", "alias/project-a"])
    ));
    assert!(!allowed(
        &kp,
        &ids,
        &c.clone().with_values("kms:ResourceAliases", ["alias/project-ab"])
    ));
    assert!(!allowed(&kp, &ids, &c));
}

#[test]
fn key_property_conditions() {
    let kp = key_policy(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("signer")},
        "Action": ["kms:Sign", "kms:GenerateMac"],
        "Resource": "*",
        "Condition": {
            "StringEqualsIgnoreCase": {"kms:KeyUsage": ["sign_verify", "generate_verify_mac"]},
            "StringEqualsIfExists": {"kms:SigningAlgorithm": "ECDSA_SHA_256", "kms:MacAlgorithm": "HMAC_SHA_256"},
            "StringNotEquals": {"kms:KeyOrigin": "EXTERNAL"}
        }
    }));
    let c = ctx(&user("signer"), "kms:Sign")
        .with("kms:KeyUsage", "SIGN_VERIFY")
        .with("kms:KeyOrigin", "AWS_KMS");
    assert!(allowed(
        &kp,
        &[],
        &c.clone().with("kms:SigningAlgorithm", "ECDSA_SHA_256")
    ));
    assert!(!allowed(
        &kp,
        &[],
        &c.clone().with("kms:SigningAlgorithm", "RSASSA_PSS_SHA_256")
    ));
    assert!(!allowed(&kp, &[], &c.clone().with("kms:KeyOrigin", "EXTERNAL")));
    assert!(!allowed(&kp, &[], &c.clone().with("kms:KeyUsage", "ENCRYPT_DECRYPT")));
    let m = ctx(&user("signer"), "kms:GenerateMac").with("kms:KeyUsage", "GENERATE_VERIFY_MAC");
    assert!(allowed(&kp, &[], &m.clone().with("kms:MacAlgorithm", "HMAC_SHA_256")));
    assert!(!allowed(&kp, &[], &m.with("kms:MacAlgorithm", "HMAC_SHA_512")));

    let kp = identity(
        "create-only-symmetric",
        json!({
            "Effect": "Allow",
            "Action": "kms:CreateKey",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT", "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
                "Bool": {"kms:BypassPolicyLockoutSafetyCheck": "false"}
            }
        }),
    );
    let kp_key = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    let c = RequestContext::new(&user("admin"), "kms:CreateKey", "*")
        .with_key_account(ACCT)
        .with("kms:KeySpec", "SYMMETRIC_DEFAULT")
        .with("kms:EncryptionAlgorithm", "SYMMETRIC_DEFAULT")
        .with("kms:BypassPolicyLockoutSafetyCheck", "false");
    assert!(allowed(&kp_key, std::slice::from_ref(&kp), &c));
    assert!(!allowed(
        &kp_key,
        std::slice::from_ref(&kp),
        &c.clone().with("kms:KeySpec", "RSA_2048")
    ));
    assert!(!allowed(
        &kp_key,
        &[kp],
        &c.with("kms:BypassPolicyLockoutSafetyCheck", "true")
    ));
}

#[test]
fn set_qualifiers_with_negated_operators() {
    let policy = |cond: Value| {
        key_policy(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*", "Condition": cond}),
        )
    };
    let c = ctx(&user("a"), "kms:Encrypt");
    let with = |keys: &[&str]| c.clone().with_values("kms:EncryptionContextKeys", keys.iter().copied());

    // ForAllValues:StringNotEquals: no request key may be listed; missing -> true.
    let p = policy(json!({"ForAllValues:StringNotEquals": {"kms:EncryptionContextKeys": ["secret", "internal"]}}));
    assert!(allowed(&p, &[], &with(&["a", "b"])));
    assert!(!allowed(&p, &[], &with(&["a", "secret"])));
    assert!(allowed(&p, &[], &c));
    // ForAnyValue:StringNotEquals: some request key is unlisted; missing -> false.
    let p = policy(json!({"ForAnyValue:StringNotEquals": {"kms:EncryptionContextKeys": ["secret"]}}));
    assert!(allowed(&p, &[], &with(&["secret", "a"])));
    assert!(!allowed(&p, &[], &with(&["secret"])));
    assert!(!allowed(&p, &[], &c));
    // An empty set counts as missing.
    assert!(!allowed(&p, &[], &with(&[])));
    // Plain StringNotEquals on a missing key is true; multiple values are NORed.
    let p = policy(json!({"StringNotEquals": {"kms:ViaService": ["a.amazonaws.com", "b.amazonaws.com"]}}));
    assert!(allowed(&p, &[], &c));
    assert!(allowed(&p, &[], &c.clone().with("kms:ViaService", "c.amazonaws.com")));
    assert!(!allowed(&p, &[], &c.clone().with("kms:ViaService", "b.amazonaws.com")));
    // Several keys under one operator are ANDed.
    let p = policy(json!({"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT", "kms:KeyOrigin": "AWS_KMS"}}));
    assert!(allowed(
        &p,
        &[],
        &c.clone()
            .with("kms:KeySpec", "SYMMETRIC_DEFAULT")
            .with("kms:KeyOrigin", "AWS_KMS")
    ));
    assert!(!allowed(
        &p,
        &[],
        &c.clone()
            .with("kms:KeySpec", "SYMMETRIC_DEFAULT")
            .with("kms:KeyOrigin", "EXTERNAL")
    ));
}

#[test]
fn service_principal() {
    let kp = with_root(json!({
        "Effect": "Allow",
        "Principal": {"Service": "logs.us-west-2.amazonaws.com"},
        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:GenerateDataKey*"],
        "Resource": "*",
        "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-west-2:111122223333:*"}}
    }));
    let c = ctx("logs.us-west-2.amazonaws.com", "kms:GenerateDataKey")
        .with_encryption_context([("aws:logs:arn", "arn:aws:logs:us-west-2:111122223333:log-group:app")]);
    assert!(allowed(&kp, &[], &c));
    let c = ctx("logs.us-west-2.amazonaws.com", "kms:GenerateDataKey")
        .with_encryption_context([("aws:logs:arn", "arn:aws:logs:us-west-2:444455556666:log-group:app")]);
    assert!(!allowed(&kp, &[], &c));
    assert!(!allowed(&kp, &[], &ctx("sns.amazonaws.com", "kms:GenerateDataKey")));
}

#[test]
fn access_denied_message_names_principal_action_and_key_only() {
    let kp = with_root(json!({
        "Effect": "Allow",
        "Principal": {"AWS": user("alice")},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:EncryptionContext:Secret": "hunter2"}}
    }));
    let c = ctx(&user("bob"), "kms:Decrypt").with_encryption_context([("Secret", "hunter3")]);
    let d = decide(&kp, &[], &c);
    let KmsError::AccessDenied(msg) = access_denied(&c, &d) else {
        panic!("not AccessDenied")
    };
    assert_eq!(
        msg,
        format!(
            "User: {} is not authorized to perform: kms:Decrypt on resource: {KEY} because no identity-based policy allows the kms:Decrypt action",
            user("bob")
        )
    );
    assert!(!msg.contains("hunter"));
    let c = ctx(&other_user("eve"), "kms:Decrypt");
    let msg = access_denied(&c, &decide(&kp, &[], &c)).to_string();
    assert!(
        msg.ends_with("because no resource-based policy allows the kms:Decrypt action"),
        "{msg}"
    );
    let deny = with_root(json!({"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}));
    let c = ctx(&root(), "kms:Decrypt");
    let msg = access_denied(&c, &decide(&deny, &[], &c)).to_string();
    assert!(
        msg.ends_with("with an explicit deny in a resource-based policy"),
        "{msg}"
    );
}

#[test]
fn decisions_name_the_statement_by_sid_or_index() {
    let kp = key_policy(json!([
        {"Effect": "Allow", "Principal": {"AWS": user("a")}, "Action": "kms:Encrypt", "Resource": "*"},
        {"Sid": "", "Effect": "Allow", "Principal": {"AWS": user("a")}, "Action": "kms:Decrypt", "Resource": "*"}
    ]));
    let d = decide(&kp, &[], &ctx(&user("a"), "kms:Encrypt"));
    assert_eq!(d.to_string(), "allowed by key policy Statement[0]");
    let d = decide(&kp, &[], &ctx(&user("a"), "kms:Decrypt"));
    assert_eq!(d.to_string(), "allowed by key policy Statement[1]");
    assert_eq!(d.statements()[0].index, 1);
}

#[test]
fn lockout_safety_check() {
    let caller = ctx(&user("admin"), "kms:PutKeyPolicy");
    // The default policy keeps the account (and so the admin's IAM policies) in control.
    let p = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    assert!(lockout_check(&p, &caller).is_ok());
    // A policy naming the admin directly.
    let p = key_policy(
        json!({"Effect": "Allow", "Principal": {"AWS": user("admin")}, "Action": "kms:Put*", "Resource": "*"}),
    );
    assert!(lockout_check(&p, &caller).is_ok());
    // A policy that gives the admin only crypto operations locks it out.
    let p = key_policy(
        json!({"Effect": "Allow", "Principal": {"AWS": user("admin")}, "Action": "kms:Encrypt", "Resource": "*"}),
    );
    assert_eq!(
        lockout_check(&p, &caller),
        Err(KmsError::MalformedPolicyDocument(LOCKOUT_MESSAGE.to_string()))
    );
    // A policy for someone else.
    let p =
        key_policy(json!({"Effect": "Allow", "Principal": {"AWS": user("other")}, "Action": "kms:*", "Resource": "*"}));
    assert!(lockout_check(&p, &caller).is_err());
    // A Deny of PutKeyPolicy for the caller.
    let p = with_root(
        json!({"Effect": "Deny", "Principal": {"AWS": user("admin")}, "Action": "kms:PutKeyPolicy", "Resource": "*"}),
    );
    assert!(lockout_check(&p, &caller).is_err());
    // Asked from another action's context, the check still asks about kms:PutKeyPolicy.
    let p = key_policy(
        json!({"Effect": "Allow", "Principal": {"AWS": user("admin")}, "Action": "kms:PutKeyPolicy", "Resource": "*"}),
    );
    assert!(lockout_check(&p, &ctx(&user("admin"), "kms:CreateKey")).is_ok());
}

#[test]
fn statement_object_and_2008_version() {
    let p = Policy::parse_key_policy(
        r#"{"Version":"2008-10-17","Id":"x","Statement":{"Effect":"Allow","Principal":"*","Action":"kms:DescribeKey","Resource":"*"}}"#,
    )
    .unwrap();
    assert_eq!(p.version(), Some("2008-10-17"));
    assert_eq!(p.id(), Some("x"));
    assert_eq!(p.kind(), PolicyKind::KeyPolicy);
    assert_eq!(p.statements()[0].effect(), Effect::Allow);
    assert!(!p.statements()[0].has_condition());
    assert!(allowed(&p, &[], &ctx(&user("anyone"), "kms:DescribeKey")));
    assert!(!allowed(&p, &[], &ctx(&user("anyone"), "kms:Decrypt")));
    // Principal "*" is the key's own account for a same-account caller; others need IAM too.
    assert!(!allowed(&p, &[], &ctx(&other_user("x"), "kms:DescribeKey")));
    assert!(allowed(
        &p,
        &[allow_all_kms("x")],
        &ctx(&other_user("x"), "kms:DescribeKey")
    ));
}

#[test]
fn context_accessors() {
    let c = ctx(&format!("arn:aws:sts::{ACCT}:assumed-role/R/s"), "kms:Encrypt");
    assert_eq!(c.principal_account(), Some(ACCT));
    assert_eq!(c.principal_kind(), CallerKind::AssumedRole);
    assert_eq!(c.key_account(), Some(ACCT));
    assert_eq!(c.action(), "kms:Encrypt");
    assert_eq!(c.resource(), KEY);
    assert_eq!(
        c.get("AWS:PRINCIPALARN").unwrap(),
        [format!("arn:aws:iam::{ACCT}:role/R")]
    );
    assert_eq!(c.get("kms:calleraccount").unwrap(), [ACCT.to_string()]);
    let mut c = c.with("aws:SourceIp", "10.0.0.1");
    c.remove("AWS:SourceIP");
    assert!(c.get("aws:SourceIp").is_none());
    assert!(keys::is_multi_valued("KMS:GrantOperations"));
    assert_eq!(keys::encryption_context("Dept"), "kms:EncryptionContext:Dept");
}

#[test]
fn identity_policies_in_any_container() {
    let kp = Policy::parse_key_policy(&default_key_policy(ACCT)).unwrap();
    let c = ctx(&user("alice"), "kms:Encrypt");
    let shared: Vec<std::sync::Arc<Policy>> = vec![std::sync::Arc::new(allow_all_kms("shared"))];
    assert!(evaluate(&kp, &shared, false, &c).is_allowed());
    let owned = allow_all_kms("owned");
    assert!(evaluate(&kp, [&owned], false, &c).is_allowed());
    assert!(!evaluate(&kp, std::iter::empty::<&Policy>(), false, &c).is_allowed());
}

#[test]
fn compiled_policies_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<RequestContext>();
    assert_send_sync::<Decision>();
}

#[test]
fn a_context_with_only_the_keys_the_policy_reads_decides_the_same() {
    let kp = key_policy(json!([
        {
            "Effect": "Allow",
            "Principal": {"AWS": user("alice")},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:EncryptionContext:Department": "IT"},
                "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}
            }
        },
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "secret"}}
        },
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2100-01-01T00:00:00Z"}}
        }
    ]));
    let read = kp.condition_keys().clone();
    let build = |only: Option<std::sync::Arc<[String]>>, ec: &[(&str, &str)], ip: &str| {
        RequestContext::new_reading(&user("alice"), "kms:Decrypt", KEY, only)
            .with_encryption_context(ec.iter().copied())
            .with(keys::SOURCE_IP, ip)
            .with(keys::KEY_SPEC, "SYMMETRIC_DEFAULT")
    };
    // (encryption context, source IP, allowed?)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
    let cases: &[Case] = &[
        (&[("Department", "IT")], "10.1.2.3", true),
        (&[("department", "IT")], "10.1.2.3", true),
        (&[("Department", "HR")], "10.1.2.3", false),
        (&[("Department", "IT")], "192.168.1.1", false),
        (&[("Department", "IT"), ("secret", "x")], "10.1.2.3", false),
        (&[], "10.1.2.3", false),
    ];
    for &(ec, ip, expected) in cases {
        let full = build(None, ec, ip);
        let only = build(Some(read.clone()), ec, ip);
        assert_eq!(allowed(&kp, &[], &full), expected, "{ec:?} {ip}");
        assert_eq!(
            allowed(&kp, &[], &only),
            expected,
            "{ec:?} {ip} with only the keys read"
        );
        // What no statement reads is not built; what one reads is.
        assert!(full.get(keys::KEY_SPEC).is_some() && full.get(keys::PRINCIPAL_ARN).is_some());
        assert!(only.get(keys::KEY_SPEC).is_none() && only.get(keys::PRINCIPAL_ARN).is_none());
        assert!(only.get(keys::SOURCE_IP).is_some() && only.get(keys::CURRENT_TIME).is_some());
    }
}
