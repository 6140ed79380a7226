//! The `Condition` element: parsed and compiled once, then decided against a request context.
//!
//! Logic, as IAM documents it: operators are ANDed, keys within one operator are ANDed, values for
//! one key are ORed (NOR for negated operators). A key missing from the request makes a positive
//! operator false and a negated one true; `...IfExists` makes a missing key true; `Null` tests
//! presence. `ForAllValues:` is true for a missing or empty set, `ForAnyValue:` false.

pub mod keys;

pub(crate) mod ip;
pub(crate) mod operators;
pub(crate) mod time;

use serde_json::Value;

use super::context::{Request, RequestContext};
use super::document::{describe_json_type, malformed, seg, show, Effect};
use crate::error::Result;
use operators::{expected, Operator, OperatorError, SetQualifier, Values};

/// One `operator: { key: values }` entry, per key.
#[derive(Debug, Clone)]
struct Clause {
    op: Operator,
    /// Lowercased condition key name.
    key: String,
    values: Values,
}

/// A compiled `Condition` element.
#[derive(Debug, Clone, Default)]
pub(crate) struct Condition {
    clauses: Vec<Clause>,
}

impl Condition {
    /// Parses a `Condition` element found at `loc` (e.g. `Statement[2].Condition`).
    pub(crate) fn parse(v: &Value, loc: &str) -> Result<Condition> {
        let Value::Object(ops) = v else {
            return Err(malformed(
                loc,
                format!(
                    "must be an object of condition operators, not {}",
                    describe_json_type(v)
                ),
            ));
        };
        let mut clauses = Vec::new();
        for (op_name, body) in ops {
            let op_loc = format!("{loc}.{}", seg(op_name));
            let op = Operator::parse(op_name).map_err(|e| match e {
                OperatorError::Unknown => malformed(&op_loc, "unknown condition operator"),
                OperatorError::NullWithQualifier => {
                    malformed(&op_loc, "the Null operator takes no IfExists suffix or set qualifier")
                }
            })?;
            let Value::Object(entries) = body else {
                return Err(malformed(
                    &op_loc,
                    format!(
                        "must be an object of condition keys and values, not {}",
                        describe_json_type(body)
                    ),
                ));
            };
            if entries.is_empty() {
                return Err(malformed(&op_loc, "must name at least one condition key"));
            }
            for (key, raw) in entries {
                if !keys::is_well_formed(key) {
                    return Err(malformed(
                        &op_loc,
                        format!("condition key {} is not of the form 'prefix:name'", show(key)),
                    ));
                }
                let strings = condition_values(raw).ok_or_else(|| {
                    malformed(
                        &op_loc,
                        format!(
                            "value must be a string or an array of strings (condition key {})",
                            show(key)
                        ),
                    )
                })?;
                let values = Values::compile(op.family, &strings).map_err(|i| {
                    let which = if raw.is_array() {
                        format!(" (value [{i}])")
                    } else {
                        String::new()
                    };
                    malformed(
                        &op_loc,
                        format!(
                            "value for condition key {}{which} must be {}",
                            show(key),
                            expected(op.family)
                        ),
                    )
                })?;
                clauses.push(Clause {
                    op,
                    key: keys::normalize(key),
                    values,
                });
            }
        }
        Ok(Condition { clauses })
    }

    /// The first `ForAllValues:` clause on a single-valued key whose absence a request controls
    /// (`kms:EncryptionContext:<k>`, `aws:RequestTag/<k>`): it holds for a request without the
    /// key, so it allows what it seems to restrict. AWS KMS refuses such key policies.
    pub(crate) fn overly_permissive_key(&self) -> Option<&str> {
        self.clauses
            .iter()
            .find(|c| {
                c.op.set == SetQualifier::ForAllValues
                    && (c.key.starts_with("kms:encryptioncontext:") || c.key.starts_with("aws:requesttag/"))
            })
            .map(|c| c.key.as_str())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The condition keys the clauses read, lowercased.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.clauses.iter().map(|c| c.key.as_str())
    }

    /// Whether every clause holds for `ctx`, in a statement of this `effect`.
    pub(crate) fn holds(&self, ctx: &RequestContext, effect: Effect) -> bool {
        self.clauses.iter().all(|c| c.holds(ctx, effect))
    }
}

/// A condition value as strings: a string, number or boolean, or a non-empty array of them.
/// Numbers and booleans are taken as their JSON text, as IAM does.
fn condition_values(v: &Value) -> Option<Vec<String>> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    match v {
        Value::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
        Value::Array(_) => None,
        other => scalar(other).map(|s| vec![s]),
    }
}

impl Clause {
    fn holds(&self, ctx: &RequestContext, effect: Effect) -> bool {
        // An empty set counts as missing.
        let request = ctx
            .request_lc(&self.key)
            .filter(|r| !matches!(r, Request::Strings(v) if v.is_empty()));
        if let Values::Null(expect_missing) = &self.values {
            // "Null": {"k": "true"} holds when k is absent; "false" when it is present.
            return expect_missing.iter().any(|m| *m == request.is_none());
        }
        let op = self.op;
        let request = match request {
            Some(Request::Strings(values)) => values,
            // A key with one unknown value of several: a Deny applies if the clause holds for any
            // of them, an Allow only if for all, so the caller's choice of case can't pick.
            Some(Request::OneOf(values)) => {
                let for_one = |v: &String| self.holds_for(std::slice::from_ref(v));
                return match effect {
                    Effect::Deny => values.iter().any(for_one),
                    Effect::Allow => values.iter().all(for_one),
                };
            }
            // One value: every qualifier comes down to whether it satisfies the operator.
            Some(Request::Time(t)) => return self.values.time_matches(op.family, t) != op.negated,
            None => {
                return match op.set {
                    SetQualifier::ForAllValues => true,
                    SetQualifier::ForAnyValue => op.if_exists,
                    SetQualifier::None => op.if_exists || op.negated,
                }
            }
        };
        self.holds_for(request)
    }

    /// Whether the clause holds for a key present with these (non-empty) values.
    fn holds_for(&self, request: &[String]) -> bool {
        let op = self.op;
        // For one request value: does it satisfy the operator (OR over policy values, NOR for a
        // negated operator)?
        let one = |r: &String| self.values.any_matches(op.family, r) != op.negated;
        match op.set {
            SetQualifier::ForAnyValue => request.iter().any(one),
            SetQualifier::ForAllValues => request.iter().all(one),
            // A plain operator on a multi-valued key: a positive operator needs some value to
            // match, a negated one needs no value to match.
            SetQualifier::None if op.negated => request.iter().all(one),
            SetQualifier::None => request.iter().any(one),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::SystemTime;

    fn holds(cond: Value, key: &str, request: Option<&[&str]>) -> bool {
        let c = Condition::parse(&cond, "Condition").unwrap();
        let mut ctx = RequestContext::new("arn:aws:iam::111122223333:user/a", "kms:Encrypt", "*");
        ctx.remove(key);
        if let Some(values) = request {
            ctx.set_values(key, values.iter().copied());
        }
        c.holds(&ctx, Effect::Allow)
    }

    /// Each operator with a request value that satisfies it and one that does not.
    #[test]
    fn every_operator_both_ways() {
        let cases: &[(&str, Value, &str, &str)] = &[
            ("StringEquals", json!("IT"), "IT", "it"),
            ("StringNotEquals", json!(["a", "b"]), "c", "b"),
            ("StringEqualsIgnoreCase", json!("Straße"), "STRASSE_NO", "x"),
            ("StringEqualsIgnoreCase", json!("ÉTÉ"), "été", "ete"),
            ("StringNotEqualsIgnoreCase", json!("ABC"), "abd", "abc"),
            ("StringLike", json!("alias/app-?-*"), "alias/app-1-prod", "alias/app-12"),
            ("StringNotLike", json!("alias/tmp*"), "alias/app", "alias/tmp1"),
            (
                "ArnEquals",
                json!("arn:aws:iam::111122223333:role/R"),
                "arn:aws:iam::111122223333:role/R",
                "arn:aws:iam::111122223333:role/r",
            ),
            (
                "ArnLike",
                json!("arn:aws:iam::*:role/R*"),
                "arn:aws:iam::444455556666:role/Reader",
                "arn:aws:iam::444455556666:user/R",
            ),
            (
                "ArnNotEquals",
                json!("arn:aws:iam::111122223333:root"),
                "arn:aws:iam::444455556666:root",
                "arn:aws:iam::111122223333:root",
            ),
            (
                "ArnNotLike",
                json!("arn:aws:iam::111122223333:*"),
                "arn:aws:iam::444455556666:root",
                "arn:aws:iam::111122223333:user/x",
            ),
            ("Bool", json!(true), "true", "false"),
            ("NumericEquals", json!(7), "7.0", "8"),
            ("NumericNotEquals", json!("7"), "8", "7"),
            ("NumericLessThan", json!("30"), "29.5", "30"),
            ("NumericLessThanEquals", json!("30"), "30", "31"),
            ("NumericGreaterThan", json!(7), "8", "7"),
            ("NumericGreaterThanEquals", json!(7), "7", "6"),
            (
                "DateEquals",
                json!("2024-01-01T00:00:00Z"),
                "1704067200",
                "2024-01-01T00:00:01Z",
            ),
            (
                "DateNotEquals",
                json!("2024-01-01"),
                "2024-01-02",
                "2024-01-01T00:00:00Z",
            ),
            (
                "DateLessThan",
                json!("2024-01-01T00:00:00Z"),
                "2023-12-31T23:59:59Z",
                "2024-01-01T00:00:00Z",
            ),
            (
                "DateLessThanEquals",
                json!("2024-01-01T00:00:00Z"),
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:01Z",
            ),
            (
                "DateGreaterThan",
                json!(1704067200),
                "2024-01-01T00:00:01Z",
                "2024-01-01T00:00:00Z",
            ),
            (
                "DateGreaterThanEquals",
                json!("2024-01-01T00:00:00+01:00"),
                "2023-12-31T23:00:00Z",
                "2023-12-31T22:59:59Z",
            ),
            (
                "IpAddress",
                json!(["192.0.2.0/24", "2001:db8::/32"]),
                "2001:db8::9",
                "198.51.100.1",
            ),
            ("NotIpAddress", json!("192.0.2.0/24"), "198.51.100.1", "192.0.2.1"),
            ("BinaryEquals", json!("QmluYXJ5"), "QmluYXJ5", "QmluYXJ6"),
        ];
        for (op, policy_value, yes, no) in cases {
            let cond = json!({ *op: {"kms:Test": policy_value} });
            // "STRASSE_NO": IgnoreCase folds case, it does not normalize spellings.
            let expect_yes = *yes != "STRASSE_NO";
            assert_eq!(holds(cond.clone(), "kms:Test", Some(&[yes])), expect_yes, "{op} {yes}");
            assert!(!holds(cond, "kms:Test", Some(&[no])), "{op} {no}");
        }
    }

    #[test]
    fn missing_keys() {
        let missing = |op: &str| holds(json!({ op: {"kms:Test": "x"} }), "kms:Test", None);
        assert!(!missing("StringEquals"));
        assert!(missing("StringNotEquals"));
        assert!(missing("StringNotLike"));
        assert!(missing("ArnNotLike"));
        assert!(missing("StringEqualsIfExists"));
        assert!(missing("StringNotEqualsIfExists"));
        assert!(missing("ForAllValues:StringEquals"));
        assert!(missing("ForAllValues:StringNotEquals"));
        assert!(!missing("ForAnyValue:StringEquals"));
        assert!(!missing("ForAnyValue:StringNotEquals"));
        assert!(missing("ForAnyValue:StringEqualsIfExists"));
        let missing_typed = |op: &str, v: Value| holds(json!({ op: {"kms:Test": v} }), "kms:Test", None);
        assert!(!missing_typed("Bool", json!("true")));
        assert!(missing_typed("BoolIfExists", json!("true")));
        assert!(!missing_typed("NumericLessThan", json!(1)));
        assert!(missing_typed("NumericNotEquals", json!(1)));
        assert!(missing_typed("NotIpAddress", json!("10.0.0.0/8")));
        assert!(!missing_typed("IpAddress", json!("10.0.0.0/8")));
        assert!(missing_typed("Null", json!("true")));
        assert!(!missing_typed("Null", json!("false")));
        // An empty set is missing.
        assert!(holds(json!({"Null": {"kms:Test": "true"}}), "kms:Test", Some(&[])));
    }

    #[test]
    fn multi_valued_keys() {
        let k = "kms:GrantOperations";
        let all = json!({"ForAllValues:StringLike": {k: ["Encrypt", "Generate*"]}});
        assert!(holds(all.clone(), k, Some(&["Encrypt", "GenerateDataKey"])));
        assert!(!holds(all, k, Some(&["Encrypt", "Decrypt"])));
        let any = json!({"ForAnyValue:StringEquals": {k: ["RetireGrant"]}});
        assert!(holds(any.clone(), k, Some(&["Encrypt", "RetireGrant"])));
        assert!(!holds(any, k, Some(&["Encrypt"])));
        // Plain operators on a set: positive needs some value, negated needs no value to match.
        let plain = json!({"StringEquals": {k: "Decrypt"}});
        assert!(holds(plain.clone(), k, Some(&["Encrypt", "Decrypt"])));
        assert!(!holds(plain, k, Some(&["Encrypt"])));
        let neg = json!({"StringNotEquals": {k: "Decrypt"}});
        assert!(!holds(neg.clone(), k, Some(&["Encrypt", "Decrypt"])));
        assert!(holds(neg, k, Some(&["Encrypt"])));
    }

    /// The current time is kept as a number; every operator decides on it as on its text.
    #[test]
    fn typed_time_decides_as_its_text() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200);
        let typed = RequestContext::new("111122223333", "kms:Encrypt", "*").with_current_time(t);
        let text = typed
            .clone()
            .with(keys::CURRENT_TIME, "2024-01-01T00:00:00Z")
            .with(keys::EPOCH_TIME, "1704067200");
        let cases = [
            json!({"DateEquals": {"aws:CurrentTime": "2024-01-01"}}),
            json!({"DateLessThan": {"aws:CurrentTime": "2024-01-01T00:00:01Z"}}),
            json!({"DateGreaterThanEquals": {"aws:EpochTime": 1704067200}}),
            json!({"DateNotEquals": {"aws:EpochTime": "2024-01-01T00:00:00+01:00"}}),
            json!({"StringEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}}),
            json!({"StringLike": {"aws:CurrentTime": "2024-01-*"}}),
            json!({"ForAllValues:StringNotLike": {"aws:CurrentTime": "2023-*"}}),
            json!({"StringEquals": {"aws:EpochTime": "1704067200"}}),
            json!({"NumericGreaterThan": {"aws:EpochTime": 1704067199}}),
            json!({"NumericEquals": {"aws:CurrentTime": 2024}}),
            json!({"NumericNotEquals": {"aws:CurrentTime": 2024}}),
            json!({"Bool": {"aws:EpochTime": "true"}}),
            json!({"Null": {"aws:CurrentTime": "false"}}),
        ];
        for cond in cases {
            let c = Condition::parse(&cond, "Condition").unwrap();
            assert_eq!(c.holds(&typed, Effect::Allow), c.holds(&text, Effect::Allow), "{cond}");
        }
        assert_eq!(typed.get(keys::CURRENT_TIME), text.get(keys::CURRENT_TIME));
        assert_eq!(typed.get(keys::EPOCH_TIME), text.get(keys::EPOCH_TIME));
    }

    #[test]
    fn operators_and_keys_are_anded() {
        let cond = json!({
            "StringEquals": {"kms:A": "1", "kms:B": "2"},
            "StringLike": {"kms:C": "x*"}
        });
        let c = Condition::parse(&cond, "Condition").unwrap();
        let ctx = RequestContext::new("111122223333", "kms:Encrypt", "*");
        let ok = ctx.clone().with("kms:a", "1").with("KMS:B", "2").with("kms:c", "xyz");
        assert!(c.holds(&ok, Effect::Allow));
        assert!(!c.holds(&ok.clone().with("kms:B", "3"), Effect::Allow));
        assert!(!c.holds(&ok.clone().with("kms:C", "y"), Effect::Allow));
    }
}
