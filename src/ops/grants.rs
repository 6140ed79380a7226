//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, and the grant
//! check of authorization (`grant_allows`).
//!
//! A grant lets its grantee principal use one key in the listed operations, optionally only with
//! a matching encryption context. Grants are durable (the store's `grants` table) and cached per
//! key; the cache is consulted only when no policy allows a request, so the common path costs
//! nothing. A grant token is `<grant id><32 random bytes>` in hex; the store keeps only its SHA-256,
//! and a presented token is looked up by its digest (one indexed read, however many tokens a
//! retried CreateGrant issued; what the lookup's timing could tell is how a SHA-256 of a 256-bit
//! secret sorts, which helps no one find the secret).

use std::collections::BTreeMap;
use std::sync::Arc;

use ring::digest::{digest, SHA256};
use ring::rand::SecureRandom;

use super::authorize::conclude;
use super::crypto::check_grant_tokens;
use super::grant_check::{lowercased, operation_bit, CheckedGrant, ConstraintContext};
use super::paging::{self, Page};
use super::{Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::context::EncryptionContext;
use crate::keys::dry_run::DryRun;
use crate::keys::key_ref::{check_key_id_length, Accept};
use crate::keys::{now_secs, KeyRecord, KeySpec, KeyUsage};
use crate::policy::{self, keys as ck, Decision, Policy, RequestContext};
use crate::store::GrantRecord;

/// AWS's "Grants per KMS key" quota: CreateGrant beyond it is a LimitExceededException.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;

/// Every grant operation AWS KMS knows.
const ALL_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

// A grant's operations are kept as bits of a u32 (`grant_check::operation_bit`).
const _: () = assert!(ALL_OPERATIONS.len() <= 32);

const SYMMETRIC_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];
const ASYMMETRIC_ENCRYPTION_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
];
const SIGNING_OPERATIONS: &[&str] = &[
    "Sign",
    "Verify",
    "GetPublicKey",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];
const HMAC_OPERATIONS: &[&str] = &["GenerateMac", "VerifyMac", "DescribeKey", "CreateGrant", "RetireGrant"];

/// The operations whose requests carry an encryption context (with a symmetric key): the only
/// ones grant constraints apply to.
const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
];

const MAX_CONSTRAINT_PAIRS: usize = 8;
const MAX_CONSTRAINT_VALUE: usize = 384;
const MAX_NAME: usize = 256;
const MAX_PRINCIPAL: usize = 256;
const MAX_GRANT_ID: usize = 128;

/// What a grant allows: its operations and encryption context constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantScope {
    pub operations: Vec<String>,
    pub context_equals: Option<BTreeMap<String, String>>,
    pub context_subset: Option<BTreeMap<String, String>>,
}

pub struct CreateGrantInput {
    pub key_id: String,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    pub operations: Vec<String>,
    /// Empty maps are no constraint.
    pub context_equals: BTreeMap<String, String>,
    pub context_subset: BTreeMap<String, String>,
    pub grant_tokens: Vec<String>,
    pub name: Option<String>,
    pub dry_run: DryRun,
}

#[derive(Debug, Clone)]
pub struct CreatedGrant {
    pub grant_id: String,
    pub grant_token: String,
}

impl Kms {
    pub async fn create_grant(&self, input: CreateGrantInput, ev: &mut AuditEvent) -> Result<CreatedGrant> {
        check_grant_tokens(&input.grant_tokens)?;
        check_principal("granteePrincipal", &input.grantee_principal)?;
        if let Some(r) = &input.retiring_principal {
            check_principal("retiringPrincipal", r)?;
        }
        if let Some(n) = &input.name {
            check_name(n)?;
        }
        let scope = GrantScope {
            operations: check_operations(&input.operations)?,
            context_equals: check_constraint("encryptionContextEquals", input.context_equals)?,
            context_subset: check_constraint("encryptionContextSubset", input.context_subset)?,
        };
        refuse_contradicting_constraints(&scope)?;
        // As AWS: a grant's constraint context is CreateGrant's kms:EncryptionContext:* keys.
        let constraint_context = scope
            .context_equals
            .iter()
            .chain(&scope.context_subset)
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())));
        let constraint_context = EncryptionContext::new("constraints", constraint_context)?;
        let constraint_types: Vec<String> = [
            scope.context_equals.as_ref().map(|_| "EncryptionContextEquals"),
            scope.context_subset.as_ref().map(|_| "EncryptionContextSubset"),
        ]
        .into_iter()
        .flatten()
        .map(String::from)
        .collect();
        let mut access = Access::new("kms:CreateGrant")
            .with_values(ck::GRANT_OPERATIONS, scope.operations.clone())
            .with(ck::GRANTEE_PRINCIPAL, input.grantee_principal.clone())
            .with(ck::GRANT_IS_FOR_AWS_RESOURCE, "false")
            .context(&constraint_context)
            .grant_tokens(&input.grant_tokens)
            .new_grant(&scope);
        if let Some(r) = &input.retiring_principal {
            access = access.with(ck::RETIRING_PRINCIPAL, r.as_str());
        }
        if !constraint_types.is_empty() {
            access = access.with_values(ck::GRANT_CONSTRAINT_TYPE, constraint_types);
        }
        let key = self
            .resolve(access, "keyId", &input.key_id, Accept::KeyOnly, ev)
            .await?;
        // As in AWS's key state table: a disabled key takes no new grant (DisabledException),
        // though its grants can still be listed, retired and revoked.
        self.enabled(&key)?;
        let allowed = operations_for(&key);
        if let Some(bad) = scope.operations.iter().find(|o| !allowed.contains(&o.as_str())) {
            return Err(KmsError::validation(format!(
                "Grant operation {bad} is not valid for key {} ({} {}); valid operations: [{}]",
                self.key_arn(&key.key_id),
                key.key_spec.as_str(),
                key.key_usage.as_str(),
                allowed.join(", ")
            )));
        }
        if key.key_spec != KeySpec::SymmetricDefault
            && (scope.context_equals.is_some() || scope.context_subset.is_some())
        {
            return Err(KmsError::validation(format!(
                "Encryption context grant constraints are not supported for {} keys: their operations take no \
                 encryption context",
                key.key_spec.as_str()
            )));
        }

        let mut id = [0u8; 32];
        self.rng
            .fill(&mut id)
            .map_err(|_| KmsError::internal("the random number generator failed"))?;
        let record = GrantRecord {
            grant_id: hex(&id),
            key_id: key.key_id.clone(),
            name: input.name,
            creation_date: now_secs(),
            grantee_principal: input.grantee_principal,
            retiring_principal: input.retiring_principal,
            // The caller's account (AWS: "the account under which the grant was issued"), which is
            // not the key's when another account's principal creates the grant.
            issuing_account: format!(
                "arn:{}:iam::{}:root",
                self.scope.partition,
                crate::auth::principal_account(&ev.principal).unwrap_or_else(|_| self.scope.account.clone())
            ),
            operations: scope.operations,
            context_equals: scope.context_equals,
            context_subset: scope.context_subset,
        };
        if input.dry_run.is_on() {
            // The real call's store write makes this check; a dry run writes nothing.
            let asked = record.clone();
            self.store(move |s| s.check_grant_quota(&asked, MAX_GRANTS_PER_KEY))
                .await?;
        }
        input.dry_run.stop()?;
        let mut secret = [0u8; 32];
        self.rng
            .fill(&mut secret)
            .map_err(|_| KmsError::internal("the random number generator failed"))?;
        let digest = token_digest(&secret);
        let grantee = record.grantee_principal.clone();
        let stored = self
            .write(ev, move |s| s.create_grant(&record, &digest, MAX_GRANTS_PER_KEY), {
                let cached = (key.key_id.clone(), grantee);
                move |k| k.grants.invalidate(&cached)
            })
            .await
            .map_err(|e| match e {
                // Disabled since the request checked it: answered as a key disabled before.
                KmsError::Disabled(_) => KmsError::Disabled(format!("{} is disabled.", self.key_arn(&key.key_id))),
                e => e,
            })?;
        // An idempotent retry answers with the existing grant's id and a new token for it.
        let grant_token = format!("{}{}", stored.grant_id, hex(&secret));
        Ok(CreatedGrant {
            grant_id: stored.grant_id,
            grant_token,
        })
    }

    pub async fn list_grants(
        &self,
        key_id: &str,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<GrantRecord>> {
        let limit = paging::limit(limit, 50, 100)?;
        let listed_key = self.scope.listed_key(key_id);
        let listing = paging::Listing::new("ListGrants", &[Some(&listed_key), grant_id, grantee]);
        let after = paging::decode_marker(&listing, marker)?;
        if let Some(id) = grant_id {
            check_grant_id(id)?;
        }
        if let Some(p) = grantee {
            check_principal_pattern("granteePrincipal", p)?;
        }
        let key = self
            .resolve(
                // No AWS service calls here on a caller's behalf: as CreateGrant, "false".
                Access::new("kms:ListGrants").with(ck::GRANT_IS_FOR_AWS_RESOURCE, "false"),
                "keyId",
                key_id,
                Accept::KeyOnly,
                ev,
            )
            .await?;
        let (id, grant_id, grantee) = (
            key.key_id.clone(),
            grant_id.map(String::from),
            grantee.map(String::from),
        );
        let items = self
            .store(move |s| {
                s.list_grants(
                    &id,
                    grant_id.as_deref(),
                    grantee.as_deref(),
                    after.as_deref(),
                    limit + 1,
                )
            })
            .await?;
        Ok(paging::page(items, limit, &listing, |g| &g.grant_id))
    }

    pub async fn list_retirable_grants(
        &self,
        retiring: &str,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<GrantRecord>> {
        let limit = paging::limit(limit, 50, 100)?;
        let listing = paging::Listing::new("ListRetirableGrants", &[Some(retiring)]);
        let after = paging::decode_marker(&listing, marker)?;
        check_principal_pattern("retiringPrincipal", retiring)?;
        // AWS: "You must specify a principal in your AWS account". A service principal names no
        // account; its grants here are on this account's keys, so only this account lists them.
        let caller = crate::auth::principal_account(&ev.principal)
            .map_err(|_| KmsError::AccessDenied("The caller is not a principal of an account".into()))?;
        let named = account_named_by(retiring).unwrap_or(&self.scope.account);
        if caller != named {
            return Err(KmsError::AccessDenied(format!(
                "ListRetirableGrants lists the grants of a principal in the caller's account ({caller}), \
                 not of account {named}"
            )));
        }
        // As in AWS, the resource authorized is the retiring principal.
        self.authorize_principal(ev, &Access::new("kms:ListRetirableGrants"), retiring)?;
        let retiring = retiring.to_string();
        let items = self
            .store(move |s| s.list_retirable_grants(&retiring, after.as_deref(), limit + 1))
            .await?;
        Ok(paging::page(items, limit, &listing, |g| &g.grant_id))
    }

    /// Retires a grant named by its token, or by key and grant id. The grant decides who may: its
    /// retiring principal, its grantee if it includes RetireGrant, and the account it was created in.
    pub async fn retire_grant(
        &self,
        token: Option<&str>,
        key_id: Option<&str>,
        grant_id: Option<&str>,
        dry_run: DryRun,
        ev: &mut AuditEvent,
    ) -> Result<()> {
        // Every parameter's constraints before any lookup, as AWS checks them.
        if let Some(token) = token {
            check_grant_tokens(std::slice::from_ref(&token.to_string()))?;
        }
        if let Some(k) = key_id {
            check_key_id_length("keyId", k)?;
        }
        if let Some(id) = grant_id {
            check_grant_id(id)?;
        }
        let grant = match (token, key_id, grant_id) {
            (Some(token), _, _) => {
                let grant = self.grant_for_token(token).await?;
                if let Some(k) = key_id {
                    let key = self.lookup("keyId", k, Accept::KeyOnly, ev).await?;
                    if key.key_id != grant.key_id {
                        return Err(KmsError::validation("The grant token names a grant of another key"));
                    }
                }
                if grant_id.is_some_and(|id| id != grant.grant_id) {
                    return Err(KmsError::validation("The grant token names another grant than grantId"));
                }
                grant
            }
            (None, Some(k), Some(id)) => {
                let key = self.lookup("keyId", k, Accept::KeyOnly, ev).await?;
                let owned = id.to_string();
                self.store(move |s| s.get_grant(&owned))
                    .await?
                    .filter(|g| g.key_id == key.key_id)
                    .ok_or_else(|| not_found(id, &self.key_arn(&key.key_id)))?
            }
            _ => {
                return Err(KmsError::validation(
                    "RetireGrant needs either grantToken, or both keyId and grantId",
                ))
            }
        };
        let key_arn = self.key_arn(&grant.key_id);
        ev.key_arn = Some(key_arn.clone());
        let key = self
            .key(&grant.key_id)
            .await?
            .ok_or_else(|| not_found(&grant.grant_id, &key_arn))?;
        // As AWS: kms:RetireGrant is not effective in a key policy. The caller's identity policies
        // have a say: a Deny refuses whoever the grant names, and an Allow lets a user of the
        // issuing account, or of a retiring account, retire it (that account delegating).
        let ctx = self
            .policy_decision(ev, &Access::new("kms:RetireGrant"), &key)
            .await?
            .ctx;
        let delegation = self.identity_verdict(&ctx, &ev.principal);
        if let Some((_, decision @ Decision::ExplicitDeny(_))) = delegation {
            return conclude(ev, &ctx, decision);
        }
        let caller = CallerArns::of(&ev.principal);
        let may = grant.retiring_principal.as_deref().is_some_and(|r| caller.is(r))
            || (caller.is(&grant.grantee_principal) && grant.operations.iter().any(|o| o == "RetireGrant"))
            || caller.is(&grant.issuing_account)
            || delegation.is_some_and(|(account_root, decision)| {
                decision.is_allowed()
                    && (grant.issuing_account == account_root
                        || grant.retiring_principal.as_deref() == Some(&account_root))
            });
        if !may {
            ev.decision =
                Some("not the grant's retiring principal, a grantee allowed to retire it, or its account".into());
            return Err(KmsError::AccessDenied(format!(
                "User: {} is not authorized to perform: kms:RetireGrant on resource: {key_arn} because the grant \
                 does not allow it to retire the grant",
                ev.principal
            )));
        }
        dry_run.stop()?;
        self.remove_grant(ev, &grant.key_id, &grant.grant_id).await
    }

    /// What the caller's identity policies say of `ctx` (kms:RetireGrant), decided as if its own
    /// account's key policy delegated to them, with that account's root ARN; None for a caller of
    /// no account.
    fn identity_verdict(&self, ctx: &RequestContext, caller: &str) -> Option<(String, Decision)> {
        let account = crate::auth::principal_account(caller).ok()?;
        let delegating =
            Policy::parse_key_policy(&policy::default_key_policy_in(&self.scope.partition, &account)).ok()?;
        let identity = self.identity.snapshot();
        let decision = policy::evaluate(&delegating, identity.for_principal(caller), false, ctx);
        Some((format!("arn:{}:iam::{account}:root", self.scope.partition), decision))
    }

    pub async fn revoke_grant(&self, key_id: &str, grant_id: &str, dry_run: DryRun, ev: &mut AuditEvent) -> Result<()> {
        check_grant_id(grant_id)?;
        let key = self
            .resolve(
                // No AWS service calls here on a caller's behalf: as CreateGrant, "false".
                Access::new("kms:RevokeGrant").with(ck::GRANT_IS_FOR_AWS_RESOURCE, "false"),
                "keyId",
                key_id,
                Accept::KeyOnly,
                ev,
            )
            .await?;
        if dry_run.is_on() {
            // The real call's NotFoundException, without removing anything.
            let owned = grant_id.to_string();
            let grant = self.store(move |s| s.get_grant(&owned)).await?;
            if grant.is_none_or(|g| g.key_id != key.key_id) {
                return Err(not_found(grant_id, &self.key_arn(&key.key_id)));
            }
        }
        dry_run.stop()?;
        self.remove_grant(ev, &key.key_id, grant_id).await
    }

    async fn remove_grant(&self, ev: &mut AuditEvent, key_id: &str, grant_id: &str) -> Result<()> {
        let (k, g) = (key_id.to_string(), grant_id.to_string());
        let removed = self
            .write_then(ev, move |s| Ok(s.delete_grant(&k, &g)?.map(|grantee| (k, grantee))), {
                let key_id = key_id.to_string();
                move |kms, removed| match removed {
                    Ok(Some(cached)) => kms.grants.invalidate(cached),
                    Ok(None) => {}
                    // Whether it landed is unknown; which grantee it had too.
                    Err(_) => kms.grants.invalidate_group(&key_id),
                }
            })
            .await?;
        match removed {
            Some(_) => Ok(()),
            None => Err(not_found(grant_id, &self.key_arn(key_id))),
        }
    }

    /// The key's grants to `grantee`, through the cache. Single-flight: after a grant change
    /// drops the entry, concurrent requests share one store read instead of one each.
    async fn grantee_grants(&self, key_id: &str, grantee: &str) -> Result<Arc<Vec<CheckedGrant>>> {
        let cached = (key_id.to_string(), grantee.to_string());
        self.grants
            .get_or_load(&cached, async {
                let (key_id, grantee) = cached.clone();
                let grants = self.store(move |s| s.grantee_grants(&key_id, &grantee)).await?;
                Ok(Arc::new(grants.into_iter().map(checked).collect()))
            })
            .await
    }

    /// The grant a token names; InvalidGrantTokenException when it names none (any more).
    async fn grant_for_token(&self, token: &str) -> Result<GrantRecord> {
        let invalid =
            || KmsError::InvalidGrantToken("The grant token is not valid (unknown, retired or revoked)".into());
        let (grant_id, secret) = split_token(token).ok_or_else(invalid)?;
        let expected = token_digest(&secret);
        let id = grant_id.clone();
        let (grant, matched) = self
            .store(move |s| Ok((s.get_grant(&id)?, s.grant_has_token(&id, &expected)?)))
            .await?;
        match grant {
            Some(g) if matched => Ok(g),
            _ => Err(invalid()),
        }
    }

    /// The grants named by a request's GrantTokens; each must be valid.
    pub(super) async fn grants_for_tokens(&self, tokens: &[String]) -> Result<Vec<CheckedGrant>> {
        let mut grants = Vec::with_capacity(tokens.len());
        for t in tokens {
            grants.push(checked(self.grant_for_token(t).await?));
        }
        Ok(grants)
    }

    /// Whether a grant of `key` (from the store or named by a grant token) allows `access` to the
    /// caller: it names the caller as grantee, includes the operation, and its constraints match.
    pub(super) async fn grant_allows(
        &self,
        ev: &AuditEvent,
        ctx: &RequestContext,
        access: &Access<'_>,
        key: &KeyRecord,
        token_grants: &[CheckedGrant],
    ) -> Result<bool> {
        let Some(operation) = access.action.strip_prefix("kms:") else {
            return Ok(false);
        };
        let Some(bit) = operation_bit(ALL_OPERATIONS, operation) else {
            return Ok(false);
        };
        let role = ctx.caller.principal_arn();
        let caller = CallerArns {
            arn: ev.principal.to_string(),
            role,
        };
        let to_caller = self.grantee_grants(&key.key_id, &caller.arn).await?;
        let request = ConstraintContext::new(access.context);
        let to_role = match &caller.role {
            Some(role) if *role != caller.arn => Some(self.grantee_grants(&key.key_id, role).await?),
            _ => None,
        };
        let constraints_apply = key.key_spec == KeySpec::SymmetricDefault && CONTEXT_OPERATIONS.contains(&operation);
        let creating_grant = operation == "CreateGrant";
        let permits = |g: &CheckedGrant| {
            g.includes(bit)
                && if creating_grant {
                    permits_grant(g.record(), access)
                } else {
                    !constraints_apply || g.constraints_hold(&request)
                }
        };
        // The cached grants were loaded by grantee: the caller's or its role's, all of them.
        Ok(to_caller
            .iter()
            .chain(to_role.iter().flat_map(|g| g.iter()))
            .any(permits)
            || token_grants
                .iter()
                .filter(|g| g.record().key_id == key.key_id && caller.is(&g.record().grantee_principal))
                .any(permits))
    }
}

/// A grant as the cache keeps it, prepared for authorization.
fn checked(record: GrantRecord) -> CheckedGrant {
    CheckedGrant::new(record, ALL_OPERATIONS)
}

/// Whether grant `g`, which includes CreateGrant, permits the grant asked for: a subset of `g`'s
/// operations, with constraints at least as strict.
fn permits_grant(g: &GrantRecord, access: &Access<'_>) -> bool {
    let Some(new) = access.new_grant else { return false };
    new.operations.iter().all(|o| g.operations.contains(o)) && at_least_as_strict(new, g)
}

/// Equals and Subset naming one key (case-insensitively, as constraints match) with two values: no
/// request could meet both, and the policy's view of CreateGrant (one kms:EncryptionContext:<key>
/// per key) would see only one of the values, so a condition on it could be steered.
fn refuse_contradicting_constraints(scope: &GrantScope) -> Result<()> {
    let (Some(equals), Some(subset)) = (&scope.context_equals, &scope.context_subset) else {
        return Ok(());
    };
    for (k, v) in subset {
        let lower = k.to_lowercase();
        if let Some((ek, ev)) = equals.iter().find(|(ek, _)| ek.to_lowercase() == lower) {
            if ev != v {
                return Err(KmsError::validation(format!(
                    "constraints: encryptionContextEquals has '{ek}' = '{ev}' but encryptionContextSubset \
                     has '{k}' = '{v}'; no request could meet both"
                )));
            }
        }
    }
    Ok(())
}

/// A grant created under a constrained grant must be constrained at least as strictly.
fn at_least_as_strict(new: &GrantScope, parent: &GrantRecord) -> bool {
    // Keys differing only in case (refused now, but a grant stored earlier may have them) make a
    // constraint ambiguous, and lowercasing below would merge them: allow no sub-grant then.
    let maps = [
        &new.context_equals,
        &new.context_subset,
        &parent.context_equals,
        &parent.context_subset,
    ];
    if maps.into_iter().flatten().any(|m| lowercased(m).is_none()) {
        return false;
    }
    let lower = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect()
    };
    let includes = |outer: &BTreeMap<String, String>, inner: &BTreeMap<String, String>| {
        let outer = lower(outer);
        inner.iter().all(|(k, v)| outer.get(&k.to_lowercase()) == Some(v))
    };
    let equals_ok = parent
        .context_equals
        .as_ref()
        .is_none_or(|pe| new.context_equals.as_ref().is_some_and(|ne| lower(ne) == lower(pe)));
    let subset_ok = parent.context_subset.as_ref().is_none_or(|ps| {
        new.context_equals.as_ref().is_some_and(|ne| includes(ne, ps))
            || new.context_subset.as_ref().is_some_and(|ns| includes(ns, ps))
    });
    equals_ok && subset_ok
}

/// The caller's ARN, and for an assumed-role session the role's ARN (a grant to a role covers
/// its sessions).
struct CallerArns {
    arn: String,
    role: Option<String>,
}

impl CallerArns {
    fn of(principal: &str) -> CallerArns {
        let ctx = RequestContext::new(principal, "kms:RetireGrant", "*");
        CallerArns {
            arn: principal.to_string(),
            role: ctx.get(ck::PRINCIPAL_ARN).and_then(|v| v.first()).cloned(),
        }
    }

    fn is(&self, principal: &str) -> bool {
        self.arn == principal || self.role.as_deref() == Some(principal)
    }
}

/// The operations a grant for this key may include.
fn operations_for(key: &KeyRecord) -> &'static [&'static str] {
    match (key.key_spec, key.key_usage) {
        (KeySpec::SymmetricDefault, _) => SYMMETRIC_OPERATIONS,
        (spec, _) if spec.is_hmac() => HMAC_OPERATIONS,
        (_, KeyUsage::EncryptDecrypt) => ASYMMETRIC_ENCRYPTION_OPERATIONS,
        (_, KeyUsage::SignVerify) => SIGNING_OPERATIONS,
        (_, KeyUsage::GenerateVerifyMac) => HMAC_OPERATIONS,
    }
}

fn not_found(grant_id: &str, key_arn: &str) -> KmsError {
    KmsError::NotFound(format!("Grant ID {grant_id} not found for key {key_arn}"))
}

fn validation_error(field: &str, value: &str, constraint: &str) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value '{}' at '{field}' failed to satisfy constraint: {constraint}",
        crate::error::quoted(value)
    ))
}

/// Operations: non-empty, each a grant operation AWS knows; duplicates dropped, order kept.
fn check_operations(operations: &[String]) -> Result<Vec<String>> {
    if operations.is_empty() {
        return Err(KmsError::validation(
            "1 validation error detected: Value '[]' at 'operations' failed to satisfy constraint: \
             Member must have length greater than or equal to 1",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(operations.len());
    for (i, o) in operations.iter().enumerate() {
        if !ALL_OPERATIONS.contains(&o.as_str()) {
            return Err(validation_error(
                &format!("operations.{}.member", i + 1),
                o,
                &format!("Member must satisfy enum value set: [{}]", ALL_OPERATIONS.join(", ")),
            ));
        }
        if !out.contains(o) {
            out.push(o.clone());
        }
    }
    Ok(out)
}

/// An IAM principal: an account root, user, role, assumed-role session or federated user ARN
/// (the account may be any), or an AWS service principal.
/// AWS's constraint on a principal parameter: 1-256 characters of `[\w+=,.@:/-]`. All a filter
/// (ListGrants' GranteePrincipal, ListRetirableGrants' RetiringPrincipal) must meet: AWS filters by
/// it, and a value no grant can have matches nothing.
fn check_principal_pattern(field: &str, p: &str) -> Result<()> {
    let pattern_ok = !p.is_empty()
        && p.len() <= MAX_PRINCIPAL
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b));
    if !pattern_ok {
        return Err(validation_error(
            field,
            p,
            "Member must have length 1-256 and satisfy regular expression pattern: ^[\\w+=,.@:/-]+$",
        ));
    }
    Ok(())
}

/// The account a principal belongs to: an ARN's account field, or a bare account id.
fn account_named_by(principal: &str) -> Option<&str> {
    let account = match principal.splitn(6, ':').collect::<Vec<_>>().as_slice() {
        ["arn", _, _, _, account, _] => *account,
        _ => principal,
    };
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

/// A principal a grant names: the pattern, and an IAM or STS ARN or an AWS service principal.
fn check_principal(field: &str, p: &str) -> Result<()> {
    check_principal_pattern(field, p)?;
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    let valid = match parts.as_slice() {
        ["arn", partition, service, "", account, resource] => {
            !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && match *service {
                    "iam" => *resource == "root" || named(resource, "user/") || named(resource, "role/"),
                    "sts" => named(resource, "assumed-role/") || named(resource, "federated-user/"),
                    _ => false,
                }
        }
        [service] => service.ends_with(".amazonaws.com") && service.len() > ".amazonaws.com".len(),
        _ => false,
    };
    if !valid {
        return Err(KmsError::validation(format!(
            "Invalid {field} '{p}': expected an IAM principal ARN (arn:aws:iam::<account>:root|user/<name>|role/<name>, \
             arn:aws:sts::<account>:assumed-role/<role>/<session>|federated-user/<name>) or a service principal"
        )));
    }
    Ok(())
}

fn named(resource: &str, prefix: &str) -> bool {
    resource
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.ends_with('/'))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
    {
        return Err(validation_error(
            "name",
            name,
            "Member must have length 1-256 and satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ));
    }
    Ok(())
}

fn check_grant_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_GRANT_ID {
        return Err(validation_error(
            "grantId",
            id,
            "Member must have length between 1 and 128",
        ));
    }
    Ok(())
}

/// A constraint: at most 8 pairs, non-empty keys, values up to 384 characters. Empty is none.
fn check_constraint(field: &str, pairs: BTreeMap<String, String>) -> Result<Option<BTreeMap<String, String>>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    if pairs.len() > MAX_CONSTRAINT_PAIRS {
        return Err(KmsError::validation(format!(
            "constraints.{field}: at most {MAX_CONSTRAINT_PAIRS} encryption context pairs, got {}",
            pairs.len()
        )));
    }
    if pairs.keys().any(|k| k.is_empty()) {
        return Err(KmsError::validation(format!(
            "constraints.{field}: encryption context keys must not be empty"
        )));
    }
    // AWS matches constraint keys case-insensitively: keys differing only in case would be one
    // key said twice, and a sub-grant check that merges them could be made looser than its parent.
    let mut seen: BTreeMap<String, &String> = BTreeMap::new();
    for k in pairs.keys() {
        if let Some(other) = seen.insert(k.to_lowercase(), k) {
            return Err(KmsError::validation(format!(
                "constraints.{field}: encryption context keys '{other}' and '{k}' differ only in case; \
                 grant constraint keys are not case sensitive, so each key may appear once"
            )));
        }
    }
    if pairs.values().any(|v| v.chars().count() > MAX_CONSTRAINT_VALUE) {
        return Err(KmsError::validation(format!(
            "constraints.{field}: an encryption context value exceeds {MAX_CONSTRAINT_VALUE} characters"
        )));
    }
    Ok(Some(pairs))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token is the grant id (64 hex) then the secret (64 hex).
fn split_token(token: &str) -> Option<(String, [u8; 32])> {
    if token.len() != 128 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (id, secret) = token.split_at(64);
    let bytes = crate::config::hex_decode(secret)?;
    Some((id.to_ascii_lowercase(), bytes.try_into().ok()?))
}

/// SHA-256 of the token's secret: what the store keeps of a token (with the grant it belongs to,
/// so a retried CreateGrant can add a token to the existing grant).
fn token_digest(secret: &[u8; 32]) -> [u8; 32] {
    let d = digest(&SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn pairs(m: &BTreeMap<String, String>) -> Vec<(&String, &String)> {
        m.iter().collect()
    }

    /// Whether a grant with these constraints, as the cache keeps it, admits `context`.
    fn holds(
        equals: Option<&BTreeMap<String, String>>,
        subset: Option<&BTreeMap<String, String>>,
        context: &[(&String, &String)],
    ) -> bool {
        let mut grant = constrained_grant();
        grant.context_equals = equals.cloned();
        grant.context_subset = subset.cloned();
        let context = EncryptionContext::new("c", context.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        checked(grant).constraints_hold(&ConstraintContext::new(Some(&context)))
    }

    #[test]
    fn constraints_match_keys_case_insensitively() {
        let s = map(&[("Dept", "eng")]);
        let ctx = map(&[("dept", "eng"), ("other", "x")]);
        assert!(holds(None, Some(&s), &pairs(&ctx)));
        assert!(!holds(Some(&s), None, &pairs(&ctx)));
        let only = map(&[("DEPT", "eng")]);
        assert!(holds(Some(&s), Some(&s), &pairs(&only)));
        let bad = map(&[("dept", "ENG")]);
        assert!(!holds(None, Some(&s), &pairs(&bad)));
        assert!(holds(None, None, &[]));
        // {"DEPT": "x", "Dept": "eng"}: which pair a constraint means is ambiguous, so none holds;
        // without constraints the collision is no matter.
        let collide = map(&[("DEPT", "x"), ("Dept", "eng")]);
        assert!(!holds(Some(&s), None, &pairs(&collide)));
        assert!(!holds(None, Some(&s), &pairs(&collide)));
        assert!(holds(None, None, &pairs(&collide)));
    }

    #[test]
    fn equals_and_subset_may_not_contradict_each_other() {
        let scope = |e: &[(&str, &str)], sub: &[(&str, &str)]| GrantScope {
            operations: vec!["Decrypt".into()],
            context_equals: Some(map(e)),
            context_subset: Some(map(sub)),
        };
        let err = refuse_contradicting_constraints(&scope(&[("tenant", "A")], &[("Tenant", "B")])).unwrap_err();
        assert!(matches!(err, KmsError::Validation(_)), "{err:?}");
        assert!(err.to_string().contains("no request could meet both"), "{err}");
        refuse_contradicting_constraints(&scope(&[("tenant", "A")], &[("TENANT", "A")])).unwrap();
        refuse_contradicting_constraints(&scope(&[("tenant", "A")], &[("project", "B")])).unwrap();
    }

    #[test]
    fn constraint_keys_differing_only_in_case_are_refused() {
        for field in ["encryptionContextEquals", "encryptionContextSubset"] {
            let err = check_constraint(field, map(&[("Tenant", "A"), ("tenant", "A")])).unwrap_err();
            assert!(matches!(err, KmsError::Validation(_)), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(field) && msg.contains("'Tenant' and 'tenant' differ only in case"),
                "{msg}"
            );
        }
        assert!(check_constraint("f", map(&[("Tenant", "A"), ("project", "A")])).is_ok());
    }

    /// The review's trick: under a grant with Equals {"tenant":"A"}, a sub-grant with Equals
    /// {"Tenant":"A","tenant":"A"} passed as equally strict, yet admitted an extra key.
    #[test]
    fn colliding_constraint_keys_give_no_looser_sub_grant() {
        let mut parent = constrained_grant();
        parent.context_equals = Some(map(&[("tenant", "A")]));
        parent.context_subset = None;
        let sneaky = map(&[("Tenant", "A"), ("tenant", "A")]);
        let new = GrantScope {
            operations: vec!["Encrypt".into()],
            context_equals: Some(sneaky.clone()),
            context_subset: None,
        };
        assert!(check_constraint("encryptionContextEquals", sneaky.clone()).is_err());
        assert!(!at_least_as_strict(&new, &parent));
        // A grant stored before the refusal: it must not match a context with an extra key.
        let extra = map(&[("tenant", "A"), ("project", "anything")]);
        assert!(!holds(Some(&sneaky), None, &pairs(&extra)));
        assert!(!holds(parent.context_equals.as_ref(), None, &pairs(&extra)));
        assert!(holds(Some(&sneaky), None, &pairs(&map(&[("TENANT", "A")]))));
        // Nor may a sub-grant be made under such a stored grant.
        parent.context_equals = Some(sneaky);
        let plain = GrantScope {
            context_equals: Some(map(&[("tenant", "A")])),
            ..new
        };
        assert!(!at_least_as_strict(&plain, &parent));
    }

    #[test]
    fn principals_names_and_tokens() {
        assert!(check_principal("p", "arn:aws:iam::111122223333:user/bob").is_ok());
        assert!(check_principal("p", "arn:aws:sts::111122223333:assumed-role/r/s").is_ok());
        assert!(check_principal("p", "logs.amazonaws.com").is_ok());
        assert!(check_principal("p", "bob").is_err());
        assert!(check_principal("p", "arn:aws:iam::1:user/bob").is_err());
        // A filter need only fit the pattern: it matches no grant rather than being refused.
        assert!(check_principal_pattern("p", "111122223333").is_ok());
        assert!(check_principal_pattern("p", "bob smith").is_err());
        assert!(check_name("a:b/c_d-1").is_ok());
        assert!(check_name("a b").is_err());
        let secret = [7u8; 32];
        let id = hex(&[1u8; 32]);
        let (back, s) = split_token(&format!("{id}{}", hex(&secret))).unwrap();
        assert_eq!((back, s), (id, secret));
        assert!(split_token("zz").is_none());
    }

    fn constrained_grant() -> GrantRecord {
        super::super::grant_check::grant_for_test(&["Encrypt", "CreateGrant"], None, Some(map(&[("a", "1")])))
    }

    #[test]
    fn stricter_constraints() {
        let parent = constrained_grant();
        let mut new = GrantScope {
            operations: vec!["Encrypt".into()],
            context_equals: None,
            context_subset: Some(map(&[("A", "1"), ("b", "2")])),
        };
        assert!(at_least_as_strict(&new, &parent));
        new.context_subset = None;
        assert!(!at_least_as_strict(&new, &parent));
        new.context_equals = Some(map(&[("a", "1")]));
        assert!(at_least_as_strict(&new, &parent));
    }
}
