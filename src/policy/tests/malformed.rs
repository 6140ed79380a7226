//! Malformed documents: each is a MalformedPolicyDocumentException whose message names the
//! location and the problem, and never echoes the document's values.

use serde_json::{json, Value};

use crate::error::KmsError;
use crate::policy::*;

const ALICE: &str = "arn:aws:iam::111122223333:user/alice";

fn statement() -> Value {
    json!({"Sid": "S", "Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "kms:Encrypt", "Resource": "*"})
}

/// The error message for a key policy whose Statement array is `[ok, ok, bad]`.
fn third_statement_error(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut bad = statement();
    edit(bad.as_object_mut().unwrap());
    let doc = json!({"Version": "2012-10-17", "Statement": [statement(), statement(), bad]});
    error_of(&doc.to_string())
}

fn error_of(text: &str) -> String {
    match Policy::parse_key_policy(text) {
        Err(KmsError::MalformedPolicyDocument(msg)) => {
            assert_eq!(
                KmsError::MalformedPolicyDocument(msg.clone()).name(),
                "MalformedPolicyDocumentException"
            );
            msg
        }
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("accepted a malformed document: {text}"),
    }
}

fn assert_msg(msg: &str, location: &str, what: &str) {
    assert!(
        msg.starts_with(&format!("{location}: ")),
        "location {location:?} not in {msg:?}"
    );
    assert!(msg.contains(what), "{what:?} not in {msg:?}");
}

#[test]
fn bad_json() {
    let msg = error_of(r#"{"Version": "2012-10-17", "Statement": [ {"Effect": "Allow", "#);
    assert_msg(&msg, "Policy", "not valid JSON");
    assert!(msg.contains("line 1"), "{msg}");
    assert_msg(&error_of(""), "Policy", "empty");
    assert_msg(&error_of("[1, 2]"), "Policy", "must be a JSON object");
    // The parser's message gives a position, never the text.
    let msg = error_of(r#"{"Statement": "sk-live-SECRET" "#);
    assert!(!msg.contains("SECRET"), "{msg}");
}

#[test]
fn missing_or_bad_statement() {
    assert_msg(
        &error_of(r#"{"Version": "2012-10-17"}"#),
        "Policy",
        "missing required element Statement",
    );
    assert_msg(&error_of(r#"{"Statement": []}"#), "Statement", "at least one statement");
    assert_msg(
        &error_of(r#"{"Statement": "x"}"#),
        "Statement",
        "must be an object or an array",
    );
    assert_msg(&error_of(r#"{"Statement": [1]}"#), "Statement[0]", "must be an object");
    assert_msg(
        &error_of(r#"{"Version": "2012-10-17", "Statement": [], "Extra": 1}"#),
        "Policy",
        "unknown element \"Extra\"",
    );
    assert_msg(
        &error_of(r#"{"Version": "2020-01-01", "Statement": []}"#),
        "Version",
        "2012-10-17",
    );
    assert_msg(&error_of(r#"{"Id": 5, "Statement": []}"#), "Id", "must be a string");
}

#[test]
fn bad_effect_and_missing_elements() {
    let msg = third_statement_error(|s| {
        s.insert("Effect".into(), json!("Permit"));
    });
    assert_msg(&msg, "Statement[2].Effect", "must be \"Allow\" or \"Deny\"");
    assert!(!msg.contains("Permit"));
    let msg = third_statement_error(|s| {
        s.remove("Effect");
    });
    assert_msg(&msg, "Statement[2]", "missing required element Effect");
    let msg = third_statement_error(|s| {
        s.remove("Action");
    });
    assert_msg(&msg, "Statement[2]", "missing required element Action");
    let msg = third_statement_error(|s| {
        s.remove("Resource");
    });
    assert_msg(&msg, "Statement[2]", "missing required element Resource");
    let msg = third_statement_error(|s| {
        s.remove("Principal");
    });
    assert_msg(&msg, "Statement[2]", "missing required element Principal");
    let msg = third_statement_error(|s| {
        s.insert("NotAction".into(), json!("kms:Decrypt"));
    });
    assert_msg(&msg, "Statement[2]", "both Action and NotAction");
    let msg = third_statement_error(|s| {
        s.insert("NotPrincipal".into(), json!("*"));
    });
    assert_msg(&msg, "Statement[2]", "both Principal and NotPrincipal");
    let msg = third_statement_error(|s| {
        s.insert("Sid".into(), json!(7));
    });
    assert_msg(&msg, "Statement[2].Sid", "must be a string");
    let msg = third_statement_error(|s| {
        s.insert("Effects".into(), json!("Allow"));
    });
    assert_msg(&msg, "Statement[2]", "unknown element \"Effects\"");
}

#[test]
fn unknown_operator() {
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!({"StringEqualz": {"kms:ViaService": "x"}}));
    });
    assert_msg(
        &msg,
        "Statement[2].Condition.StringEqualz",
        "unknown condition operator",
    );
    let msg = third_statement_error(|s| {
        s.insert(
            "Condition".into(),
            json!({"ForSomeValues:StringEquals": {"kms:ViaService": "x"}}),
        );
    });
    assert_msg(
        &msg,
        "Statement[2].Condition.ForSomeValues:StringEquals",
        "unknown condition operator",
    );
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!({"NullIfExists": {"kms:ViaService": "true"}}));
    });
    assert_msg(&msg, "Statement[2].Condition.NullIfExists", "Null operator");
}

#[test]
fn bad_condition_values() {
    let msg = third_statement_error(|s| {
        s.insert(
            "Condition".into(),
            json!({"StringEquals": {"kms:EncryptionContext:Department": {"a": "topsecret"}}}),
        );
    });
    assert_msg(
        &msg,
        "Statement[2].Condition.StringEquals",
        "value must be a string or an array of strings",
    );
    assert!(msg.contains("kms:EncryptionContext:Department"));
    assert!(!msg.contains("topsecret"));
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!({"StringEquals": {"kms:ViaService": []}}));
    });
    assert_msg(&msg, "Statement[2].Condition.StringEquals", "value must be");
    let msg = third_statement_error(|s| {
        s.insert(
            "Condition".into(),
            json!({"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": "ten"}}),
        );
    });
    assert_msg(&msg, "Statement[2].Condition.NumericLessThan", "must be a number");
    let msg = third_statement_error(|s| {
        s.insert(
            "Condition".into(),
            json!({"DateLessThan": {"aws:CurrentTime": ["2024-01-01", "soon"]}}),
        );
    });
    assert_msg(
        &msg,
        "Statement[2].Condition.DateLessThan",
        "(value [1]) must be an ISO 8601 date",
    );
    let msg = third_statement_error(|s| {
        s.insert(
            "Condition".into(),
            json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/40"}}),
        );
    });
    assert_msg(&msg, "Statement[2].Condition.IpAddress", "CIDR");
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!({"Bool": {"aws:SecureTransport": "yes"}}));
    });
    assert_msg(&msg, "Statement[2].Condition.Bool", "\"true\" or \"false\"");
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!({"StringEquals": {"ViaService": "x"}}));
    });
    assert_msg(
        &msg,
        "Statement[2].Condition.StringEquals",
        "not of the form 'prefix:name'",
    );
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!(["StringEquals"]));
    });
    assert_msg(
        &msg,
        "Statement[2].Condition",
        "must be an object of condition operators",
    );
    let msg = third_statement_error(|s| {
        s.insert("Condition".into(), json!({"StringEquals": "x"}));
    });
    assert_msg(
        &msg,
        "Statement[2].Condition.StringEquals",
        "must be an object of condition keys",
    );
}

#[test]
fn bad_principal() {
    let msg = third_statement_error(|s| {
        s.insert(
            "Principal".into(),
            json!({"AWS": ["arn:aws:iam::111122223333:user/ok", "arn:aws:iam::12345:user/bob"]}),
        );
    });
    assert_msg(&msg, "Statement[2].Principal.AWS[1]", "invalid principals");
    let msg = third_statement_error(|s| {
        s.insert("Principal".into(), json!({"AWS": "arn:aws:iam::111122223333:user/*"}));
    });
    assert_msg(&msg, "Statement[2].Principal.AWS", "wildcards are not allowed");
    let msg = third_statement_error(|s| {
        s.insert("Principal".into(), json!("alice"));
    });
    assert_msg(&msg, "Statement[2].Principal", "must be \"*\" or an object");
    let msg = third_statement_error(|s| {
        s.insert("Principal".into(), json!({"Human": "alice"}));
    });
    assert_msg(&msg, "Statement[2].Principal.Human", "unknown principal type");
}

#[test]
fn actions_must_be_kms_in_key_policies() {
    let msg = third_statement_error(|s| {
        s.insert("Action".into(), json!(["kms:Encrypt", "s3:GetObject"]));
    });
    assert_msg(&msg, "Statement[2].Action[1]", "only kms:* actions");
    let msg = third_statement_error(|s| {
        s.insert("Action".into(), json!("Encrypt"));
    });
    assert_msg(&msg, "Statement[2].Action", "kms:<Operation>");
    let msg = third_statement_error(|s| {
        s.insert("NotAction".into(), json!([5]));
        s.remove("Action");
    });
    assert_msg(&msg, "Statement[2].NotAction[0]", "must be a string");
    let msg = third_statement_error(|s| {
        s.insert("Action".into(), json!("kms:En crypt"));
    });
    assert_msg(&msg, "Statement[2].Action", "not valid");
    // Identity policies may name other services' actions, but no principal.
    let ok = json!({"Statement": {"Effect": "Allow", "Action": ["s3:GetObject", "kms:*"], "Resource": "*"}});
    assert!(Policy::parse_identity_policy("p", &ok.to_string()).is_ok());
    let bad = json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}});
    let msg = Policy::parse_identity_policy("p", &bad.to_string())
        .unwrap_err()
        .to_string();
    assert_msg(&msg, "Statement", "cannot name a Principal");
}

#[test]
fn bad_resource() {
    let msg = third_statement_error(|s| {
        s.insert("Resource".into(), json!(["*", "my-key"]));
    });
    assert_msg(&msg, "Statement[2].Resource[1]", "\"*\" or an ARN");
    let msg = third_statement_error(|s| {
        s.insert("Resource".into(), json!({}));
    });
    assert_msg(&msg, "Statement[2].Resource", "must be a string or a non-empty array");
}

#[test]
fn oversize_documents() {
    let mut statements = Vec::new();
    while serde_json::to_string(&statements).unwrap().len() <= MAX_POLICY_BYTES {
        statements.push(statement());
    }
    let doc = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    assert!(doc.len() > 32768);
    let msg = error_of(&doc);
    assert_msg(&msg, "Policy", "maximum size is 32768 bytes");
    // Exactly at the limit is accepted (padding with whitespace, which JSON ignores).
    let small = json!({"Version": "2012-10-17", "Statement": statement()}).to_string();
    let padded = format!("{small}{}", " ".repeat(MAX_POLICY_BYTES - small.len()));
    assert_eq!(padded.len(), MAX_POLICY_BYTES);
    assert!(Policy::parse_key_policy(&padded).is_ok());
    assert!(Policy::parse_key_policy(&format!("{padded} ")).is_err());
}

/// AWS KMS refuses key policies with ForAllValues on kms:EncryptionContext:<k> or aws:RequestTag/<k>
/// (single-valued keys a request can leave out, so the condition holds without them). Identity
/// policies and ForAnyValue, or ForAllValues on a multi-valued key, are accepted.
#[test]
fn for_all_values_on_a_single_valued_context_key_is_overly_permissive() {
    for key in ["kms:EncryptionContext:Department", "aws:RequestTag/Project"] {
        let mut bad = statement();
        bad["Condition"] = json!({"ForAllValues:StringEquals": {key: "IT"}});
        let doc = json!({"Version": "2012-10-17", "Statement": [statement(), statement(), bad]});
        let policy = Policy::parse_key_policy(&doc.to_string()).expect("parses: stored policies still load");
        let msg = match policy.check_new_key_policy() {
            Err(KmsError::MalformedPolicyDocument(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert_msg(&msg, "Statement[2].Condition", "OverlyPermissiveCondition");
        assert!(msg.contains(&key.to_lowercase()), "{msg}");
    }
    let accepted = |condition: Value, kind: PolicyKind| {
        let mut s = statement();
        s["Condition"] = condition;
        if kind == PolicyKind::IdentityPolicy {
            s.as_object_mut().unwrap().remove("Principal");
        }
        let doc = json!({"Version": "2012-10-17", "Statement": [s]}).to_string();
        Policy::parse(kind, "p", &doc)
            .is_ok_and(|p| kind == PolicyKind::IdentityPolicy || p.check_new_key_policy().is_ok())
    };
    let for_all = json!({"ForAllValues:StringEquals": {"kms:EncryptionContext:Department": "IT"}});
    assert!(accepted(for_all, PolicyKind::IdentityPolicy));
    let any = json!({"ForAnyValue:StringEquals": {"kms:EncryptionContext:Department": "IT"}});
    assert!(accepted(any, PolicyKind::KeyPolicy));
    let multi = json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department"]}});
    assert!(accepted(multi, PolicyKind::KeyPolicy));
}

/// A new policy in which an object names a key twice is refused: the parser would keep one of
/// the two and drop the other silently. Stored policies, accepted before, keep their meaning.
#[test]
fn a_key_repeated_in_one_object_is_refused_in_new_policies() {
    let principal = format!(r#""Principal": {{"AWS": "{ALICE}"}}"#);
    let repeated_effect = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Deny", "Effect": "Allow", {principal},
            "Action": "kms:*", "Resource": "*"}}]}}"#
    );
    let repeated_operator = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", {principal},
            "Action": "kms:*", "Resource": "*",
            "Condition": {{"StringEquals": {{"kms:ViaService": "a"}}, "StringEquals": {{"kms:CallerAccount": "b"}}}}}}]}}"#
    );
    let repeated_context_key = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", {principal},
            "Action": "kms:*", "Resource": "*",
            "Condition": {{"StringEquals": {{"kms:ViaService": "a", "kms:ViaService": "b"}}}}}}]}}"#
    );
    for (text, key) in [
        (&repeated_effect, "\"Effect\""),
        (&repeated_operator, "\"StringEquals\""),
        (&repeated_context_key, "\"kms:ViaService\""),
    ] {
        match Policy::parse_new_key_policy(text) {
            Err(KmsError::MalformedPolicyDocument(msg)) => {
                assert_msg(&msg, "Policy", &format!("the key {key} appears twice in one object"));
                assert!(msg.contains(" at line "), "the position is given: {msg}");
            }
            other => panic!("{key}: {other:?}"),
        }
        match Policy::parse_identity_policy("p", &text.replace(&format!("{principal},"), "")) {
            Err(KmsError::MalformedPolicyDocument(msg)) => assert!(msg.contains(key), "{msg}"),
            other => panic!("identity policy, {key}: {other:?}"),
        }
    }
    // Stored: read as before, the last of the two.
    let stored = Policy::parse_key_policy(&repeated_effect).unwrap();
    assert_eq!(stored.statements()[0].effect(), Effect::Allow);
    // The same key in two different objects is fine.
    Policy::parse_new_key_policy(&format!(
        r#"{{"Version": "2012-10-17", "Statement": [
            {{"Effect": "Allow", {principal}, "Action": "kms:*", "Resource": "*"}},
            {{"Effect": "Deny", {principal}, "Action": "kms:Decrypt", "Resource": "*"}}]}}"#
    ))
    .unwrap();
}

/// IAM policy variables in a new 2012-10-17 policy are refused (AWS would substitute them; here
/// they would compare literally). Under 2008-10-17, where AWS reads them literally too, and in a
/// policy already stored, they are accepted.
#[test]
fn policy_variables_are_refused_in_new_2012_10_17_policies() {
    let with = |version: &str, element: &str, value: Value| {
        let mut s = statement();
        s.as_object_mut().unwrap().insert(element.into(), value);
        json!({"Version": version, "Statement": [statement(), s]}).to_string()
    };
    let condition = json!({"StringEquals": {"kms:EncryptionContext:owner": "${aws:username}"}});
    let resource = json!(["arn:aws:kms:*:111122223333:key/${*}"]);
    for (element, value) in [("Condition", condition.clone()), ("Resource", resource)] {
        let text = with("2012-10-17", element, value.clone());
        match Policy::parse_new_key_policy(&text) {
            Err(KmsError::MalformedPolicyDocument(msg)) => {
                assert_msg(&msg, &format!("Statement[1].{element}"), "policy variables");
                assert!(!msg.contains("aws:username"), "{msg}");
            }
            other => panic!("{element}: {other:?}"),
        }
        assert!(Policy::parse_identity_policy("p", &text).is_err(), "{element}");
        assert!(
            Policy::parse_key_policy(&text).is_ok(),
            "{element}: a stored policy stays readable"
        );
        assert!(
            Policy::parse_new_key_policy(&with("2008-10-17", element, value)).is_ok(),
            "{element}"
        );
    }
}
