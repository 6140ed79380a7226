//! The deletion scheduler: destroys keys whose pending window has ended. The due date lives in the
//! store, so a restart loses nothing: the first pass runs at start.

use std::sync::Arc;

use super::Kms;
use crate::audit::{rfc3339_millis, AuditEvent, RequestId, LAST_RFC3339_SECOND};
use crate::error::Result;
use crate::keys::now_secs;

impl Kms {
    /// Destroys every key that is due; returns how many were destroyed.
    pub async fn delete_due_keys(&self) -> Result<usize> {
        let now = now_secs();
        let due = self.store(move |s| s.keys_due_for_deletion(now)).await?;
        let mut deleted = 0;
        for key_id in due {
            // One key that can't be deleted (a damaged row) must not hold up the others, nor the
            // audit of those already deleted: it is logged and tried again next pass.
            let id = key_id.clone();
            match self.store(move |s| s.delete_key_if_due(&id, now)).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(key_arn = %self.key_arn(&key_id), error = %e, "cannot delete a key due for deletion");
                    continue;
                }
            }
            deleted += 1;
            self.keys.invalidate(&key_id);
            // By key, not by counting to `current_material`: a damaged count can't stall this.
            self.materials.invalidate_group(&key_id);
            self.wrapped.invalidate_group(&key_id);
            self.aliases.clear(); // the key's aliases went with it; a rare event
            self.key_aliases.invalidate(&key_id);
            self.key_tags.invalidate(&key_id);
            self.policies.invalidate(&key_id);
            self.grants.invalidate_group(&key_id);
            tracing::info!(key_arn = %self.key_arn(&key_id), "key material destroyed: pending window ended");
        }
        self.audit_deletions().await?;
        Ok(deleted)
    }

    /// Writes the DeleteKey record of every deletion the store still lists as unaudited, then
    /// forgets it. The store lists a deletion in the deletion's own transaction, so a crash or an
    /// audit failure after it is made good by the next pass (one also runs at start). When
    /// forgetting fails, the next passes of this process only retry that; a crash between the
    /// record and forgetting it writes the record again at the next start: the copy has the same
    /// request id and time, so readers can tell it is one deletion.
    async fn audit_deletions(&self) -> Result<()> {
        for (key_id, deleted) in self.store(|s| s.deletions_to_audit()).await? {
            let request_id = deletion_request_id(&key_id, deleted);
            if !self.deletion_recorded(&request_id) {
                let mut ev = AuditEvent::new("DeleteKey", "kms-deletion-scheduler".into(), None);
                ev.time = deletion_time(deleted);
                ev.request_id = request_id;
                ev.key_arn = Some(self.key_arn(&key_id));
                ev.outcome = "Success";
                self.audit(&ev).await?;
                self.recorded_deletions().insert(request_id);
            }
            self.store(move |s| s.deletion_audited(&key_id)).await?;
            self.recorded_deletions().remove(&request_id);
        }
        self.store(|s| s.truncate_log_after_deletions()).await?;
        Ok(())
    }

    fn recorded_deletions(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<RequestId>> {
        self.deletions_recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deletion_recorded(&self, request_id: &RequestId) -> bool {
        self.recorded_deletions().contains(request_id)
    }
}

/// When the key was deleted, as audit records write times. Clamped to RFC 3339's range: a damaged
/// value must not panic the deletion task (the addition could overflow).
fn deletion_time(deleted: i64) -> String {
    let secs = deleted.clamp(0, LAST_RFC3339_SECOND as i64) as u64;
    rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The same UUID (version 4 in shape) for every record of one deletion: from a hash of the key
/// id and the deletion time, so a record written twice is recognisably one deletion.
fn deletion_request_id(key_id: &str, deleted: i64) -> RequestId {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("kms DeleteKey {key_id} {deleted}").as_bytes(),
    );
    let bytes: [u8; 16] = digest.as_ref()[..16].try_into().expect("SHA-256 is 32 bytes");
    RequestId::from_uuid(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// Runs `delete_due_keys` now and then every `deletion.check_interval_seconds`.
pub fn spawn_deletion_task(kms: Arc<Kms>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(kms.deletion_interval);
        loop {
            tick.tick().await;
            // Each pass in a task of its own: one that panics (a damaged store) is logged and the
            // next runs, instead of deletion stopping for good with nothing said.
            let pass = tokio::spawn({
                let kms = kms.clone();
                async move { kms.delete_due_keys().await }
            });
            match pass.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "key deletion pass failed; will retry"),
                Err(e) => tracing::error!(error = %e, "key deletion pass panicked; will retry"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_has_one_request_id_and_its_own_time() {
        let id = deletion_request_id("k1", 1_700_000_000);
        assert_eq!(
            id,
            deletion_request_id("k1", 1_700_000_000),
            "the same for every record of it"
        );
        assert_ne!(id, deletion_request_id("k2", 1_700_000_000));
        assert_ne!(id, deletion_request_id("k1", 1_700_000_001));
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(deletion_time(1_700_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn a_damaged_deletion_time_is_clamped_not_a_panic() {
        assert_eq!(deletion_time(253_402_300_800), "9999-12-31T23:59:59.000Z");
        assert_eq!(deletion_time(i64::MAX), "9999-12-31T23:59:59.000Z");
        assert_eq!(deletion_time(-5), "1970-01-01T00:00:00.000Z");
    }
}
