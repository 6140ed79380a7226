//! Durable metadata: keys, wrapped key materials, aliases, tags. A trait so a shared database
//! (PostgreSQL) can stand in for the embedded SQLite file when one node is not enough.
//! Calls block; callers run them on the blocking pool.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::error::Result;
use crate::keys::{AliasRecord, KeyRecord, MaterialRecord, Tag};

pub trait Store: Send + Sync + 'static {
    /// True when no key was ever created (decides whether a missing root key may be created).
    fn is_empty(&self) -> Result<bool>;

    /// Stores a new key with its first material, tags and key policy, atomically.
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
    fn delete_key_if_due(&self, key_id: &str, now: i64) -> Result<bool>;

    /// AlreadyExistsException when the name is taken.
    fn create_alias(&self, alias: &AliasRecord) -> Result<()>;
    /// Points an existing alias at another key. NotFoundException when the alias does not exist.
    fn update_alias(&self, name: &str, target_key_id: &str, now: i64) -> Result<()>;
    /// NotFoundException when the alias does not exist.
    fn delete_alias(&self, name: &str) -> Result<()>;
    fn get_alias(&self, name: &str) -> Result<Option<AliasRecord>>;
    /// Aliases ordered by name, strictly after `after`, optionally only those of one key.
    fn list_aliases(&self, key_id: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<AliasRecord>>;

    /// Adds or overwrites tags; TagException when the key would end up with more than `max_tags`.
    fn tag_key(&self, key_id: &str, tags: &[Tag], max_tags: usize) -> Result<()>;
    fn untag_key(&self, key_id: &str, tag_keys: &[String]) -> Result<()>;
    /// Tags ordered by key, strictly after `after`.
    fn list_tags(&self, key_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Tag>>;
}
