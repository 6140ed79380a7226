//! The deletion scheduler: destroys keys whose pending window has ended. The due date lives in the
//! store, so a restart loses nothing: the first pass runs at start.

use std::sync::Arc;

use super::Kms;
use crate::audit::AuditEvent;
use crate::error::Result;
use crate::keys::now_secs;

impl Kms {
    /// Destroys every key that is due; returns how many were destroyed.
    pub async fn delete_due_keys(&self) -> Result<usize> {
        let now = now_secs();
        let due = self.store(move |s| s.keys_due_for_deletion(now)).await?;
        let mut deleted = 0;
        for key_id in due {
            let Some(key) = self.key(&key_id).await? else { continue };
            let id = key_id.clone();
            if !self.store(move |s| s.delete_key_if_due(&id, now)).await? {
                continue;
            }
            deleted += 1;
            self.keys.invalidate(&key_id);
            for m in 1..=key.current_material {
                self.materials.invalidate(&(key_id.clone(), m));
                self.wrapped.invalidate(&(key_id.clone(), m));
            }
            self.aliases.clear(); // the key's aliases went with it; a rare event
            self.key_aliases.invalidate(&key_id);
            self.key_tags.invalidate(&key_id);
            self.policies.invalidate(&key_id);
            self.grants.invalidate(&key_id);
            tracing::info!(key_arn = %self.key_arn(&key_id), "key material destroyed: pending window ended");
        }
        self.audit_deletions().await?;
        Ok(deleted)
    }

    /// Writes the DeleteKey record of every deletion the store still lists as unaudited, then
    /// forgets it. The store lists a deletion in the deletion's own transaction, so a crash or an
    /// audit failure after it is made good by the next pass (one also runs at start).
    async fn audit_deletions(&self) -> Result<()> {
        for key_id in self.store(|s| s.deletions_to_audit()).await? {
            let mut ev = AuditEvent::new("DeleteKey", "kms-deletion-scheduler".into(), None);
            ev.key_arn = Some(self.key_arn(&key_id));
            ev.outcome = "Success";
            self.audit(&ev).await?;
            self.store(move |s| s.deletion_audited(&key_id)).await?;
        }
        Ok(())
    }
}

/// Runs `delete_due_keys` now and then every `deletion.check_interval_seconds`.
pub fn spawn_deletion_task(kms: Arc<Kms>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(kms.deletion_interval);
        loop {
            tick.tick().await;
            if let Err(e) = kms.delete_due_keys().await {
                tracing::error!(error = %e, "key deletion pass failed; will retry");
            }
        }
    })
}
