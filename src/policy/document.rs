//! Policy documents: JSON text -> a validated, compiled [`Policy`], or a
//! MalformedPolicyDocumentException that says where and what. Parsed once; evaluation never
//! touches JSON again.

use serde_json::{Map, Value};
use std::sync::Arc;

use super::action::Actions;
use super::condition::Condition;
use super::duplicate_keys::refuse_duplicate_keys;
use super::principal::Principals;
use super::resource::Resources;
use super::variables::refuse_policy_variables;
use crate::error::{KmsError, Result};

/// The largest policy document accepted, in bytes (AWS KMS: 32 KB).
pub const MAX_POLICY_BYTES: usize = 32 * 1024;
/// The `Policy` parameter's length constraint, in characters (a ValidationException past it).
pub const MAX_POLICY_CHARS: usize = 131_072;

/// The policy language versions IAM defines.
pub const VERSIONS: [&str; 2] = ["2012-10-17", "2008-10-17"];

/// Which kind of policy a document is; it decides what the document may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A key policy (resource-based): every statement names a `Principal` or `NotPrincipal`,
    /// and actions are `kms:` actions.
    KeyPolicy,
    /// An identity policy attached to the caller: no `Principal`; any service's actions.
    IdentityPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a statement is about.
#[derive(Debug, Clone)]
pub(crate) enum StatementPrincipal {
    /// Identity policies: the caller the policy is attached to.
    Caller,
    Principal(Principals),
    NotPrincipal(Principals),
}

/// One compiled statement.
#[derive(Debug, Clone)]
pub struct Statement {
    pub(crate) index: usize,
    pub(crate) sid: Option<String>,
    pub(crate) effect: Effect,
    pub(crate) principal: StatementPrincipal,
    pub(crate) actions: Actions,
    pub(crate) resources: Resources,
    pub(crate) condition: Condition,
}

impl Statement {
    /// The statement's position in the document's `Statement` array (0 for a single object).
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether the statement has a `Condition` element.
    pub fn has_condition(&self) -> bool {
        !self.condition.is_empty()
    }

    /// Whether the statement uses `NotAction`.
    pub fn uses_not_action(&self) -> bool {
        self.actions.is_not()
    }
}

/// A parsed, validated and compiled policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    name: String,
    kind: PolicyKind,
    version: Option<String>,
    id: Option<String>,
    pub(crate) statements: Vec<Statement>,
    /// The condition keys the statements read, lowercased, sorted, once each.
    condition_keys: Arc<[String]>,
}

impl Policy {
    /// The checks AWS KMS makes of a key policy it is given (CreateKey, PutKeyPolicy), beyond the
    /// syntax: ForAllValues on kms:EncryptionContext:<k> or aws:RequestTag/<k> is refused as
    /// OverlyPermissiveCondition (it holds for requests without the key). Not applied to stored
    /// policies, so a key whose policy was accepted before keeps working.
    pub fn check_new_key_policy(&self) -> Result<()> {
        for s in &self.statements {
            if let Some(key) = s.condition.overly_permissive_key() {
                return Err(malformed(
                    &format!("Statement[{}].Condition", s.index),
                    format!(
                        "OverlyPermissiveCondition: ForAllValues with the single-valued condition key {} \
                         also matches requests without it; use a plain operator (and Null to require the key)",
                        show(key)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A key policy given to CreateKey or PutKeyPolicy: AWS's checks of the text (over 32 KB is
    /// LimitExceededException; only tab, LF, CR and U+0020..U+00FF may appear, as AWS's pattern
    /// says), then parsed, refused if an object repeats a key, then
    /// [`Policy::check_new_key_policy`]. Stored policies are parsed with
    /// [`Policy::parse_key_policy`] and keep working.
    pub fn parse_new_key_policy(text: &str) -> Result<Policy> {
        Policy::check_new_key_policy_text(text)?;
        let policy = Policy::parse_key_policy(text)?;
        refuse_duplicate_keys(text)?;
        refuse_policy_variables(text)?;
        policy.check_new_key_policy()?;
        Ok(policy)
    }

    /// The checks of a new key policy's text that AWS makes before it looks the key up or
    /// authorizes anything. First the parameter's own constraints, then the key policy quota, so
    /// a text that is both too large and malformed is told it is malformed.
    pub fn check_new_key_policy_text(text: &str) -> Result<()> {
        Policy::check_key_policy_constraints(text)?;
        Policy::check_key_policy_quota(text)
    }

    /// The `Policy` parameter's constraints (ValidationException): 1 to 131072 characters, only
    /// tab, LF, CR and U+0020..U+00FF.
    pub fn check_key_policy_constraints(text: &str) -> Result<()> {
        const CONSTRAINT: &str =
            "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must";
        if text.is_empty() {
            return Err(KmsError::validation(format!(
                "{CONSTRAINT} have length greater than or equal to 1"
            )));
        }
        let chars = text.chars().count();
        if chars > MAX_POLICY_CHARS {
            return Err(KmsError::validation(format!(
                "{CONSTRAINT} have length less than or equal to {MAX_POLICY_CHARS} (it has {chars} characters)"
            )));
        }
        if let Some((at, c)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'))
        {
            return Err(KmsError::validation(format!(
                "{CONSTRAINT} satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+ \
                 (character {at} is U+{:04X})",
                c as u32
            )));
        }
        Ok(())
    }

    /// The key policy quota, 32 KB (LimitExceededException).
    pub fn check_key_policy_quota(text: &str) -> Result<()> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(KmsError::LimitExceeded(format!(
                "The key policy is {} bytes; a key policy may be at most {MAX_POLICY_BYTES} bytes",
                text.len()
            )));
        }
        Ok(())
    }

    /// Whether any statement has a Condition. Without one no condition key can change a decision,
    /// so a caller may skip building them (the default key policy has none).
    pub fn has_conditions(&self) -> bool {
        !self.condition_keys.is_empty()
    }

    /// The condition keys its statements read, lowercased, sorted, once each.
    pub fn condition_keys(&self) -> &Arc<[String]> {
        &self.condition_keys
    }

    /// Parses a key policy (the name used in decisions is "key policy").
    pub fn parse_key_policy(text: &str) -> Result<Policy> {
        Policy::parse(PolicyKind::KeyPolicy, "key policy", text)
    }

    /// Parses an identity policy attached to the caller; `name` identifies it in decisions
    /// (e.g. the policy's ARN or name).
    pub fn parse_identity_policy(name: &str, text: &str) -> Result<Policy> {
        let policy = Policy::parse(PolicyKind::IdentityPolicy, name, text)?;
        refuse_duplicate_keys(text)?;
        refuse_policy_variables(text)?;
        Ok(policy)
    }

    /// Parses a policy document of `kind`, enforcing the 32 KB size limit.
    pub fn parse(kind: PolicyKind, name: &str, text: &str) -> Result<Policy> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(malformed(
                "Policy",
                format!(
                    "the document is {} bytes; the maximum size is {MAX_POLICY_BYTES} bytes",
                    text.len()
                ),
            ));
        }
        if text.trim().is_empty() {
            return Err(malformed("Policy", "the document is empty"));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| malformed("Policy", format!("not valid JSON: {e}")))?;
        Policy::from_value(kind, name, &value)
    }

    /// Validates and compiles an already-decoded document (no size check).
    pub fn from_value(kind: PolicyKind, name: &str, value: &Value) -> Result<Policy> {
        let Value::Object(doc) = value else {
            return Err(malformed(
                "Policy",
                format!("the document must be a JSON object, not {}", describe_json_type(value)),
            ));
        };
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(malformed(
                    "Policy",
                    format!("unknown element {}; expected Version, Id and Statement", show(key)),
                ));
            }
        }
        let version = match doc.get("Version") {
            None => None,
            Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => Some(v.clone()),
            Some(_) => return Err(malformed("Version", "must be \"2012-10-17\" or \"2008-10-17\"")),
        };
        let id = match doc.get("Id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(malformed(
                    "Id",
                    format!("must be a string, not {}", describe_json_type(other)),
                ))
            }
        };
        let statements = match doc.get("Statement") {
            None => return Err(malformed("Policy", "missing required element Statement")),
            Some(Value::Object(s)) => vec![parse_statement(kind, s, 0, "Statement")?],
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let loc = format!("Statement[{i}]");
                    let Value::Object(s) = item else {
                        return Err(malformed(
                            &loc,
                            format!("a statement must be an object, not {}", describe_json_type(item)),
                        ));
                    };
                    out.push(parse_statement(kind, s, i, &loc)?);
                }
                out
            }
            Some(Value::Array(_)) => return Err(malformed("Statement", "must contain at least one statement")),
            Some(other) => {
                return Err(malformed(
                    "Statement",
                    format!(
                        "must be an object or an array of objects, not {}",
                        describe_json_type(other)
                    ),
                ))
            }
        };
        let mut condition_keys: Vec<String> = statements
            .iter()
            .flat_map(|s| s.condition.keys())
            .map(str::to_string)
            .collect();
        condition_keys.sort_unstable();
        condition_keys.dedup();
        Ok(Policy {
            name: name.to_string(),
            kind,
            version,
            id,
            statements,
            condition_keys: condition_keys.into(),
        })
    }

    /// The name decisions use for this policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }
}

/// Lets [`evaluate`](super::evaluate) take `&Policy`, `Arc<Policy>` and `&Arc<Policy>` alike.
impl AsRef<Policy> for Policy {
    fn as_ref(&self) -> &Policy {
        self
    }
}

fn parse_statement(kind: PolicyKind, s: &Map<String, Value>, index: usize, loc: &str) -> Result<Statement> {
    for key in s.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "NotPrincipal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(malformed(loc, format!("unknown element {}", show(key))));
        }
    }
    let sid = match s.get("Sid") {
        None => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(other) => {
            return Err(malformed(
                &format!("{loc}.Sid"),
                format!("must be a string, not {}", describe_json_type(other)),
            ))
        }
    };
    let effect = match s.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(_) => return Err(malformed(&format!("{loc}.Effect"), "must be \"Allow\" or \"Deny\"")),
        None => return Err(malformed(loc, "missing required element Effect")),
    };
    let principal = match (s.get("Principal"), s.get("NotPrincipal"), kind) {
        (Some(_), Some(_), _) => {
            return Err(malformed(
                loc,
                "a statement cannot have both Principal and NotPrincipal",
            ));
        }
        (Some(_), None, PolicyKind::IdentityPolicy) | (None, Some(_), PolicyKind::IdentityPolicy) => {
            return Err(malformed(
                loc,
                "an identity policy cannot name a Principal or NotPrincipal",
            ));
        }
        (None, None, PolicyKind::IdentityPolicy) => StatementPrincipal::Caller,
        (None, None, PolicyKind::KeyPolicy) => {
            return Err(malformed(loc, "missing required element Principal (or NotPrincipal)"));
        }
        (Some(p), None, PolicyKind::KeyPolicy) => {
            StatementPrincipal::Principal(Principals::parse(p, &format!("{loc}.Principal"))?)
        }
        (None, Some(_), PolicyKind::KeyPolicy) if effect == Effect::Allow => {
            // IAM: "NotPrincipal must be used with Effect: Deny"; with Allow it would grant
            // everyone but the listed principals.
            return Err(malformed(
                &format!("{loc}.NotPrincipal"),
                "NotPrincipal is supported only with \"Effect\": \"Deny\"",
            ));
        }
        (None, Some(p), PolicyKind::KeyPolicy) => {
            StatementPrincipal::NotPrincipal(Principals::parse(p, &format!("{loc}.NotPrincipal"))?)
        }
    };
    let actions = match (s.get("Action"), s.get("NotAction")) {
        (Some(_), Some(_)) => return Err(malformed(loc, "a statement cannot have both Action and NotAction")),
        (None, None) => return Err(malformed(loc, "missing required element Action (or NotAction)")),
        (Some(a), None) => Actions::parse(a, &format!("{loc}.Action"), false, kind)?,
        (None, Some(a)) => Actions::parse(a, &format!("{loc}.NotAction"), true, kind)?,
    };
    let resources = match (s.get("Resource"), s.get("NotResource")) {
        (Some(_), Some(_)) => {
            return Err(malformed(loc, "a statement cannot have both Resource and NotResource"));
        }
        (None, None) => return Err(malformed(loc, "missing required element Resource (or NotResource)")),
        (Some(r), None) => Resources::parse(r, &format!("{loc}.Resource"), false)?,
        (None, Some(r)) => Resources::parse(r, &format!("{loc}.NotResource"), true)?,
    };
    let condition = match s.get("Condition") {
        None => Condition::default(),
        Some(c) => Condition::parse(c, &format!("{loc}.Condition"))?,
    };
    Ok(Statement {
        index,
        sid,
        effect,
        principal,
        actions,
        resources,
        condition,
    })
}

/// An element name as a path segment (`Statement[2].Condition.StringEquals`): unquoted, cut
/// short if long, control characters replaced.
pub(crate) fn seg(name: &str) -> String {
    let quoted = show(name);
    quoted[1..quoted.len() - 1].to_string()
}

/// A MalformedPolicyDocumentException at `loc` (e.g. `Statement[2].Condition.StringEquals`).
pub(crate) fn malformed(loc: &str, what: impl std::fmt::Display) -> KmsError {
    KmsError::MalformedPolicyDocument(format!("{loc}: {what}"))
}

/// An element or key name as it may appear in a message: quoted, and cut short if long. Names
/// come from the document's structure, never its values.
pub(crate) fn show(name: &str) -> String {
    const MAX: usize = crate::error::MAX_QUOTED_CHARS;
    let mut out = String::with_capacity(name.len().min(MAX) + 5);
    out.push('"');
    for (i, c) in name.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() || c == '"' {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

pub(crate) fn describe_json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string or a non-empty array of strings, each with its location.
pub(crate) fn string_list(v: &Value, loc: &str, what: &str) -> Result<Vec<(String, String)>> {
    match v {
        Value::String(s) => Ok(vec![(loc.to_string(), s.clone())]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok((format!("{loc}[{i}]"), s.clone())),
                other => Err(malformed(
                    &format!("{loc}[{i}]"),
                    format!("each {what} must be a string, not {}", describe_json_type(other)),
                )),
            })
            .collect(),
        other => Err(malformed(
            loc,
            format!(
                "must be a string or a non-empty array of strings, not {}",
                describe_json_type(other)
            ),
        )),
    }
}
