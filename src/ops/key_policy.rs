//! Key policies: PutKeyPolicy, GetKeyPolicy, ListKeyPolicies. Each key has exactly one policy,
//! named "default".

use super::authorize::KeyUnderCheck;
use super::paging::{self, Page};
use super::{Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::key_ref::{check_key_id_length, Accept};
use crate::policy::{self, keys as ck, Policy};

const DEFAULT_NAME: &str = "default";

impl Kms {
    pub async fn put_key_policy(
        &self,
        key_id: &str,
        policy_name: Option<&str>,
        text: String,
        bypass_lockout_check: bool,
        ev: &mut AuditEvent,
    ) -> Result<()> {
        // The parameters' constraints (ValidationException) before the rules of the service: a
        // policy name other than `default` (NotFoundException), the 32 KB quota.
        check_policy_name_syntax(policy_name)?;
        check_key_id_length("keyId", key_id)?;
        Policy::check_new_key_policy_text(&text)?;
        check_policy_name(policy_name)?;
        let access = Access::new("kms:PutKeyPolicy")
            .with(ck::BYPASS_POLICY_LOCKOUT_SAFETY_CHECK, bypass_lockout_check.to_string());
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOnly, ev).await?;
        let parsed = Policy::parse_new_key_policy(&text)?;
        if !bypass_lockout_check {
            self.lockout_check(ev, &parsed, &key.key_id, KeyUnderCheck::Existing(&key))
                .await?;
        }
        let id = key.key_id.clone();
        self.write(ev, move |s| s.put_key_policy(&id, &text), {
            let id = key.key_id.clone();
            move |k| k.policies.invalidate(&id)
        })
        .await
    }

    pub async fn get_key_policy(&self, key_id: &str, policy_name: Option<&str>, ev: &mut AuditEvent) -> Result<String> {
        check_policy_name_syntax(policy_name)?;
        check_key_id_length("keyId", key_id)?;
        check_policy_name(policy_name)?;
        let key = self
            .resolve(Access::new("kms:GetKeyPolicy"), "keyId", key_id, Accept::KeyOnly, ev)
            .await?;
        let id = key.key_id.clone();
        let stored = self.store(move |s| s.get_key_policy(&id)).await?;
        // A store made before key policies existed: its keys have AWS's default policy.
        Ok(stored.unwrap_or_else(|| policy::default_key_policy_in(&self.scope.partition, &self.scope.account)))
    }

    pub async fn list_key_policies(
        &self,
        key_id: &str,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<String>> {
        let limit = paging::limit(limit, 100, 1000)?;
        check_key_id_length("keyId", key_id)?;
        let listing = paging::Listing::new("ListKeyPolicies", &[Some(&self.scope.listed_key(key_id))]);
        let after = paging::decode_marker(&listing, marker)?;
        self.resolve(Access::new("kms:ListKeyPolicies"), "keyId", key_id, Accept::KeyOnly, ev)
            .await?;
        let names: Vec<String> = [DEFAULT_NAME]
            .into_iter()
            .filter(|n| after.as_deref().is_none_or(|a| *n > a))
            .map(String::from)
            .collect();
        Ok(paging::page(names, limit, &listing, |n| n))
    }
}

/// PolicyName's constraint: `[\w]+`, 1-128 characters (optional).
fn check_policy_name_syntax(name: Option<&str>) -> Result<()> {
    match name {
        Some(n) if n.is_empty() || n.len() > 128 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Err(KmsError::validation(format!(
                "1 validation error detected: Value '{}' at 'policyName' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: [\\w]+ (1-128 characters)",
                crate::error::quoted(n)
            )))
        }
        _ => Ok(()),
    }
}

/// The only policy is "default" (a name of the right form, checked by `check_policy_name_syntax`).
fn check_policy_name(name: Option<&str>) -> Result<()> {
    match name {
        None | Some(DEFAULT_NAME) => Ok(()),
        Some(n) => Err(KmsError::NotFound(format!(
            "No key policy named '{n}': the only key policy is 'default'"
        ))),
    }
}
