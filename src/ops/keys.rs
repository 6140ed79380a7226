//! Key lifecycle: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription, EnableKey, DisableKey,
//! ScheduleKeyDeletion, CancelKeyDeletion.

use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use super::authorize::KeyUnderCheck;
use super::crypto::check_grant_tokens;
use super::material::{wrap_aad, Material, MATERIAL_LEN};
use super::paging::{self, Page};
use super::private_key::generate;
use super::{refuse_pending_deletion, Access, Kms};
use crate::audit::AuditEvent;
use crate::error::{KmsError, Result};
use crate::keys::key_ref::Accept;
use crate::keys::{names, now_secs, KeyRecord, KeySpec, KeyState, MaterialRecord, Origin, Tag};
use crate::policy::{self, keys as ck, Policy};

/// CreateKey parameters, as the caller gave them.
#[derive(Debug, Default, Clone)]
pub struct CreateKeyInput {
    pub description: String,
    pub key_usage: Option<String>,
    pub key_spec: Option<String>,
    pub customer_master_key_spec: Option<String>,
    pub origin: Option<String>,
    pub tags: Vec<Tag>,
    pub multi_region: bool,
    /// Key policy JSON; default: the account's root principal gets kms:*.
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: bool,
}

pub const FIRST_MATERIAL: u32 = 1;
const DAY: i64 = 86_400;

impl Kms {
    pub async fn create_key(&self, input: CreateKeyInput, ev: &mut AuditEvent) -> Result<KeyRecord> {
        // The parameters' constraints (ValidationException) first, as AWS checks them; the
        // service's rules (unsupported specs, tag rules, the policy quota) after.
        names::description(&input.description)?;
        if let Some(text) = &input.policy {
            Policy::check_key_policy_constraints(text)?;
        }
        names::tag_lengths(&input.tags)?;
        let spec = match (&input.key_spec, &input.customer_master_key_spec) {
            // As AWS, even when the two agree.
            (Some(_), Some(_)) => {
                return Err(KmsError::validation(
                    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. \
                     CustomerMasterKeySpec is deprecated.",
                ))
            }
            (Some(s), None) => KeySpec::parse("keySpec", s)?,
            (None, Some(s)) => KeySpec::parse("customerMasterKeySpec", s)?,
            (None, None) => KeySpec::SymmetricDefault,
        };
        let usage = spec.usage(input.key_usage.as_deref())?;
        let origin = input
            .origin
            .as_deref()
            .map(Origin::parse)
            .transpose()?
            .unwrap_or(Origin::AwsKms);
        if input.multi_region {
            return Err(KmsError::UnsupportedOperation(
                "Multi-Region keys are not supported by this server yet".into(),
            ));
        }
        names::tag_rules(&input.tags)?;
        if let Some(text) = &input.policy {
            Policy::check_key_policy_quota(text)?;
        }
        let bypass = input.bypass_policy_lockout_safety_check;
        let access = Access::new("kms:CreateKey")
            .request_tags(&input.tags)
            .with(ck::KEY_SPEC, spec.as_str())
            .with(ck::KEY_USAGE, usage.as_str())
            .with(ck::CUSTOMER_MASTER_KEY_SPEC, spec.as_str())
            .with(ck::CUSTOMER_MASTER_KEY_USAGE, usage.as_str())
            .with(ck::KEY_ORIGIN, origin.as_str())
            .with(ck::MULTI_REGION, "false")
            .with(ck::BYPASS_POLICY_LOCKOUT_SAFETY_CHECK, bypass.to_string());
        self.authorize_account(ev, &access)?;
        if !input.tags.is_empty() {
            // As AWS: tagging at creation also needs kms:TagResource (in an identity policy).
            let tagging = Access::new("kms:TagResource").request_tags(&input.tags);
            self.authorize_account(ev, &tagging)?;
        }

        let key_id = uuid::Uuid::new_v4().to_string();
        ev.key_arn = Some(self.key_arn(&key_id));
        let policy_text = input
            .policy
            .unwrap_or_else(|| policy::default_key_policy_in(&self.scope.partition, &self.scope.account));
        let key_policy = Arc::new(Policy::parse_new_key_policy(&policy_text)?);
        if !bypass {
            let key = KeyUnderCheck::New {
                spec,
                usage,
                origin,
                tags: &input.tags,
            };
            self.lockout_check(ev, &key_policy, &key_id, key).await?;
        }
        let (plain, public_key, unwrapped) = self.new_material(spec).await?;
        let aad = wrap_aad(&key_id, FIRST_MATERIAL);
        let wrapped = self.hsm.call(move |h| h.wrap_verified(&plain, &aad)).await?;
        let now = now_secs();
        let key = KeyRecord {
            key_id: key_id.clone(),
            creation_date: now,
            description: input.description,
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            key_spec: spec,
            key_usage: usage,
            origin,
            current_material: FIRST_MATERIAL,
            version: 1,
        };
        let material = MaterialRecord {
            key_id: key_id.clone(),
            material_id: FIRST_MATERIAL,
            wrapped,
            public_key,
            created: now,
        };
        let (record, tags) = (key.clone(), input.tags);
        // Taken before the key exists: a PutKeyPolicy that lands between the commit and the
        // insert below bumps it, so the creation-time policy is never cached over the new one.
        let seen = self.policies.generation(&key_id);
        // The same for the material: a DisableKey between the commit and the insert drops it.
        let cache_key = (key_id.clone(), FIRST_MATERIAL);
        let material_seen = self.materials.generation(&cache_key);
        self.audit_intent(ev).await?;
        self.store(move |s| s.create_key(&record, &material, &tags, &policy_text))
            .await?;
        self.policies.insert_if_unchanged(key_id, seen, key_policy);
        // The first use of a new key need not go back to the HSM.
        self.materials
            .insert_if_unchanged(cache_key, material_seen, Arc::new(unwrapped));
        Ok(key)
    }

    /// New key material from the HSM's RNG: raw AES and HMAC keys directly; RSA and EC key pairs
    /// from a ChaCha20 generator seeded with 256 bits of HSM randomness (PKCS#8, with the DER public key).
    /// Also the material as operations use it: a key pair's private key parsed (and checked) on
    /// the generation pool with the generation, not on a runtime worker after the key is stored.
    async fn new_material(&self, spec: KeySpec) -> Result<(Zeroizing<Vec<u8>>, Option<Vec<u8>>, Material)> {
        let raw_len = match spec {
            KeySpec::SymmetricDefault => Some(MATERIAL_LEN),
            KeySpec::Hmac224 => Some(28),
            KeySpec::Hmac256 => Some(32),
            KeySpec::Hmac384 => Some(48),
            KeySpec::Hmac512 => Some(64),
            _ => None,
        };
        if let Some(len) = raw_len {
            let plain = self.hsm.call(move |h| h.random(len)).await?;
            let material = Material::from_plain(spec, &plain)?;
            return Ok((plain, None, material));
        }
        let seed = self.hsm.call(|h| h.random(32)).await?;
        let pair = self
            .generation(move || {
                let mut seed_bytes = Zeroizing::new([0u8; 32]);
                seed_bytes.copy_from_slice(&seed);
                let pair = generate(spec, &mut ChaCha20Rng::from_seed(*seed_bytes))?;
                let material = Material::from_plain(spec, &pair.pkcs8)?;
                Ok((pair, material))
            })
            .await?;
        Ok((pair.0.pkcs8, Some(pair.0.public_key), pair.1))
    }

    pub async fn describe_key(&self, key_id: &str, grant_tokens: &[String], ev: &mut AuditEvent) -> Result<KeyRecord> {
        check_grant_tokens(grant_tokens)?;
        Ok(self
            .resolve(
                Access::new("kms:DescribeKey").grant_tokens(grant_tokens),
                "keyId",
                key_id,
                Accept::KeyOrAlias,
                ev,
            )
            .await?
            .as_ref()
            .clone())
    }

    pub async fn list_keys(
        &self,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<String>> {
        // Input first, as AWS checks it: a bad Limit or Marker is refused whoever asks.
        let limit = paging::limit(limit, 100, 1000)?;
        let listing = paging::Listing::new("ListKeys", &[]);
        let after = paging::decode_marker(&listing, marker)?;
        self.authorize_account(ev, &Access::new("kms:ListKeys"))?;
        let ids = self.store(move |s| s.list_keys(after.as_deref(), limit + 1)).await?;
        Ok(paging::page(ids, limit, &listing, |id| id))
    }

    pub async fn update_key_description(&self, key_id: &str, description: String, ev: &mut AuditEvent) -> Result<()> {
        names::description(&description)?;
        let access = Access::new("kms:UpdateKeyDescription");
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOnly, ev).await?;
        let arn = self.key_arn(&key.key_id);
        self.update_key(ev, &key.key_id, move |k| {
            refuse_pending_deletion(&arn, k)?;
            k.description = description.clone();
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn enable_key(&self, key_id: &str, ev: &mut AuditEvent) -> Result<()> {
        self.set_enabled(key_id, KeyState::Enabled, ev).await
    }

    pub async fn disable_key(&self, key_id: &str, ev: &mut AuditEvent) -> Result<()> {
        self.set_enabled(key_id, KeyState::Disabled, ev).await
    }

    async fn set_enabled(&self, key_id: &str, state: KeyState, ev: &mut AuditEvent) -> Result<()> {
        let action = if state == KeyState::Enabled {
            "kms:EnableKey"
        } else {
            "kms:DisableKey"
        };
        let key = self
            .resolve(Access::new(action), "keyId", key_id, Accept::KeyOnly, ev)
            .await?;
        let arn = self.key_arn(&key.key_id);
        self.update_key(ev, &key.key_id, move |k| {
            refuse_pending_deletion(&arn, k)?;
            k.state = state;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Returns the key as it is after scheduling (state, deletion date, window).
    pub async fn schedule_key_deletion(
        &self,
        key_id: &str,
        window: Option<i32>,
        ev: &mut AuditEvent,
    ) -> Result<KeyRecord> {
        let days = match window {
            None => 30,
            Some(d @ 7..=30) => d,
            Some(d) => {
                return Err(KmsError::validation(format!(
                    "1 validation error detected: Value '{d}' at 'pendingWindowInDays' failed to satisfy \
                     constraint: Member must have value between 7 and 30"
                )))
            }
        };
        let access = Access::new("kms:ScheduleKeyDeletion")
            .with(ck::SCHEDULE_KEY_DELETION_PENDING_WINDOW_IN_DAYS, days.to_string());
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOnly, ev).await?;
        let arn = self.key_arn(&key.key_id);
        self.update_key(ev, &key.key_id, move |k| {
            refuse_pending_deletion(&arn, k)?;
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(now_secs() + i64::from(days) * DAY);
            k.pending_window_days = Some(days);
            Ok(())
        })
        .await
    }

    pub async fn cancel_key_deletion(&self, key_id: &str, ev: &mut AuditEvent) -> Result<()> {
        let access = Access::new("kms:CancelKeyDeletion");
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOnly, ev).await?;
        let arn = self.key_arn(&key.key_id);
        self.update_key(ev, &key.key_id, move |k| {
            if k.state != KeyState::PendingDeletion {
                return Err(KmsError::InvalidState(format!("{arn} is not pending deletion.")));
            }
            // Its waiting period is over: the deletion pass destroys it at its next run (up to
            // `deletion.check_interval_seconds` later), and no cancellation may come between.
            if k.deletion_date.is_some_and(|due| due <= now_secs()) {
                return Err(KmsError::InvalidState(format!(
                    "{arn} is pending deletion and its waiting period has ended: it is being deleted."
                )));
            }
            k.state = KeyState::Disabled;
            k.deletion_date = None;
            k.pending_window_days = None;
            Ok(())
        })
        .await?;
        Ok(())
    }
}
