//! Refuses IAM policy variables (`${aws:username}`, and the escapes `${*}`, `${?}`, `${$}`) in a
//! new policy of version 2012-10-17, where AWS substitutes them. This server doesn't, so they
//! would compare as literal text: an Allow on `"kms:EncryptionContext:owner": "${aws:username}"`
//! would let in whoever sends that text, and a Deny written the same way would be sidestepped by
//! it. Refused, the author learns it at once. Under version 2008-10-17 (or none) AWS reads them
//! literally too, so they are kept. Stored policies, accepted before this check, keep their
//! literal meaning.

use serde_json::Value;

use super::document::malformed;
use crate::error::Result;

/// MalformedPolicyDocumentException naming the first Resource, NotResource or Condition value of
/// a 2012-10-17 document that holds `${`.
pub fn refuse_policy_variables(text: &str) -> Result<()> {
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return Ok(()); // the parser's own error has been given already
    };
    if doc.get("Version").and_then(Value::as_str) != Some("2012-10-17") {
        return Ok(());
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one) => vec![one],
        None => vec![],
    };
    for (i, statement) in statements.into_iter().enumerate() {
        for element in ["Resource", "NotResource", "Condition"] {
            if let Some(value) = statement.get(element) {
                if holds_variable(value) {
                    return Err(malformed(
                        &format!("Statement[{i}].{element}"),
                        "policy variables (${...}) are not supported by this server: AWS substitutes them \
                         in a 2012-10-17 policy, and here they would compare as literal text",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn holds_variable(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(holds_variable),
        Value::Object(map) => map.values().any(holds_variable),
        _ => false,
    }
}
