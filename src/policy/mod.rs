//! The key-policy engine: AWS KMS key policies and IAM identity policies, parsed once into a
//! compiled form and evaluated many times against a request context.
//!
//! - [`Policy`] parses and validates a document ([`Policy::parse_key_policy`],
//!   [`Policy::parse_identity_policy`]); a bad document is a MalformedPolicyDocumentException
//!   naming where and what.
//! - [`RequestContext`] holds who calls, what action on which key, and the condition keys.
//! - [`evaluate`] decides, returning a [`Decision`] that names the deciding statement;
//!   [`access_denied`] builds the AccessDeniedException for a denial.
//! - [`default_key_policy`] and [`lockout_check`] serve CreateKey and PutKeyPolicy.
//!
//! docs/POLICIES.md describes the language and the evaluation order.

mod action;
pub mod condition;
mod context;
mod default;
mod document;
mod duplicate_keys;
mod evaluate;
mod pattern;
mod principal;
mod resource;
mod variables;

#[cfg(test)]
mod tests;

pub use condition::keys;
pub use context::RequestContext;
pub use default::{default_key_policy, default_key_policy_in, lockout_check, DEFAULT_POLICY_SID, LOCKOUT_MESSAGE};
pub use document::{Effect, Policy, PolicyKind, Statement, MAX_POLICY_BYTES, VERSIONS};
pub use evaluate::{access_denied, evaluate, AllowedBy, Decision, MissingAllow, StatementRef};
pub use principal::CallerKind;
