//! Authorization: every operation on a key is decided by the key's policy, the caller's identity
//! policies and grants (src/ops/grants.rs) with AWS KMS semantics (src/policy). Policies are parsed once and
//! cached; a denial names principal, action and key, and the audit record says which rule decided.

use std::borrow::Cow;
use std::sync::Arc;

use super::grants::GrantScope;
use super::Kms;
use crate::audit::AuditEvent;
use crate::auth::identity::IdentityPolicies;
use crate::error::{KmsError, Result};
use crate::keys::context::EncryptionContext;
use crate::keys::{KeyRecord, KeySpec, KeyUsage, Origin, Tag};
use crate::policy::{self, keys as ck, Decision, MissingAllow, Policy, RequestContext};

/// What a request wants to do with a key, with the condition values it brings.
pub struct Access<'a> {
    pub action: &'static str,
    pub(super) context: Option<&'a EncryptionContext>,
    conditions: Vec<(&'static str, Cow<'a, str>)>,
    multi: Vec<(&'static str, Vec<String>)>,
    /// The request's GrantTokens: each must name an existing grant.
    pub(super) grant_tokens: &'a [String],
    /// For CreateGrant: the grant asked for (a grant can only pass on what it allows).
    pub(super) new_grant: Option<&'a GrantScope>,
    /// CreateKey and TagResource: the tags asked for (aws:RequestTag/*, aws:TagKeys).
    request_tags: &'a [Tag],
    /// UntagResource: the tag keys to remove (aws:TagKeys).
    tag_keys: &'a [String],
}

impl<'a> Access<'a> {
    pub fn new(action: &'static str) -> Self {
        Access {
            action,
            context: None,
            conditions: Vec::new(),
            multi: Vec::new(),
            grant_tokens: &[],
            new_grant: None,
            request_tags: &[],
            tag_keys: &[],
        }
    }

    /// The tags a request adds: aws:RequestTag/<key> for each, and aws:TagKeys.
    pub fn request_tags(mut self, tags: &'a [Tag]) -> Self {
        self.request_tags = tags;
        self
    }

    /// The tag keys a request names (UntagResource): aws:TagKeys.
    pub fn tag_keys(mut self, keys: &'a [String]) -> Self {
        self.tag_keys = keys;
        self
    }

    pub fn context(mut self, context: &'a EncryptionContext) -> Self {
        self.context = Some(context);
        self
    }

    /// A condition key the request carries. Static values cost no copy.
    pub fn with(mut self, key: &'static str, value: impl Into<Cow<'a, str>>) -> Self {
        self.conditions.push((key, value.into()));
        self
    }

    /// A multi-valued condition key (e.g. kms:GrantOperations).
    pub fn with_values(mut self, key: &'static str, values: Vec<String>) -> Self {
        self.multi.push((key, values));
        self
    }

    /// The request's GrantTokens parameter: an unknown or retired grant's token is refused with
    /// InvalidGrantTokenException, and the grants they name count for this request.
    pub fn grant_tokens(mut self, tokens: &'a [String]) -> Self {
        self.grant_tokens = tokens;
        self
    }

    pub(super) fn new_grant(mut self, scope: &'a GrantScope) -> Self {
        self.new_grant = Some(scope);
        self
    }
}

impl Kms {
    /// Decides `access` on `key` for the caller recorded in `ev`.
    pub(super) async fn authorize(&self, ev: &mut AuditEvent, access: &Access<'_>, key: &KeyRecord) -> Result<()> {
        let token_grants = self.grants_for_tokens(access.grant_tokens).await?;
        let mut d = self.policy_decision(ev, access, key).await?;
        // Grants are consulted only when no policy allows: the common path never looks at them.
        if matches!(d.decision, Decision::ImplicitDeny(_))
            && self.grant_allows(ev, &d.ctx, access, key, &token_grants).await?
        {
            d.decision = policy::evaluate(&d.key_policy, d.identity.for_principal(&ev.principal), true, &d.ctx);
        }
        conclude(ev, &d.ctx, d.decision)
    }

    /// What the key policy and the caller's identity policies decide, grants aside, and the
    /// request context they decided on.
    pub(super) async fn policy_decision(
        &self,
        ev: &AuditEvent,
        access: &Access<'_>,
        key: &KeyRecord,
    ) -> Result<PolicyDecision> {
        let key_policy = self.key_policy(&key.key_id).await?;
        let identity = self.identity.snapshot();
        let identity_policies = identity.for_principal(&ev.principal);
        let identity_conditional = identity_policies.iter().any(|p| p.has_conditions());
        let ctx = if key_policy.has_conditions() || identity_conditional {
            // Only the condition keys these policies read (usually the key policy's, precomputed).
            let read = condition_keys_read(&key_policy, identity_policies);
            let ctx = self.request_context(ev, access, &self.key_arn(&key.key_id), Some(read.clone()));
            self.with_key_values(ctx, key, &read).await?
        } else {
            // No statement reads a condition key: don't build them (most keys, the hot path).
            RequestContext::without_conditions(&ev.principal, access.action, &self.key_arn(&key.key_id))
        };
        let decision = policy::evaluate(&key_policy, identity_policies, false, &ctx);
        Ok(PolicyDecision {
            ctx,
            decision,
            key_policy,
            identity,
        })
    }

    /// Decides an action that concerns no existing key (CreateKey, ListKeys, ListAliases,
    /// GenerateRandom): as in AWS, only the caller's identity policies can allow it; an account's
    /// root principal always may.
    pub(super) fn authorize_account(&self, ev: &mut AuditEvent, access: &Access<'_>) -> Result<()> {
        self.authorize_by_identity(ev, access, "*")
    }

    /// Decides an action whose resource is a principal (ListRetirableGrants), by identity policy.
    pub(super) fn authorize_principal(&self, ev: &mut AuditEvent, access: &Access<'_>, principal: &str) -> Result<()> {
        self.authorize_by_identity(ev, access, principal)
    }

    /// Decides an action on an alias (CreateAlias, UpdateAlias, DeleteAlias), which AWS checks on
    /// the alias as well as on its key. An alias has no policy of its own: as in AWS, only the
    /// caller's identity policies can allow it (Resource: the alias ARN); the root principal may.
    pub(super) fn authorize_alias(&self, ev: &mut AuditEvent, access: &Access<'_>, alias_name: &str) -> Result<()> {
        self.authorize_by_identity(ev, access, &self.scope.alias_arn(alias_name))
    }

    fn authorize_by_identity(&self, ev: &mut AuditEvent, access: &Access<'_>, resource: &str) -> Result<()> {
        let ctx = self
            .request_context(ev, access, resource, None)
            .with_key_account(&self.scope.account);
        let identity = self.identity.snapshot();
        let decision = match policy::evaluate(&self.account_policy, identity.for_principal(&ev.principal), false, &ctx)
        {
            // The account policy stands in for IAM's own rules, not a resource policy: what is
            // missing is always an identity policy's Allow (a caller of another account too).
            Decision::ImplicitDeny(_) => Decision::ImplicitDeny(MissingAllow::IdentityPolicy),
            decided => decided,
        };
        conclude(ev, &ctx, decision)
    }

    /// The lockout safety check: `policy` must still let the caller PutKeyPolicy on the key, decided
    /// with the key's own condition values, as a later PutKeyPolicy would be (one that does not
    /// bypass the check: it runs only then).
    pub(super) async fn lockout_check(
        &self,
        ev: &AuditEvent,
        policy: &Policy,
        key_id: &str,
        key: KeyUnderCheck<'_>,
    ) -> Result<()> {
        let access = Access::new("kms:PutKeyPolicy").with(ck::BYPASS_POLICY_LOCKOUT_SAFETY_CHECK, "false");
        let ctx = self.request_context(ev, &access, &self.key_arn(key_id), None);
        let ctx = match key {
            KeyUnderCheck::Existing(key) => self.with_key_values(ctx, key, policy.condition_keys()).await?,
            // No aliases yet: what CreateKey itself says of the key, its tags included (a later
            // PutKeyPolicy sees them as aws:ResourceTag/<k>).
            KeyUnderCheck::New {
                spec,
                usage,
                origin,
                tags,
            } => {
                let mut ctx = with_key_description(ctx, spec, usage, origin);
                add_resource_tags(&mut ctx, tags);
                ctx
            }
        };
        policy::lockout_check(policy, &ctx)
    }

    /// Adds the condition keys that describe `key` itself: its spec, usage and origin, and, when
    /// `read` (lowercased, sorted) names them, its aliases and tags, which cost a lookup.
    async fn with_key_values(&self, ctx: RequestContext, key: &KeyRecord, read: &[String]) -> Result<RequestContext> {
        let mut ctx = with_key_description(ctx, key.key_spec, key.key_usage, key.origin);
        if read
            .binary_search_by(|k| k.as_str().cmp(RESOURCE_ALIASES_LOWER))
            .is_ok()
        {
            let names = self.resource_aliases(&key.key_id).await?;
            // A key without aliases has no kms:ResourceAliases (as in AWS: the key is absent).
            if !names.is_empty() {
                ctx.set_values(ck::RESOURCE_ALIASES, names.iter().cloned());
            }
        }
        if read.iter().any(|k| k.starts_with(RESOURCE_TAG_LOWER)) {
            add_resource_tags(&mut ctx, &self.resource_tags(&key.key_id).await?);
        }
        Ok(ctx)
    }

    /// The request context: every condition key the request carries, or of those only the ones in
    /// `only` (lowercased).
    fn request_context(
        &self,
        ev: &AuditEvent,
        access: &Access<'_>,
        resource: &str,
        only: Option<std::sync::Arc<[String]>>,
    ) -> RequestContext {
        let mut ctx = with_service_values(
            RequestContext::new_reading(&ev.principal, access.action, resource, only),
            &self.scope.region,
        );
        ctx.set(ck::SECURE_TRANSPORT, if ev.secure_transport { "true" } else { "false" });
        if let Some(ip) = &ev.source_ip {
            ctx.set(ck::SOURCE_IP, ip.as_str());
        }
        if let Some(alias) = &ev.request_alias {
            ctx.set(ck::REQUEST_ALIAS, alias.as_str());
        }
        if let Some(c) = access.context {
            ctx = ctx.with_encryption_context(c.pairs());
        }
        for (k, v) in &access.conditions {
            ctx.set(k, v.as_ref());
        }
        for (k, v) in &access.multi {
            ctx.set_values(k, v.iter().cloned());
        }
        for t in access.request_tags {
            ctx.add(&format!("{}{}", ck::REQUEST_TAG_PREFIX, t.key), t.value.as_str());
        }
        if !access.request_tags.is_empty() {
            ctx.set_values(ck::TAG_KEYS, access.request_tags.iter().map(|t| t.key.as_str()));
        }
        if !access.tag_keys.is_empty() {
            ctx.set_values(ck::TAG_KEYS, access.tag_keys.iter().map(String::as_str));
        }
        ctx
    }

    /// The key's compiled policy, parsed once and cached until PutKeyPolicy changes it.
    pub(super) async fn key_policy(&self, key_id: &str) -> Result<Arc<Policy>> {
        if let Some(p) = self.policies.get(key_id) {
            return Ok(p);
        }
        let seen = self.policies.generation(key_id);
        let owned = key_id.to_string();
        let (text, key_exists) = self
            .store(move |s| match s.get_key_policy(&owned)? {
                Some(text) => Ok((Some(text), true)),
                None => Ok((None, s.get_key(&owned)?.is_some())),
            })
            .await?;
        let text = match (text, key_exists) {
            (Some(text), _) => text,
            // A store made before key policies existed: its keys have AWS's default policy.
            (None, true) => policy::default_key_policy_in(&self.scope.partition, &self.scope.account),
            // Deleted while this request was under way.
            (None, false) => {
                return Err(KmsError::NotFound(format!(
                    "Key '{}' does not exist",
                    self.key_arn(key_id)
                )))
            }
        };
        let parsed = Arc::new(Policy::parse_key_policy(&text)?);
        self.policies
            .insert_if_unchanged(key_id.to_string(), seen, parsed.clone());
        Ok(parsed)
    }
}

/// The key a lockout safety check is for.
pub(super) enum KeyUnderCheck<'a> {
    Existing(&'a KeyRecord),
    /// A key CreateKey is making, with the tags it is created with.
    New {
        spec: KeySpec,
        usage: KeyUsage,
        origin: Origin,
        tags: &'a [Tag],
    },
}

/// The key's tags as `aws:ResourceTag/<k>`.
fn add_resource_tags(ctx: &mut RequestContext, tags: &[Tag]) {
    for t in tags {
        ctx.add(&format!("{}{}", ck::RESOURCE_TAG_PREFIX, t.key), t.value.as_str());
    }
}

/// The condition keys for a key's spec, usage and origin.
fn with_key_description(ctx: RequestContext, spec: KeySpec, usage: KeyUsage, origin: Origin) -> RequestContext {
    ctx.with(ck::KEY_SPEC, spec.as_str())
        .with(ck::KEY_USAGE, usage.as_str())
        .with(ck::CUSTOMER_MASTER_KEY_SPEC, spec.as_str())
        .with(ck::CUSTOMER_MASTER_KEY_USAGE, usage.as_str())
        .with(ck::KEY_ORIGIN, origin.as_str())
        // Every key here is a single-Region key.
        .with(ck::MULTI_REGION, "false")
}

/// The global condition keys AWS sets on every request whose value here is certain: no AWS
/// service calls on a principal's behalf, callers are IAM principals (never service principals),
/// and every request is to the configured region.
fn with_service_values(ctx: RequestContext, region: &str) -> RequestContext {
    ctx.with(ck::VIA_AWS_SERVICE, "false")
        .with(ck::PRINCIPAL_IS_AWS_SERVICE, "false")
        .with(ck::REQUESTED_REGION, region)
}

/// kms:ResourceAliases and aws:ResourceTag/ as condition key lists hold them (lowercased).
const RESOURCE_ALIASES_LOWER: &str = "kms:resourcealiases";
const RESOURCE_TAG_LOWER: &str = "aws:resourcetag/";

/// The condition keys `key_policy` and `identity_policies` read (sorted, once each). Usually one
/// policy's list covers the others' and is shared as it is; otherwise the lists are merged.
fn condition_keys_read(key_policy: &Arc<Policy>, identity_policies: &[Arc<Policy>]) -> Arc<[String]> {
    let all = || {
        std::iter::once(key_policy)
            .chain(identity_policies)
            .filter(|p| p.has_conditions())
    };
    let covers = |outer: &Arc<Policy>, inner: &Arc<Policy>| {
        Arc::ptr_eq(outer, inner)
            || inner
                .condition_keys()
                .iter()
                .all(|k| outer.condition_keys().binary_search(k).is_ok())
    };
    if let Some(p) = all().find(|p| all().all(|q| covers(p, q))) {
        return p.condition_keys().clone();
    }
    let mut keys: Vec<String> = all().flat_map(|p| p.condition_keys().iter().cloned()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into()
}

/// A decision of the policies (see `Kms::policy_decision`), with what it was decided from.
pub(super) struct PolicyDecision {
    pub ctx: RequestContext,
    pub decision: Decision,
    key_policy: Arc<Policy>,
    identity: Arc<IdentityPolicies>,
}

/// Allows, or refuses with AWS's AccessDeniedException and the deciding rule in the audit record.
pub(super) fn conclude(ev: &mut AuditEvent, ctx: &RequestContext, decision: Decision) -> Result<()> {
    if decision.is_allowed() {
        return Ok(());
    }
    ev.decision = Some(decision.to_string());
    Err(policy::access_denied(ctx, &decision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyKind;

    /// A policy allowing everything under `StringEquals` on `keys` (none: no Condition).
    fn policy(kind: PolicyKind, name: &str, keys: &[&str]) -> Arc<Policy> {
        let mut statement = serde_json::json!({"Effect": "Allow", "Action": "kms:*", "Resource": "*"});
        if !keys.is_empty() {
            let pairs: serde_json::Map<_, _> = keys.iter().map(|k| (k.to_string(), "x".into())).collect();
            statement["Condition"] = serde_json::json!({ "StringEquals": pairs });
        }
        if kind == PolicyKind::KeyPolicy {
            statement["Principal"] = "*".into();
        }
        let text = serde_json::json!({ "Statement": statement }).to_string();
        Arc::new(Policy::parse(kind, name, &text).unwrap())
    }

    fn identity(name: &str, keys: &[&str]) -> Arc<Policy> {
        policy(PolicyKind::IdentityPolicy, name, keys)
    }

    /// Keys AWS always sets are set, so a policy can rely on them (a Deny on a missing key with
    /// `Bool` would never apply).
    #[test]
    fn always_present_aws_keys_are_set() {
        let text = serde_json::json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"Bool": {"aws:ViaAWSService": "false"}}},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*",
             "Condition": {"Bool": {"aws:PrincipalIsAWSService": "false"}}},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Sign", "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}}
        ]})
        .to_string();
        let kp = Policy::parse_key_policy(&text).unwrap();
        let user = "arn:aws:iam::111122223333:user/alice";
        let key = "arn:aws:kms:eu-west-1:111122223333:key/k";
        let decide = |action: &str, only: Option<Arc<[String]>>| {
            let ctx = with_service_values(RequestContext::new_reading(user, action, key, only), "eu-west-1");
            policy::evaluate(&kp, &[] as &[Policy], false, &ctx)
        };
        for only in [None, Some(kp.condition_keys().clone())] {
            for action in ["kms:Decrypt", "kms:Encrypt", "kms:Sign"] {
                let d = decide(action, only.clone());
                assert!(matches!(d, Decision::ExplicitDeny(_)), "{action}: {d}");
            }
            assert!(decide("kms:Verify", only).is_allowed());
        }
    }

    #[test]
    fn condition_keys_read_shares_a_covering_list_or_merges() {
        let key = policy(PolicyKind::KeyPolicy, "key policy", &["kms:ViaService", "aws:SourceIp"]);
        let plain = identity("plain", &[]);
        let subset = identity("subset", &["aws:sourceip"]);
        let superset = identity("superset", &["aws:SourceIp", "kms:ViaService", "kms:KeySpec"]);
        let other = identity("other", &["kms:KeyUsage"]);
        let shared = |ids: &[Arc<Policy>], from: &Arc<Policy>| {
            Arc::ptr_eq(&condition_keys_read(&key, ids), from.condition_keys())
        };
        assert!(shared(&[], &key));
        assert!(shared(&[plain.clone(), subset], &key));
        assert!(shared(&[plain, superset.clone()], &superset));
        let merged = condition_keys_read(&key, &[other, superset]);
        assert_eq!(
            &merged[..],
            ["aws:sourceip", "kms:keyspec", "kms:keyusage", "kms:viaservice"].map(String::from)
        );
    }
}
