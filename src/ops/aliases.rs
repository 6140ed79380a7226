//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases. An alias points to exactly one key.

use std::sync::Arc;

use super::paging::{self, Page};
use super::{refuse_pending_deletion, Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::key_ref::{check_key_id_length, Accept};
use crate::keys::names::{self, MAX_ALIASES_PER_KEY};
use crate::keys::{now_secs, AliasRecord};

/// How often an alias change is decided again when a concurrent change moved the alias.
const ALIAS_CHANGE_ATTEMPTS: usize = 3;

/// What a change of alias `name` makes stale: its target, and the alias lists of `keys`.
fn stale_alias<const N: usize>(name: &str, keys: [String; N]) -> impl FnOnce(&Kms) + Send + 'static {
    let name = name.to_string();
    move |k| {
        k.aliases.invalidate(&name);
        for key_id in &keys {
            k.key_aliases.invalidate(key_id);
        }
    }
}

impl Kms {
    pub async fn create_alias(&self, name: &str, target: &str, ev: &mut AuditEvent) -> Result<()> {
        // Input first, as AWS checks it: a malformed TargetKeyId is refused before any lookup,
        // and its length (a parameter constraint) before the reserved alias names (a rule).
        check_key_id_length("targetKeyId", target)?;
        names::alias_name(name)?;
        self.scope.parse("targetKeyId", target, Accept::KeyOnly)?;
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
        self.write(
            ev,
            move |s| s.create_alias(&alias, MAX_ALIASES_PER_KEY),
            stale_alias(name, [key.key_id.clone()]),
        )
        .await
    }

    /// Moves an alias to another key of the same type (symmetric, asymmetric or HMAC) and usage,
    /// as AWS requires.
    pub async fn update_alias(&self, name: &str, target: &str, ev: &mut AuditEvent) -> Result<()> {
        // Input first, as AWS checks it: a malformed TargetKeyId is refused before any lookup,
        // and its length (a parameter constraint) before the reserved alias names (a rule).
        check_key_id_length("targetKeyId", target)?;
        names::alias_name(name)?;
        self.scope.parse("targetKeyId", target, Accept::KeyOnly)?;
        self.authorize_alias(ev, &Access::new("kms:UpdateAlias"), name)?;
        let mut current = self.stored_alias_target(name).await?;
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
        for _ in 0..ALIAS_CHANGE_ATTEMPTS {
            if let Some(old) = self.key(&current).await? {
                // As in AWS, moving an alias needs kms:UpdateAlias on both keys.
                if let Err(e) = self.authorize(ev, &Access::new("kms:UpdateAlias"), &old).await {
                    ev.key_arn = Some(self.key_arn(&old.key_id)); // the audit names the key that refused
                    return Err(e);
                }
                let (from, to) = (old.key_spec.key_type(), key.key_spec.key_type());
                if from != to || old.key_usage != key.key_usage {
                    return Err(KmsError::validation(format!(
                        "Alias {name} points to a {from} {} key; the new target must be a {from} key with the \
                         same key usage, not a {to} {} key",
                        old.key_usage.as_str(),
                        key.key_usage.as_str()
                    )));
                }
            }
            // Written only if the alias still points where it was authorized (a concurrent move
            // makes this false: decide again on the key it points to now).
            let (owned, from, to) = (name.to_string(), current.clone(), key.key_id.clone());
            let moved = self
                .write(
                    ev,
                    move |s| s.update_alias(&owned, &from, &to, now_secs(), MAX_ALIASES_PER_KEY),
                    stale_alias(name, [current.clone(), key.key_id.clone()]),
                )
                .await;
            if moved.map_err(|e| self.alias_error(name, e))? {
                return Ok(());
            }
            current = self.stored_alias_target(name).await?;
        }
        Err(self.alias_contended(name))
    }

    pub async fn delete_alias(&self, name: &str, ev: &mut AuditEvent) -> Result<()> {
        names::alias_name(name)?;
        self.authorize_alias(ev, &Access::new("kms:DeleteAlias"), name)?;
        let mut target = self.alias_target(name).await?;
        for _ in 0..ALIAS_CHANGE_ATTEMPTS {
            ev.key_arn = Some(self.key_arn(&target));
            if let Some(key) = self.key(&target).await? {
                self.authorize(ev, &Access::new("kms:DeleteAlias"), &key).await?;
            }
            let (owned, key_id) = (name.to_string(), target.clone());
            let deleted = self
                .write(
                    ev,
                    move |s| s.delete_alias(&owned, &key_id),
                    stale_alias(name, [target.clone()]),
                )
                .await;
            if deleted.map_err(|e| self.alias_error(name, e))? {
                return Ok(());
            }
            target = self.stored_alias_target(name).await?;
        }
        Err(self.alias_contended(name))
    }

    /// The key an alias points to, read from the store (not the cache): NotFoundException if none.
    async fn stored_alias_target(&self, name: &str) -> Result<String> {
        let owned = name.to_string();
        self.store(move |s| s.get_alias(&owned))
            .await?
            .map(|a| a.target_key_id)
            .ok_or_else(|| self.alias_not_found(name))
    }

    /// AWS's NotFoundException message for a missing alias; other errors as they are (the
    /// store's "no such key", when the target was deleted during the request, stays as it is).
    fn alias_error(&self, name: &str, e: KmsError) -> KmsError {
        match e {
            KmsError::NotFound(m) if m.starts_with("Alias ") => self.alias_not_found(name),
            other => other,
        }
    }

    fn alias_not_found(&self, name: &str) -> KmsError {
        KmsError::NotFound(format!("Alias {} is not found.", self.scope.alias_arn(name)))
    }

    /// ThrottlingException, which AWS SDKs retry with back-off: the request lost to concurrent
    /// changes of the alias, and a later try finds it settled. (KMSInvalidStateException, which
    /// the SDKs don't retry, would have passed the contention on to the caller's code.)
    fn alias_contended(&self, name: &str) -> KmsError {
        KmsError::Throttling(format!(
            "Alias {} kept changing while this request changed it; retry the request",
            self.scope.alias_arn(name)
        ))
    }

    /// The names of the key's aliases: the kms:ResourceAliases condition key. Read only for
    /// policies that use that key, and cached until an alias of the key changes. All of them,
    /// even past the quota (a store from before it), so a ForAllValues condition sees every one.
    pub(super) async fn resource_aliases(&self, key_id: &str) -> Result<Arc<[String]>> {
        let load = async {
            let owned = key_id.to_string();
            let aliases = self
                .store(move |s| s.list_aliases(Some(&owned), None, usize::MAX >> 1))
                .await?;
            Ok(aliases.into_iter().map(|a| a.name).collect())
        };
        self.key_aliases.get_or_load(key_id, load).await
    }

    pub async fn list_aliases(
        &self,
        key_id: Option<&str>,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<AliasRecord>> {
        // AWS ListAliases: Limit 1-100, default 50 (ListKeys allows up to 1000).
        // Input first, as AWS checks it: a bad Limit or Marker is refused whoever asks.
        let limit = paging::limit(limit, 50, 100)?;
        if let Some(k) = key_id {
            check_key_id_length("keyId", k)?;
        }
        let listed_key = key_id.map(|k| self.scope.listed_key(k));
        let listing = paging::Listing::new("ListAliases", &[listed_key.as_deref()]);
        let after = paging::decode_marker(&listing, marker)?;
        self.authorize_account(ev, &Access::new("kms:ListAliases"))?;
        let key_id = match key_id {
            Some(k) => Some(self.lookup("keyId", k, Accept::KeyOnly, ev).await?.key_id.clone()),
            None => None,
        };
        let items = self
            .store(move |s| s.list_aliases(key_id.as_deref(), after.as_deref(), limit + 1))
            .await?;
        Ok(paging::page(items, limit, &listing, |a| &a.name))
    }
}
