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
            // One key that can't be read or deleted (a damaged row) must not hold up the others,
            // nor the audit of those already deleted: it is logged and tried again next pass.
            let id = key_id.clone();
            let key = match self.key(&key_id).await {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(key_arn = %self.key_arn(&key_id), error = %e, "cannot read a key due for deletion");
                    continue;
                }
            };
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
    /// audit failure after it is made good by the next pass (one also runs at start). A crash
    /// between the record and forgetting it writes the record again (at least once): the copy
    /// has the same request id and time, so readers can tell it is one deletion.
    async fn audit_deletions(&self) -> Result<()> {
        for (key_id, deleted) in self.store(|s| s.deletions_to_audit()).await? {
            let mut ev = AuditEvent::new("DeleteKey", "kms-deletion-scheduler".into(), None);
            ev.time = deletion_time(deleted);
            ev.request_id = deletion_request_id(&key_id, deleted);
            ev.key_arn = Some(self.key_arn(&key_id));
            ev.outcome = "Success";
            self.audit(&ev).await?;
            self.store(move |s| s.deletion_audited(&key_id)).await?;
        }
        self.store(|s| s.truncate_log_after_deletions()).await?;
        Ok(())
    }
}

/// When the key was deleted, as audit records write times.
fn deletion_time(deleted: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(deleted.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// The same UUID (version 4 in shape) for every record of one deletion: from a hash of the key
/// id and the deletion time, so a record written twice is recognisably one deletion.
fn deletion_request_id(key_id: &str, deleted: i64) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("kms DeleteKey {key_id} {deleted}").as_bytes(),
    );
    let bytes: [u8; 16] = digest.as_ref()[..16].try_into().expect("SHA-256 is 32 bytes");
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
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
}
