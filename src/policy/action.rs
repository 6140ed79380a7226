//! `Action` / `NotAction`: action names and wildcards, compared case-insensitively as IAM does.

use serde_json::Value;

use super::document::{malformed, string_list, PolicyKind};
use super::pattern::Pattern;
use crate::error::Result;

/// A compiled `Action` or `NotAction` element.
#[derive(Debug, Clone)]
pub(crate) struct Actions {
    /// Lowercased patterns.
    patterns: Vec<Pattern>,
    /// `NotAction`: the statement covers every action except these.
    not: bool,
}

impl Actions {
    /// Parses the element found at `loc`. Key policies accept only `kms:` actions (and `*`);
    /// identity policies accept any `service:action`.
    pub(crate) fn parse(v: &Value, loc: &str, not: bool, kind: PolicyKind) -> Result<Actions> {
        let items = string_list(v, loc, "action")?;
        let mut patterns = Vec::with_capacity(items.len());
        for (item_loc, s) in items {
            if s != "*" {
                let Some((service, name)) = s.split_once(':') else {
                    return Err(malformed(&item_loc, "an action must be of the form 'kms:<Operation>'"));
                };
                if name.is_empty() || name.contains(':') || !valid_chars(name) {
                    return Err(malformed(&item_loc, "the action name is not valid"));
                }
                match kind {
                    PolicyKind::KeyPolicy if !service.eq_ignore_ascii_case("kms") => {
                        return Err(malformed(
                            &item_loc,
                            "a key policy may name only kms:* actions; this action belongs to another service",
                        ));
                    }
                    _ if service.is_empty() || !service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                        return Err(malformed(&item_loc, "the action's service prefix is not valid"));
                    }
                    _ => {}
                }
            }
            patterns.push(Pattern::compile(&s.to_lowercase()));
        }
        Ok(Actions { patterns, not })
    }

    /// Whether the statement covers `action_lc` (already lowercased).
    pub(crate) fn covers(&self, action_lc: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(action_lc)) != self.not
    }

    /// Whether this is a `NotAction` element.
    pub(crate) fn is_not(&self) -> bool {
        self.not
    }
}

fn valid_chars(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'?' | b'-' | b'_'))
}
