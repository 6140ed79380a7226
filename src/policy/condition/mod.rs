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

use super::context::RequestContext;
use super::document::{describe_json_type, malformed, seg, show};
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

    pub(crate) fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Whether every clause holds for `ctx`.
    pub(crate) fn holds(&self, ctx: &RequestContext) -> bool {
        self.clauses.iter().all(|c| c.holds(ctx))
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
    fn holds(&self, ctx: &RequestContext) -> bool {
        // An empty set counts as missing.
        let request = ctx.values_lc(&self.key).filter(|v| !v.is_empty());
        if let Values::Null(expect_missing) = &self.values {
            // "Null": {"k": "true"} holds when k is absent; "false" when it is present.
            return expect_missing.iter().any(|m| *m == request.is_none());
        }
        let op = self.op;
        let Some(request) = request else {
            return match op.set {
                SetQualifier::ForAllValues => true,
                SetQualifier::ForAnyValue => op.if_exists,
                SetQualifier::None => op.if_exists || op.negated,
            };
        };
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
