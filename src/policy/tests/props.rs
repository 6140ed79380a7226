//! Property tests: the parser and the evaluator never panic, whatever the document and request.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::policy::*;

/// Strings that often hit the grammar: element names, operators, keys, ARNs, wildcards, and
/// anything at all.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("Allow".to_string()),
        Just("Deny".to_string()),
        Just("kms:*".to_string()),
        Just("kms:Encrypt".to_string()),
        Just("kms:Gen*?".to_string()),
        Just("arn:aws:iam::111122223333:root".to_string()),
        Just("arn:aws:iam::111122223333:user/alice".to_string()),
        Just("arn:aws:iam::111122223333:role/R".to_string()),
        Just("arn:aws:sts::111122223333:assumed-role/R/s".to_string()),
        Just("arn:aws:kms:us-east-1:111122223333:key/*".to_string()),
        Just("111122223333".to_string()),
        Just("2012-10-17".to_string()),
        Just("2024-01-01T00:00:00Z".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("::/0".to_string()),
        Just("true".to_string()),
        Just("12.5".to_string()),
        "[a-zA-Z:*?/.-]{0,12}",
        any::<String>(),
    ]
}

fn element_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Version".to_string()),
        Just("Id".to_string()),
        Just("Statement".to_string()),
        Just("Sid".to_string()),
        Just("Effect".to_string()),
        Just("Principal".to_string()),
        Just("NotPrincipal".to_string()),
        Just("AWS".to_string()),
        Just("Service".to_string()),
        Just("Action".to_string()),
        Just("NotAction".to_string()),
        Just("Resource".to_string()),
        Just("NotResource".to_string()),
        Just("Condition".to_string()),
        Just("StringEquals".to_string()),
        Just("ForAllValues:StringLike".to_string()),
        Just("ForAnyValue:StringNotEqualsIfExists".to_string()),
        Just("NumericLessThan".to_string()),
        Just("DateGreaterThanEquals".to_string()),
        Just("NotIpAddress".to_string()),
        Just("ArnLike".to_string()),
        Just("Bool".to_string()),
        Just("Null".to_string()),
        Just("kms:EncryptionContext:Department".to_string()),
        Just("kms:EncryptionContextKeys".to_string()),
        Just("aws:SourceIp".to_string()),
        Just("aws:CurrentTime".to_string()),
        any::<String>(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((element_name(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Documents shaped like policies, with arbitrary parts, so that most of them get deep into
/// statement, principal and condition validation and some parse fully.
fn arb_policy_like() -> impl Strategy<Value = Value> {
    let strings = prop_oneof![
        interesting_string().prop_map(Value::String),
        prop::collection::vec(interesting_string().prop_map(Value::String), 0..4).prop_map(Value::Array),
    ];
    let condition = prop::collection::vec(
        (
            element_name(),
            prop::collection::vec((element_name(), strings.clone()), 0..3),
        ),
        0..3,
    )
    .prop_map(|ops| {
        Value::Object(
            ops.into_iter()
                .map(|(op, keys)| (op, Value::Object(keys.into_iter().collect())))
                .collect(),
        )
    });
    let principal = prop_oneof![
        Just(Value::String("*".into())),
        strings.clone().prop_map(|s| serde_json::json!({"AWS": s})),
        strings.clone().prop_map(|s| serde_json::json!({"Service": s})),
        arb_json(),
    ];
    let statement = (
        prop_oneof![Just("Allow"), Just("Deny"), Just("allow")],
        principal,
        any::<bool>(),
        strings.clone(),
        any::<bool>(),
        strings,
        prop::option::of(condition),
    )
        .prop_map(
            |(effect, principal, not_principal, action, not_action, resource, condition)| {
                let mut s = Map::new();
                s.insert("Effect".into(), Value::String(effect.into()));
                s.insert(
                    if not_principal { "NotPrincipal" } else { "Principal" }.into(),
                    principal,
                );
                s.insert(if not_action { "NotAction" } else { "Action" }.into(), action);
                s.insert("Resource".into(), resource);
                if let Some(c) = condition {
                    s.insert("Condition".into(), c);
                }
                Value::Object(s)
            },
        );
    prop::collection::vec(statement, 1..4)
        .prop_map(|statements| serde_json::json!({"Version": "2012-10-17", "Statement": statements}))
}

fn arb_context() -> impl Strategy<Value = RequestContext> {
    (
        interesting_string(),
        interesting_string(),
        interesting_string(),
        prop::collection::vec(
            (element_name(), prop::collection::vec(interesting_string(), 0..3)),
            0..6,
        ),
    )
        .prop_map(|(principal, action, resource, values)| {
            let mut ctx = RequestContext::new(&principal, &action, &resource);
            for (k, v) in values {
                ctx.set_values(&k, v);
            }
            ctx
        })
}

fn exercise(kind: PolicyKind, doc: &Value, ctx: &RequestContext, grant: bool) {
    let text = doc.to_string();
    let parsed = Policy::parse(kind, "p", &text);
    // Parsing the text and the value agree (when the text is within the size limit).
    let from_value = Policy::from_value(kind, "p", doc);
    if text.len() <= MAX_POLICY_BYTES {
        assert_eq!(parsed.is_ok(), from_value.is_ok());
    }
    match from_value {
        Ok(policy) => {
            let d = evaluate(&policy, [&policy], grant, ctx);
            let _ = d.to_string();
            let _ = access_denied(ctx, &d);
            let _ = lockout_check(&policy, ctx);
        }
        Err(e) => assert!(matches!(e, crate::error::KmsError::MalformedPolicyDocument(_))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Policy::parse_key_policy(&text);
        let _ = Policy::parse_identity_policy("p", &text);
    }

    #[test]
    fn arbitrary_json_never_panics(doc in arb_json(), ctx in arb_context(), grant in any::<bool>()) {
        exercise(PolicyKind::KeyPolicy, &doc, &ctx, grant);
        exercise(PolicyKind::IdentityPolicy, &doc, &ctx, grant);
    }

    #[test]
    fn policy_shaped_json_never_panics(doc in arb_policy_like(), ctx in arb_context(), grant in any::<bool>()) {
        exercise(PolicyKind::KeyPolicy, &doc, &ctx, grant);
        exercise(PolicyKind::IdentityPolicy, &doc, &ctx, grant);
    }

    #[test]
    fn explicit_deny_always_wins(ctx in arb_context(), grant in any::<bool>()) {
        let deny_all = Policy::parse_key_policy(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"},
                             {"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}"#,
        ).unwrap();
        prop_assert!(!evaluate(&deny_all, std::iter::empty::<&Policy>(), grant, &ctx).is_allowed());
    }
}
