//! Authorization as AWS KMS decides it, from the key policy, the caller's identity policies and
//! the grant hook:
//!
//! 1. An explicit `Deny` that applies, in the key policy or any identity policy, denies.
//! 2. Otherwise a key policy `Allow` naming the caller itself (its ARN, its role, `*`, or its
//!    account when the caller is that account's root user) allows; for a caller of another
//!    account, its identity policies must allow too (the root user's always do).
//! 3. Otherwise a key policy `Allow` naming the caller's account (the "Enable IAM policies"
//!    statement, or an account grant across accounts) allows if an identity policy allows.
//! 4. Otherwise a matching grant allows.
//! 5. Otherwise the request is implicitly denied.
//!
//! A caller of another account gets past step 1 only for the operations AWS allows across
//! accounts ([`CROSS_ACCOUNT_ACTIONS`]); any other action is implicitly denied to it, whatever a
//! policy or grant says ("such permissions have no effect").

use std::fmt;

use super::context::RequestContext;
use super::document::{Effect, Policy, PolicyKind, Statement, StatementPrincipal};
use super::principal::{CallerKind, Match};
use crate::error::KmsError;

/// A statement that decided (part of) a request: the policy's name and the statement's `Sid`,
/// or its index when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    pub policy: String,
    pub kind: PolicyKind,
    pub sid: Option<String>,
    pub index: usize,
}

impl StatementRef {
    fn of(policy: &Policy, s: &Statement) -> StatementRef {
        StatementRef {
            policy: policy.name().to_string(),
            kind: policy.kind(),
            sid: s.sid.clone(),
            index: s.index,
        }
    }
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sid {
            Some(sid) if !sid.is_empty() => write!(f, "{} statement \"{sid}\"", self.policy),
            _ => write!(f, "{} Statement[{}]", self.policy, self.index),
        }
    }
}

/// What allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedBy {
    /// A key policy statement naming the caller allowed it.
    KeyPolicy(StatementRef),
    /// A key policy statement allowed the caller's account (or, across accounts, the caller) and
    /// an identity policy statement allowed the caller.
    KeyAndIdentityPolicy {
        key_policy: StatementRef,
        identity_policy: StatementRef,
    },
    /// A grant for this principal and operation.
    Grant,
}

/// Which policy was missing an `Allow` when a request is implicitly denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingAllow {
    /// No key policy statement allows the caller (directly or through its account), and no grant.
    KeyPolicy,
    /// The key policy allows the caller's account (or, across accounts, the caller), but no
    /// identity policy allows the caller.
    IdentityPolicy,
}

/// The outcome of an authorization, with the statement that decided it for audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(AllowedBy),
    /// An explicit `Deny` applied; the first one found (key policy first, then identity
    /// policies in the order given).
    ExplicitDeny(StatementRef),
    ImplicitDeny(MissingAllow),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The statements that decided, for audit records (none for a grant or an implicit deny).
    pub fn statements(&self) -> Vec<&StatementRef> {
        match self {
            Decision::Allow(AllowedBy::KeyPolicy(s)) | Decision::ExplicitDeny(s) => vec![s],
            Decision::Allow(AllowedBy::KeyAndIdentityPolicy {
                key_policy,
                identity_policy,
            }) => {
                vec![key_policy, identity_policy]
            }
            Decision::Allow(AllowedBy::Grant) | Decision::ImplicitDeny(_) => vec![],
        }
    }
}

impl fmt::Display for Decision {
    /// One line for audit records, e.g. `allowed by key policy statement "Enable IAM User
    /// Permissions" and identity policy "dev" Statement[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow(AllowedBy::KeyPolicy(s)) => write!(f, "allowed by {s}"),
            Decision::Allow(AllowedBy::KeyAndIdentityPolicy {
                key_policy,
                identity_policy,
            }) => {
                write!(f, "allowed by {key_policy} and {identity_policy}")
            }
            Decision::Allow(AllowedBy::Grant) => write!(f, "allowed by a grant"),
            Decision::ExplicitDeny(s) => write!(f, "denied explicitly by {s}"),
            Decision::ImplicitDeny(MissingAllow::KeyPolicy) => write!(f, "denied: no key policy statement allows"),
            Decision::ImplicitDeny(MissingAllow::IdentityPolicy) => {
                write!(
                    f,
                    "denied: the key policy delegates to IAM but no identity policy allows"
                )
            }
        }
    }
}

/// What one statement says about one request.
fn statement_applies(s: &Statement, ctx: &RequestContext) -> Match {
    if !s.actions.covers(&ctx.action_lc) || !s.resources.covers(ctx.resource()) {
        return Match::No;
    }
    let m = match &s.principal {
        StatementPrincipal::Caller => Match::Direct,
        StatementPrincipal::Principal(p) => p.match_caller(&ctx.caller),
        StatementPrincipal::NotPrincipal(p) => {
            if p.excludes_caller(&ctx.caller) {
                Match::Direct
            } else {
                Match::No
            }
        }
    };
    // Conditions last: they are the most expensive part.
    if m == Match::No || !s.condition.holds(ctx, s.effect) {
        return Match::No;
    }
    m
}

/// A Deny statement applies to anyone it names, directly or through their account.
fn deny_in<'p>(policy: &'p Policy, ctx: &RequestContext) -> Option<&'p Statement> {
    policy
        .statements
        .iter()
        .filter(|s| s.effect == Effect::Deny)
        .find(|s| statement_applies(s, ctx) != Match::No)
}

/// The key policy's verdict before identity policies are consulted.
pub(crate) struct KeyPolicyVerdict<'p> {
    pub deny: Option<&'p Statement>,
    pub direct: Option<&'p Statement>,
    pub delegated: Option<&'p Statement>,
}

pub(crate) fn key_policy_verdict<'p>(policy: &'p Policy, ctx: &RequestContext) -> KeyPolicyVerdict<'p> {
    let mut v = KeyPolicyVerdict {
        deny: deny_in(policy, ctx),
        direct: None,
        delegated: None,
    };
    if v.deny.is_some() {
        return v;
    }
    for s in policy.statements.iter().filter(|s| s.effect == Effect::Allow) {
        match statement_applies(s, ctx) {
            Match::Direct => {
                v.direct = Some(s);
                break;
            }
            Match::Delegated if v.delegated.is_none() => v.delegated = Some(s),
            _ => {}
        }
    }
    v
}

/// The actions a principal of another account may be allowed on a key (lower case): AWS's
/// "Cross-account use: Yes" operations. Administration (policies, state, deletion, tags, aliases,
/// description, rotation) stays with the key's own account.
pub const CROSS_ACCOUNT_ACTIONS: &[&str] = &[
    "kms:creategrant",
    "kms:decrypt",
    "kms:derivesharedsecret",
    "kms:describekey",
    "kms:encrypt",
    "kms:generatedatakey",
    "kms:generatedatakeypair",
    "kms:generatedatakeypairwithoutplaintext",
    "kms:generatedatakeywithoutplaintext",
    "kms:generatemac",
    "kms:getkeyrotationstatus",
    "kms:getpublickey",
    "kms:listgrants",
    "kms:reencryptfrom",
    "kms:reencryptto",
    "kms:retiregrant",
    "kms:revokegrant",
    "kms:sign",
    "kms:verify",
    "kms:verifymac",
];

/// Decides a request.
///
/// `key_policy` is the key's policy (parsed as [`PolicyKind::KeyPolicy`]); `identity_policies`
/// are the policies attached to the caller (parsed as [`PolicyKind::IdentityPolicy`]; a key
/// policy given here is treated as an identity policy would be, its principals ignored);
/// `grant_allows` says that a grant for this principal and operation, with matching
/// constraints, exists.
///
/// `identity_policies` takes anything that iterates over policies: `&[Policy]`, `&Vec<Policy>`,
/// `&Vec<Arc<Policy>>`, `[&policy]`, `std::iter::empty::<&Policy>()`.
pub fn evaluate<I>(key_policy: &Policy, identity_policies: I, grant_allows: bool, ctx: &RequestContext) -> Decision
where
    I: IntoIterator,
    I::Item: AsRef<Policy>,
{
    let kp = key_policy_verdict(key_policy, ctx);
    if let Some(s) = kp.deny {
        return Decision::ExplicitDeny(StatementRef::of(key_policy, s));
    }
    // Identity policies: any Deny denies; remember the first Allow.
    let mut identity_allow: Option<StatementRef> = None;
    for policy in identity_policies {
        let policy = policy.as_ref();
        for s in &policy.statements {
            let applies = match policy.kind() {
                PolicyKind::IdentityPolicy => statement_applies(s, ctx) != Match::No,
                // Principals mean nothing in a policy attached to the caller.
                PolicyKind::KeyPolicy => {
                    s.actions.covers(&ctx.action_lc)
                        && s.resources.covers(ctx.resource())
                        && s.condition.holds(ctx, s.effect)
                }
            };
            if !applies {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny(StatementRef::of(policy, s)),
                Effect::Allow if identity_allow.is_none() => identity_allow = Some(StatementRef::of(policy, s)),
                Effect::Allow => {}
            }
        }
    }
    let caller = &ctx.caller;
    let same_account = caller.account.is_some() && caller.account.as_deref() == ctx.key_account();
    if caller.account.is_some() && !same_account && !CROSS_ACCOUNT_ACTIONS.contains(&ctx.action_lc.as_str()) {
        return Decision::ImplicitDeny(MissingAllow::KeyPolicy);
    }
    // The root user holds every permission of its own account; a service principal has no
    // identity policies to consult.
    let implicit_identity = matches!(caller.kind, CallerKind::Root | CallerKind::Service);

    if let Some(s) = kp.direct {
        let key_ref = StatementRef::of(key_policy, s);
        if same_account || implicit_identity {
            return Decision::Allow(AllowedBy::KeyPolicy(key_ref));
        }
        if let Some(identity_policy) = identity_allow.clone() {
            return Decision::Allow(AllowedBy::KeyAndIdentityPolicy {
                key_policy: key_ref,
                identity_policy,
            });
        }
    }
    if let (Some(s), Some(identity_policy)) = (kp.delegated, identity_allow) {
        return Decision::Allow(AllowedBy::KeyAndIdentityPolicy {
            key_policy: StatementRef::of(key_policy, s),
            identity_policy,
        });
    }
    if grant_allows {
        return Decision::Allow(AllowedBy::Grant);
    }
    if kp.direct.is_some() || kp.delegated.is_some() {
        Decision::ImplicitDeny(MissingAllow::IdentityPolicy)
    } else {
        Decision::ImplicitDeny(MissingAllow::KeyPolicy)
    }
}

/// The AccessDeniedException for a denied request, in AWS's words: it names the principal, the
/// action and the key ARN, and why, and nothing else (no condition values, no policy text).
pub fn access_denied(ctx: &RequestContext, decision: &Decision) -> KmsError {
    let why = match decision {
        Decision::ExplicitDeny(s) if s.kind == PolicyKind::KeyPolicy => {
            "with an explicit deny in a resource-based policy".to_string()
        }
        Decision::ExplicitDeny(_) => "with an explicit deny in an identity-based policy".to_string(),
        Decision::ImplicitDeny(MissingAllow::IdentityPolicy) => {
            format!("because no identity-based policy allows the {} action", ctx.action())
        }
        Decision::ImplicitDeny(MissingAllow::KeyPolicy) | Decision::Allow(_) => {
            format!("because no resource-based policy allows the {} action", ctx.action())
        }
    };
    KmsError::AccessDenied(format!(
        "User: {} is not authorized to perform: {} on resource: {} {why}",
        ctx.principal_arn(),
        ctx.action(),
        ctx.resource()
    ))
}
