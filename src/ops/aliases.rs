//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases. An alias points to exactly one key.

use std::sync::Arc;

use super::paging::{self, Page};
use super::{refuse_pending_deletion, Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::key_ref::Accept;
use crate::keys::names::{self, MAX_ALIASES_PER_KEY};
use crate::keys::{now_secs, AliasRecord};

impl Kms {
    pub async fn create_alias(&self, name: &str, target: &str, ev: &mut AuditEvent) -> Result<()> {
        names::alias_name(name)?;
        self.authorize_alias(ev, &Access::new("kms:CreateAlias"), name)?;
        let key = self
            .resolve(
                Access::new("kms:CreateAlias"),
                "targetKeyId",
                target,
                Accept::KeyOnly,
                ev,
            )
            .await?;
        refuse_pending_deletion(&self.key_arn(&key.key_id), &key)?;
        let now = now_secs();
        let alias = AliasRecord {
            name: name.to_string(),
            target_key_id: key.key_id.clone(),
            creation_date: now,
            last_updated_date: now,
        };
        self.store(move |s| s.create_alias(&alias, MAX_ALIASES_PER_KEY)).await?;
        self.aliases.invalidate(name);
        self.key_aliases.invalidate(&key.key_id);
        Ok(())
    }

    /// Moves an alias to another key of the same key spec and usage, as AWS requires.
    pub async fn update_alias(&self, name: &str, target: &str, ev: &mut AuditEvent) -> Result<()> {
        names::alias_name(name)?;
        self.authorize_alias(ev, &Access::new("kms:UpdateAlias"), name)?;
        let owned = name.to_string();
        let current = self
            .store(move |s| s.get_alias(&owned))
            .await?
            .ok_or_else(|| KmsError::NotFound(format!("Alias {} is not found.", self.scope.alias_arn(name))))?;
        let key = self
            .resolve(
                Access::new("kms:UpdateAlias"),
                "targetKeyId",
                target,
                Accept::KeyOnly,
                ev,
            )
            .await?;
        refuse_pending_deletion(&self.key_arn(&key.key_id), &key)?;
        if let Some(old) = self.key(&current.target_key_id).await? {
            // As in AWS, moving an alias needs kms:UpdateAlias on both keys.
            if let Err(e) = self.authorize(ev, &Access::new("kms:UpdateAlias"), &old).await {
                ev.key_arn = Some(self.key_arn(&old.key_id)); // the audit names the key that refused
                return Err(e);
            }
            if old.key_spec != key.key_spec || old.key_usage != key.key_usage {
                return Err(KmsError::validation(format!(
                    "Alias {name} points to a {} {} key; the new target must have the same key spec and usage",
                    old.key_spec.as_str(),
                    old.key_usage.as_str()
                )));
            }
        }
        let (owned, key_id) = (name.to_string(), key.key_id.clone());
        let result = self
            .store(move |s| s.update_alias(&owned, &key_id, now_secs(), MAX_ALIASES_PER_KEY))
            .await;
        self.aliases.invalidate(name);
        self.key_aliases.invalidate(&current.target_key_id);
        self.key_aliases.invalidate(&key.key_id);
        result
    }

    pub async fn delete_alias(&self, name: &str, ev: &mut AuditEvent) -> Result<()> {
        names::alias_name(name)?;
        self.authorize_alias(ev, &Access::new("kms:DeleteAlias"), name)?;
        let target = self.alias_target(name).await?;
        ev.key_arn = Some(self.key_arn(&target));
        if let Some(key) = self.key(&target).await? {
            self.authorize(ev, &Access::new("kms:DeleteAlias"), &key).await?;
        }
        let owned = name.to_string();
        let result = self.store(move |s| s.delete_alias(&owned)).await;
        self.aliases.invalidate(name);
        self.key_aliases.invalidate(&target);
        result.map_err(|e| match e {
            KmsError::NotFound(_) => KmsError::NotFound(format!("Alias {} is not found.", self.scope.alias_arn(name))),
            other => other,
        })
    }

    /// The names of the key's aliases: the kms:ResourceAliases condition key. Read only for
    /// policies that use that key, and cached until an alias of the key changes.
    pub(super) async fn resource_aliases(&self, key_id: &str) -> Result<Arc<[String]>> {
        if let Some(names) = self.key_aliases.get(key_id) {
            return Ok(names);
        }
        let seen = self.key_aliases.generation(key_id);
        let owned = key_id.to_string();
        let aliases = self
            .store(move |s| s.list_aliases(Some(&owned), None, MAX_ALIASES_PER_KEY))
            .await?;
        let names: Arc<[String]> = aliases.into_iter().map(|a| a.name).collect();
        self.key_aliases
            .insert_if_unchanged(key_id.to_string(), seen, names.clone());
        Ok(names)
    }

    pub async fn list_aliases(
        &self,
        key_id: Option<&str>,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<AliasRecord>> {
        // AWS ListAliases: Limit 1-100, default 50 (ListKeys allows up to 1000).
        self.authorize_account(ev, &Access::new("kms:ListAliases"))?;
        let limit = paging::limit(limit, 50, 100)?;
        let after = paging::decode_marker(marker)?;
        let key_id = match key_id {
            Some(k) => Some(self.lookup("keyId", k, Accept::KeyOnly, ev).await?.key_id.clone()),
            None => None,
        };
        let items = self
            .store(move |s| s.list_aliases(key_id.as_deref(), after.as_deref(), limit + 1))
            .await?;
        Ok(paging::page(items, limit, |a| &a.name))
    }
}
