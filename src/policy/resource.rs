//! `Resource` / `NotResource`: `*` (in a key policy, "this key") or ARNs with wildcards, compared
//! case-sensitively.

use serde_json::Value;

use super::document::{malformed, string_list};
use super::pattern::Pattern;
use crate::error::Result;

/// A compiled `Resource` or `NotResource` element.
#[derive(Debug, Clone)]
pub(crate) struct Resources {
    patterns: Vec<Pattern>,
    not: bool,
}

impl Resources {
    pub(crate) fn parse(v: &Value, loc: &str, not: bool) -> Result<Resources> {
        let items = string_list(v, loc, "resource")?;
        let mut patterns = Vec::with_capacity(items.len());
        for (item_loc, s) in items {
            if s != "*" && !s.starts_with("arn:") {
                return Err(malformed(&item_loc, "a resource must be \"*\" or an ARN"));
            }
            patterns.push(Pattern::compile(&s));
        }
        Ok(Resources { patterns, not })
    }

    pub(crate) fn covers(&self, resource: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(resource)) != self.not
    }
}
