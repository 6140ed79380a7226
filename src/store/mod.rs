//! Durable metadata: keys, wrapped key materials, aliases, tags. A trait so a shared database
//! (PostgreSQL) can stand in for the embedded SQLite file when one node is not enough.
//! Calls block; callers run them on the blocking pool.

mod batch;
mod grant_params;
mod lock;
mod schema;
mod sqlite;

pub use sqlite::SqliteStore;

/// A failure of the store itself (SQLite's own error, a poisoned lock): the details go to the
/// server log, the caller gets KMSInternalException without them (they name tables, columns and
/// queries, which are no business of a client).
pub(crate) fn failure(e: impl std::fmt::Display) -> crate::error::KmsError {
    tracing::error!(error = %e, "store failure");
    crate::error::KmsError::internal("The key store failed; the server log has the details")
}

use crate::error::Result;
use crate::keys::{AliasRecord, KeyRecord, MaterialRecord, Tag};

pub trait Store: Send + Sync + 'static {
    /// Stores a new key with its first material, tags and key policy, atomically and durably.
    /// Concurrent calls may share one transaction (group commit); each still fails or succeeds alone.
    fn create_key(&self, key: &KeyRecord, material: &MaterialRecord, tags: &[Tag], policy: &str) -> Result<()>;
    /// The key's policy document (there is one, named "default").
    fn get_key_policy(&self, key_id: &str) -> Result<Option<String>>;
    fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<()>;
    fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>>;
    /// Reads, changes and writes one key in one transaction; `version` is bumped.
    /// NotFoundException when the key does not exist.
    fn update_key(&self, key_id: &str, change: &mut dyn FnMut(&mut KeyRecord) -> Result<()>) -> Result<KeyRecord>;
    /// Key ids in a stable order, strictly after `after`, at most `limit`.
    fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    fn get_material(&self, key_id: &str, material_id: u32) -> Result<Option<MaterialRecord>>;
    /// Keys pending deletion whose deletion date is at or before `now`.
    fn keys_due_for_deletion(&self, now: i64) -> Result<Vec<String>>;
    /// Destroys a key: its materials, tags, aliases and the key itself, if it is still pending
    /// deletion and due. Returns whether it was deleted.
    /// In the same transaction, the key is recorded as a deletion still to be audited.
    fn delete_key_if_due(&self, key_id: &str, now: i64) -> Result<bool>;
    /// Deleted keys whose DeleteKey audit record is not yet written (a crash or an audit failure
    /// right after the deletion leaves them here for the next pass).
    /// Each with its deletion time (seconds since the epoch).
    fn deletions_to_audit(&self) -> Result<Vec<(String, i64)>>;
    /// The deletion's audit record is durable: forget it.
    fn deletion_audited(&self, key_id: &str) -> Result<()>;
    /// Once every deletion is audited, checkpoints and truncates the write-ahead log, so deleted
    /// rows' earlier page images don't linger in it. False when a reader kept it from doing so
    /// (or deletions still wait for their records): call again at the next pass.
    fn truncate_log_after_deletions(&self) -> Result<bool>;

    /// AlreadyExistsException when the name is taken; LimitExceededException when the key already
    /// has `max_aliases`.
    fn create_alias(&self, alias: &AliasRecord, max_aliases: usize) -> Result<()>;
    /// Points an alias that points at `from_key_id` at `to_key_id`; false (nothing changed) when it
    /// points elsewhere by now. NotFoundException when the alias does not exist;
    /// LimitExceededException when the new key already has `max_aliases` others.
    fn update_alias(
        &self,
        name: &str,
        from_key_id: &str,
        to_key_id: &str,
        now: i64,
        max_aliases: usize,
    ) -> Result<bool>;
    /// Deletes an alias that points at `key_id`; false (nothing changed) when it points elsewhere
    /// by now. NotFoundException when the alias does not exist.
    fn delete_alias(&self, name: &str, key_id: &str) -> Result<bool>;
    fn get_alias(&self, name: &str) -> Result<Option<AliasRecord>>;
    /// Aliases ordered by name, strictly after `after`, optionally only those of one key.
    fn list_aliases(&self, key_id: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<AliasRecord>>;

    /// Adds or overwrites tags; TagException when the key would end up with more than `max_tags`.
    fn tag_key(&self, key_id: &str, tags: &[Tag], max_tags: usize) -> Result<()>;
    fn untag_key(&self, key_id: &str, tag_keys: &[String]) -> Result<()>;
    /// Tags ordered by key, strictly after `after`.
    fn list_tags(&self, key_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Tag>>;

    /// Stores a grant and the SHA-256 of its first token. When the grant has a name and the key
    /// already has a grant with the same name and parameters, adds the token to that grant
    /// instead and returns it (an idempotent retry). NotFoundException when the key is gone;
    /// LimitExceededException when a new grant would exceed `max_grants` on the key.
    fn create_grant(&self, grant: &GrantRecord, token_sha256: &[u8; 32], max_grants: usize) -> Result<GrantRecord>;
    /// What `create_grant` would refuse for the quota, without writing (a dry run): Ok when `grant`
    /// is a retry of a named grant or the key has room for one more.
    fn check_grant_quota(&self, grant: &GrantRecord, max_grants: usize) -> Result<()>;
    /// A key's grants to one grantee principal, ordered by grant id (an indexed read: a key may
    /// have 50,000 grants, and a request authorized by a grant needs only its caller's).
    fn grantee_grants(&self, key_id: &str, grantee: &str) -> Result<Vec<GrantRecord>>;
    fn get_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>>;
    /// Whether a token with this SHA-256 digest was issued for the grant. One primary-key lookup,
    /// however many tokens retries of a named CreateGrant issued; its timing can reveal no more
    /// than how a digest of a 256-bit secret sorts.
    fn grant_has_token(&self, grant_id: &str, token_sha256: &[u8; 32]) -> Result<bool>;
    /// A key's grants ordered by id, strictly after `after`, optionally filtered.
    fn list_grants(
        &self,
        key_id: &str,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>>;
    /// Grants (of any key) whose retiring principal is `retiring`, ordered by id.
    fn list_retirable_grants(&self, retiring: &str, after: Option<&str>, limit: usize) -> Result<Vec<GrantRecord>>;
    /// Deletes a grant and its tokens; returns its grantee, or None when the key has no such grant.
    fn delete_grant(&self, key_id: &str, grant_id: &str) -> Result<Option<String>>;
}

/// A grant: permission for a grantee principal to use a key in some operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// 64 hex characters.
    pub grant_id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub creation_date: i64,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    /// The root ARN of the account the grant was created in.
    pub issuing_account: String,
    /// Operation names without the `kms:` prefix, e.g. `Decrypt`.
    pub operations: Vec<String>,
    pub context_equals: Option<std::collections::BTreeMap<String, String>>,
    pub context_subset: Option<std::collections::BTreeMap<String, String>>,
}

impl GrantRecord {
    /// Whether `other` is the same grant request (an idempotent retry): everything but id and date.
    pub fn same_parameters(&self, other: &GrantRecord) -> bool {
        let ops = |g: &GrantRecord| {
            let mut o = g.operations.clone();
            o.sort();
            o.dedup();
            o
        };
        self.key_id == other.key_id
            && self.name == other.name
            && self.grantee_principal == other.grantee_principal
            && self.retiring_principal == other.retiring_principal
            && self.context_equals == other.context_equals
            && self.context_subset == other.context_subset
            && ops(self) == ops(other)
    }
}
