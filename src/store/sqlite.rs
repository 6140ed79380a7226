//! The embedded store: one SQLite file in the data directory, WAL mode with synchronous=FULL so
//! every acknowledged write survives a crash, and secure_delete so destroyed material is overwritten.
//! CreateKey goes through a group-commit writer (`batch.rs`); every other write uses the writer's
//! connection directly, under the same mutex. Reads use a few read-only connections of their own.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::batch::GroupCommit;
use super::schema;
use super::{GrantRecord, Store};
use crate::error::{KmsError, Result};
use crate::keys::{AliasRecord, KeyRecord, KeySpec, KeyState, KeyUsage, MaterialRecord, Origin, Tag};

pub struct SqliteStore {
    /// Writes, and the group-commit writer's batches.
    conn: Arc<Mutex<Connection>>,
    /// Reads, on connections of their own: in WAL mode a reader sees every committed write and
    /// never waits for a writer, so a cache miss on the request path doesn't queue behind a
    /// write's fsync (a CreateKey batch, a deletion's checkpoint) on the writer's mutex.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    creates: GroupCommit<NewKey>,
    /// A deletion's pages may still be in the write-ahead log (`truncate_log_after_deletions`).
    /// True at open: a crash may have left one there.
    truncate_pending: AtomicBool,
}

/// Read connections: enough that reads on the blocking pool rarely wait for each other.
const READERS: usize = 4;

/// A read-only connection to the prepared store.
fn open_reader(path: &Path) -> std::result::Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {} for reading: {e}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("cannot prepare {} for reading: {e}", path.display()))?;
    Ok(conn)
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// What one CreateKey writes: owned, since it is written by the group-commit thread.
struct NewKey {
    key: KeyRecord,
    material: MaterialRecord,
    tags: Vec<Tag>,
    policy: String,
}

/// LimitExceededException when `key_id` already has `max` aliases other than `name`.
fn refuse_alias_over_limit(tx: &rusqlite::Transaction<'_>, key_id: &str, name: &str, max: usize) -> Result<()> {
    let n: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM aliases WHERE key_id = ?1 AND name <> ?2",
            [key_id, name],
            |r| r.get(0),
        )
        .map_err(db)?;
    if n as usize >= max {
        return Err(KmsError::LimitExceeded(format!(
            "Key '{key_id}' already has {n} aliases; a key can have at most {max}"
        )));
    }
    Ok(())
}

/// After a conditional alias change matched nothing: Ok(false) when the alias exists (it points
/// at another key by now), NotFoundException when it doesn't.
fn alias_moved_or_missing(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<bool> {
    let exists = tx
        .query_row("SELECT 1 FROM aliases WHERE name = ?1", [name], |_| Ok(()))
        .optional()
        .map_err(db)?
        .is_some();
    if exists {
        Ok(false)
    } else {
        Err(KmsError::NotFound(format!("Alias {name} does not exist")))
    }
}

fn db(e: rusqlite::Error) -> KmsError {
    super::failure(e)
}

impl SqliteStore {
    pub fn open(path: &Path) -> std::result::Result<SqliteStore, String> {
        let conn = Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut conn = conn;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| format!("cannot prepare {}: {e}", path.display()))?;
        schema::prepare(&mut conn).map_err(|e| format!("cannot prepare {}: {e}", path.display()))?;
        let readers = (0..READERS)
            .map(|_| open_reader(path).map(Mutex::new))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let conn = Arc::new(Mutex::new(conn));
        let creates = GroupCommit::start("store-create-key", conn.clone(), insert_key)
            .map_err(|e| format!("cannot start the store writer: {e}"))?;
        Ok(SqliteStore {
            conn,
            readers,
            next_reader: AtomicUsize::new(0),
            creates,
            truncate_pending: AtomicBool::new(true),
        })
    }

    /// Whether the store at `path` holds no key, read without preparing it (nothing created or
    /// migrated): `Kms::open` asks before it opens the HSM and prepares the store after, so that
    /// a start that fails at the HSM leaves a store an older build wrote as it was. A missing
    /// file, or one without a keys table, holds none.
    pub fn holds_no_keys(path: &Path) -> std::result::Result<bool, String> {
        if !path.exists() {
            return Ok(true);
        }
        let cannot = |e: rusqlite::Error| format!("cannot read {}: {e}", path.display());
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(cannot)?;
        let has_table: bool = conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keys')",
                [],
                |r| r.get(0),
            )
            .map_err(cannot)?;
        if !has_table {
            return Ok(true);
        }
        let any: bool = conn
            .query_row("SELECT EXISTS(SELECT 1 FROM keys)", [], |r| r.get(0))
            .map_err(cannot)?;
        Ok(!any)
    }

    /// A free read connection, or (all busy) the next one in turn.
    fn reader(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        if let Some(free) = self.readers.iter().find_map(|r| super::lock::try_lock(r)) {
            return free;
        }
        let next = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        super::lock::lock(&self.readers[next])
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        super::lock::lock(&self.conn)
    }
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecordRow> {
    Ok(KeyRecordRow {
        key_id: r.get(0)?,
        creation_date: r.get(1)?,
        description: r.get(2)?,
        state: r.get(3)?,
        deletion_date: r.get(4)?,
        pending_window_days: r.get(5)?,
        key_spec: r.get(6)?,
        key_usage: r.get(7)?,
        origin: r.get(8)?,
        current_material: r.get(9)?,
        version: r.get(10)?,
    })
}

/// A row as SQLite gives it; turned into a `KeyRecord` after the enums are checked.
struct KeyRecordRow {
    key_id: String,
    creation_date: i64,
    description: String,
    state: String,
    deletion_date: Option<i64>,
    pending_window_days: Option<i32>,
    key_spec: String,
    key_usage: String,
    origin: String,
    current_material: u32,
    version: i64,
}

impl KeyRecordRow {
    fn into_record(self) -> Result<KeyRecord> {
        Ok(KeyRecord {
            key_id: self.key_id,
            creation_date: self.creation_date,
            description: self.description,
            state: KeyState::parse(&self.state)?,
            deletion_date: self.deletion_date,
            pending_window_days: self.pending_window_days,
            key_spec: KeySpec::parse("keySpec", &self.key_spec)
                .map_err(|_| KmsError::internal("bad key spec in store"))?,
            key_usage: KeyUsage::parse(&self.key_usage).map_err(|_| KmsError::internal("bad key usage in store"))?,
            origin: Origin::parse(&self.origin).map_err(|_| KmsError::internal("bad origin in store"))?,
            current_material: self.current_material,
            version: u64::try_from(self.version).map_err(|_| KmsError::internal("bad version in store"))?,
        })
    }
}

const KEY_COLUMNS: &str = "key_id, creation_date, description, state, deletion_date, pending_window_days, \
                           key_spec, key_usage, origin, current_material, version";

/// Inside a write's transaction: the key still exists and is not pending deletion, and as it is
/// now. The request checked its state when it began, but a ScheduleKeyDeletion (or the deletion
/// itself) may have committed since; tags, aliases and grants must not land on such a key.
fn refuse_unless_changeable(tx: &rusqlite::Transaction<'_>, key_id: &str) -> Result<KeyRecord> {
    match read_key(tx, key_id)? {
        None => Err(KmsError::NotFound(format!("Key '{key_id}' does not exist"))),
        Some(k) if k.state == KeyState::PendingDeletion => {
            Err(KmsError::InvalidState(format!("Key '{key_id}' is pending deletion.")))
        }
        Some(k) => Ok(k),
    }
}

fn read_key(conn: &Connection, key_id: &str) -> Result<Option<KeyRecord>> {
    conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"))
        .and_then(|mut st| st.query_row([key_id], key_from_row).optional())
        .map_err(db)?
        .map(KeyRecordRow::into_record)
        .transpose()
}

fn write_key(conn: &Connection, k: &KeyRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            k.key_id,
            k.creation_date,
            k.description,
            k.state.as_str(),
            k.deletion_date,
            k.pending_window_days,
            k.key_spec.as_str(),
            k.key_usage.as_str(),
            k.origin.as_str(),
            k.current_material,
            k.version as i64,
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// Writes one new key; runs inside a group-commit transaction (`batch.rs`), in its own savepoint.
fn insert_key(conn: &Connection, new: &NewKey) -> Result<()> {
    let NewKey {
        key,
        material,
        tags,
        policy,
    } = new;
    write_key(conn, key)?;
    conn.prepare_cached("INSERT INTO key_policies (key_id, policy) VALUES (?1, ?2)")
        .and_then(|mut st| st.execute(params![key.key_id, policy]))
        .map_err(db)?;
    conn.prepare_cached(
        "INSERT INTO materials (key_id, material_id, wrapped, public_key, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            material.key_id,
            material.material_id,
            material.wrapped,
            material.public_key,
            material.created
        ])
    })
    .map_err(db)?;
    for t in tags {
        conn.prepare_cached("INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![key.key_id, t.key, t.value]))
            .map_err(db)?;
    }
    Ok(())
}

fn alias_from_row(r: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    Ok(AliasRecord {
        name: r.get(0)?,
        target_key_id: r.get(1)?,
        creation_date: r.get(2)?,
        last_updated_date: r.get(3)?,
    })
}

impl Store for SqliteStore {
    fn create_key(&self, key: &KeyRecord, material: &MaterialRecord, tags: &[Tag], policy: &str) -> Result<()> {
        self.creates.submit(NewKey {
            key: key.clone(),
            material: material.clone(),
            tags: tags.to_vec(),
            policy: policy.to_string(),
        })
    }

    fn get_key_policy(&self, key_id: &str) -> Result<Option<String>> {
        let conn = self.reader()?;
        conn.prepare_cached("SELECT policy FROM key_policies WHERE key_id = ?1")
            .and_then(|mut st| st.query_row([key_id], |r| r.get(0)).optional())
            .map_err(db)
    }

    fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<()> {
        let conn = self.conn()?;
        let n = conn
            .execute(
                "INSERT INTO key_policies (key_id, policy) SELECT key_id, ?2 FROM keys WHERE key_id = ?1
                 ON CONFLICT (key_id) DO UPDATE SET policy = excluded.policy",
                params![key_id, policy],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(KmsError::NotFound(format!("Key '{key_id}' does not exist")));
        }
        Ok(())
    }

    fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        read_key(&*self.reader()?, key_id)
    }

    fn update_key(&self, key_id: &str, change: &mut dyn FnMut(&mut KeyRecord) -> Result<()>) -> Result<KeyRecord> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut key =
            read_key(&tx, key_id)?.ok_or_else(|| KmsError::NotFound(format!("Key '{key_id}' does not exist")))?;
        change(&mut key)?;
        key.version = key
            .version
            .checked_add(1)
            .filter(|&v| i64::try_from(v).is_ok())
            .ok_or_else(|| KmsError::internal("bad version in store"))?;
        write_key(&tx, &key)?;
        tx.commit().map_err(db)?;
        Ok(key)
    }

    fn list_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached("SELECT key_id FROM keys WHERE key_id > ?1 ORDER BY key_id LIMIT ?2")
            .map_err(db)?;
        let rows = st
            .query_map(params![after.unwrap_or(""), limit as i64], |r| r.get(0))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(db)
    }

    fn get_material(&self, key_id: &str, material_id: u32) -> Result<Option<MaterialRecord>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached("SELECT wrapped, public_key, created FROM materials WHERE key_id = ?1 AND material_id = ?2")
            .map_err(db)?;
        st.query_row(params![key_id, material_id], |r| {
            Ok(MaterialRecord {
                key_id: key_id.to_string(),
                material_id,
                wrapped: r.get(0)?,
                public_key: r.get(1)?,
                created: r.get(2)?,
            })
        })
        .optional()
        .map_err(db)
    }

    fn keys_due_for_deletion(&self, now: i64) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached("SELECT key_id FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= ?1 AND state = 'PendingDeletion'")
            .map_err(db)?;
        let rows = st.query_map([now], |r| r.get(0)).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(db)
    }

    fn delete_key_if_due(&self, key_id: &str, now: i64) -> Result<bool> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let due = matches!(read_key(&tx, key_id)?, Some(k) if k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= now));
        if !due {
            return Ok(false);
        }
        // grant_tokens has no index on key_id: by its grants' ids, not a scan of every key's tokens.
        tx.execute(
            "DELETE FROM grant_tokens WHERE grant_id IN (SELECT grant_id FROM grants WHERE key_id = ?1)",
            [key_id],
        )
        .map_err(db)?;
        for table in [
            "materials",
            "tags",
            "aliases",
            "key_policies",
            "grants",
            "grant_counts",
            "keys",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE key_id = ?1"), [key_id])
                .map_err(db)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO deletions_to_audit (key_id, deleted) VALUES (?1, ?2)",
            params![key_id, now],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn deletions_to_audit(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached("SELECT key_id, deleted FROM deletions_to_audit ORDER BY deleted, key_id")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn deletion_audited(&self, key_id: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM deletions_to_audit WHERE key_id = ?1", [key_id])
            .map_err(db)?;
        self.truncate_pending.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn truncate_log_after_deletions(&self) -> Result<bool> {
        if !self.truncate_pending.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let conn = self.conn()?;
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM deletions_to_audit", [], |r| r.get(0))
            .map_err(db)?;
        if left > 0 {
            return Ok(false); // their records come first; the next pass truncates
        }
        // secure_delete overwrote the pages in the database file, but the write-ahead log still
        // holds their earlier images until it is checkpointed and truncated. An outside reader
        // (a backup) blocks that: give up quickly, keep the store's lock short, retry next pass.
        conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT).map_err(db)?;
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        let done = busy.map_err(db)? == 0;
        if done {
            self.truncate_pending.store(false, Ordering::Relaxed);
        } else {
            tracing::warn!("the write-ahead log could not be truncated after a key deletion (a reader holds it); retrying at the next deletion pass");
        }
        Ok(done)
    }

    fn create_alias(&self, a: &AliasRecord, max_aliases: usize) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        refuse_unless_changeable(&tx, &a.target_key_id)?;
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO aliases (name, key_id, creation_date, last_updated_date) VALUES (?1, ?2, ?3, ?4)",
                params![a.name, a.target_key_id, a.creation_date, a.last_updated_date],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                a.name
            )));
        }
        refuse_alias_over_limit(&tx, &a.target_key_id, &a.name, max_aliases)?;
        tx.commit().map_err(db)
    }

    fn update_alias(
        &self,
        name: &str,
        from_key_id: &str,
        to_key_id: &str,
        now: i64,
        max_aliases: usize,
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        refuse_unless_changeable(&tx, to_key_id)?;
        let n = tx
            .execute(
                "UPDATE aliases SET key_id = ?3, last_updated_date = ?4 WHERE name = ?1 AND key_id = ?2",
                params![name, from_key_id, to_key_id, now],
            )
            .map_err(db)?;
        if n == 0 {
            return alias_moved_or_missing(&tx, name);
        }
        refuse_alias_over_limit(&tx, to_key_id, name, max_aliases)?;
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn delete_alias(&self, name: &str, key_id: &str) -> Result<bool> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let n = tx
            .execute("DELETE FROM aliases WHERE name = ?1 AND key_id = ?2", [name, key_id])
            .map_err(db)?;
        if n == 0 {
            return alias_moved_or_missing(&tx, name);
        }
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn get_alias(&self, name: &str) -> Result<Option<AliasRecord>> {
        let conn = self.reader()?;
        conn.prepare_cached("SELECT name, key_id, creation_date, last_updated_date FROM aliases WHERE name = ?1")
            .and_then(|mut st| st.query_row([name], alias_from_row).optional())
            .map_err(db)
    }

    fn list_aliases(&self, key_id: Option<&str>, after: Option<&str>, limit: usize) -> Result<Vec<AliasRecord>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached(
                "SELECT name, key_id, creation_date, last_updated_date FROM aliases
                 WHERE (?1 IS NULL OR key_id = ?1) AND name > ?2 ORDER BY name LIMIT ?3",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![key_id, after.unwrap_or(""), limit as i64], alias_from_row)
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn tag_key(&self, key_id: &str, tags: &[Tag], max_tags: usize) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        refuse_unless_changeable(&tx, key_id)?;
        for t in tags {
            tx.execute(
                "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                params![key_id, t.key, t.value],
            )
            .map_err(db)?;
        }
        let n: i64 = tx
            .query_row("SELECT COUNT(*) FROM tags WHERE key_id = ?1", [key_id], |r| r.get(0))
            .map_err(db)?;
        if n as usize > max_tags {
            return Err(KmsError::Tag(format!(
                "The key would have {n} tags; a key can have at most {max_tags}"
            )));
        }
        tx.commit().map_err(db)
    }

    fn untag_key(&self, key_id: &str, tag_keys: &[String]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        refuse_unless_changeable(&tx, key_id)?;
        // Only the key's own tags (50 at most) are looked for among the names asked (up to 1000,
        // `names::MAX_UNTAG_KEYS`): not one DELETE per name while the write lock is held.
        let asked: std::collections::HashSet<&str> = tag_keys.iter().map(String::as_str).collect();
        let present = tx
            .prepare_cached("SELECT tag_key FROM tags WHERE key_id = ?1")
            .map_err(db)?
            .query_map(params![key_id], |r| r.get::<_, String>(0))
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(db)?;
        for k in present.iter().filter(|k| asked.contains(k.as_str())) {
            tx.execute(
                "DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2",
                params![key_id, k],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn list_tags(&self, key_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Tag>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached(
                "SELECT tag_key, tag_value FROM tags WHERE key_id = ?1 AND tag_key > ?2 ORDER BY tag_key LIMIT ?3",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![key_id, after.unwrap_or(""), limit as i64], |r| {
                Ok(Tag {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn create_grant(&self, g: &GrantRecord, token_sha256: &[u8; 32], max_grants: usize) -> Result<GrantRecord> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        // Checked when the request began; a DisableKey may have committed since.
        if refuse_unless_changeable(&tx, &g.key_id)?.state == KeyState::Disabled {
            return Err(KmsError::Disabled(format!("Key '{}' is disabled.", g.key_id)));
        }
        let grant = match named_retry(&tx, g)? {
            Some(found) => {
                make_room_for_a_token(&tx, &found.grant_id)?;
                found
            }
            None => {
                refuse_over_quota(&tx, &g.key_id, max_grants)?;
                tx.execute(
                    &format!(
                        "INSERT INTO grants ({GRANT_COLUMNS}, params) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                    ),
                    params![
                        g.grant_id,
                        g.key_id,
                        g.name,
                        g.creation_date,
                        g.grantee_principal,
                        g.retiring_principal,
                        g.issuing_account,
                        to_json(&g.operations)?,
                        g.context_equals.as_ref().map(to_json).transpose()?,
                        g.context_subset.as_ref().map(to_json).transpose()?,
                        &g.parameters_digest()[..],
                    ],
                )
                .map_err(db)?;
                g.clone()
            }
        };
        tx.execute(
            "INSERT INTO grant_tokens (grant_id, token_sha256, key_id) VALUES (?1, ?2, ?3)",
            params![grant.grant_id, &token_sha256[..], grant.key_id],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(grant)
    }

    fn check_grant_quota(&self, g: &GrantRecord, max_grants: usize) -> Result<()> {
        let conn = self.reader()?;
        match named_retry(&conn, g)? {
            Some(_) => Ok(()),
            None => refuse_over_quota(&conn, &g.key_id, max_grants),
        }
    }

    fn grantee_grants(&self, key_id: &str, grantee: &str) -> Result<Vec<GrantRecord>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1 AND grantee_principal = ?2 ORDER BY grant_id"
            ))
            .map_err(db)?;
        let rows = st.query_map(params![key_id, grantee], grant_from_row).map_err(db)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?;
        rows.into_iter().map(GrantRow::into_record).collect()
    }

    fn get_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        let conn = self.reader()?;
        conn.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = ?1"))
            .and_then(|mut st| st.query_row([grant_id], grant_from_row).optional())
            .map_err(db)?
            .map(GrantRow::into_record)
            .transpose()
    }

    fn grant_has_token(&self, grant_id: &str, token_sha256: &[u8; 32]) -> Result<bool> {
        let conn = self.reader()?;
        conn.prepare_cached("SELECT 1 FROM grant_tokens WHERE grant_id = ?1 AND token_sha256 = ?2")
            .and_then(|mut st| st.exists(params![grant_id, &token_sha256[..]]))
            .map_err(db)
    }

    fn list_grants(
        &self,
        key_id: &str,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1 AND (?2 IS NULL OR grant_id = ?2)
                 AND (?3 IS NULL OR grantee_principal = ?3) AND grant_id > ?4 ORDER BY grant_id LIMIT ?5"
            ))
            .map_err(db)?;
        let rows = st
            .query_map(
                params![key_id, grant_id, grantee, after.unwrap_or(""), limit as i64],
                grant_from_row,
            )
            .map_err(db)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?;
        rows.into_iter().map(GrantRow::into_record).collect()
    }

    fn list_retirable_grants(&self, retiring: &str, after: Option<&str>, limit: usize) -> Result<Vec<GrantRecord>> {
        let conn = self.reader()?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE retiring_principal = ?1 AND grant_id > ?2
                 ORDER BY grant_id LIMIT ?3"
            ))
            .map_err(db)?;
        let rows = st
            .query_map(params![retiring, after.unwrap_or(""), limit as i64], grant_from_row)
            .map_err(db)?;
        let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?;
        rows.into_iter().map(GrantRow::into_record).collect()
    }

    fn delete_grant(&self, key_id: &str, grant_id: &str) -> Result<Option<String>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db)?;
        let grantee: Option<String> = tx
            .query_row(
                "DELETE FROM grants WHERE key_id = ?1 AND grant_id = ?2 RETURNING grantee_principal",
                params![key_id, grant_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        // Scoped to the key too: a grant id named through another key must not lose its tokens.
        tx.execute(
            "DELETE FROM grant_tokens WHERE grant_id = ?1 AND key_id = ?2",
            params![grant_id, key_id],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(grantee)
    }
}

/// The key's grant with `g`'s name and parameters, if there is one: CreateGrant retried. Found by
/// the parameters' digest (`grants_params` index), not by reading every grant of that name.
fn named_retry(conn: &rusqlite::Connection, g: &GrantRecord) -> Result<Option<GrantRecord>> {
    let Some(name) = &g.name else { return Ok(None) };
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1 AND name = ?2 AND params = ?3 ORDER BY grant_id"
        ))
        .map_err(db)?;
    let rows = st
        .query_map(params![g.key_id, name, &g.parameters_digest()[..]], grant_from_row)
        .map_err(db)?;
    for row in rows {
        let found = row.map_err(db)?.into_record()?;
        if found.same_parameters(g) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Grant tokens one grant keeps: each retry of a named CreateGrant adds one (as AWS answers a
/// retry with a new token), and without a bound one caller could add rows without end.
pub const MAX_TOKENS_PER_GRANT: i64 = 100;

/// With `MAX_TOKENS_PER_GRANT` tokens already, one of them (the smallest digest: in effect a
/// random one) stops working to make room for the retry's. Refusing the retry instead would break
/// a client that creates its grant by name at every start, for good; a grant token is for the
/// moments after CreateGrant, and an evicted one only fails with InvalidGrantTokenException.
fn make_room_for_a_token(conn: &rusqlite::Connection, grant_id: &str) -> Result<()> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM grant_tokens WHERE grant_id = ?1")
        .and_then(|mut st| st.query_row([grant_id], |r| r.get(0)))
        .map_err(db)?;
    if n >= MAX_TOKENS_PER_GRANT {
        conn.prepare_cached(
            "DELETE FROM grant_tokens WHERE grant_id = ?1 AND token_sha256 IN \
             (SELECT token_sha256 FROM grant_tokens WHERE grant_id = ?1 ORDER BY token_sha256 LIMIT ?2)",
        )
        .and_then(|mut st| st.execute(params![grant_id, n - MAX_TOKENS_PER_GRANT + 1]))
        .map_err(db)?;
    }
    Ok(())
}

/// LimitExceededException when the key already has `max_grants` grants. The count walks the key's
/// entries of its narrowest index (SQLite would pick the wider `grants_grantee`): ~3 ms at 50,000.
fn refuse_over_quota(conn: &rusqlite::Connection, key_id: &str, max_grants: usize) -> Result<()> {
    // One row, kept by triggers (schema.rs): a COUNT(*) here took ~4 ms on a full key.
    let n: i64 = conn
        .prepare_cached("SELECT n FROM grant_counts WHERE key_id = ?1")
        .and_then(|mut st| st.query_row([key_id], |r| r.get(0)).optional())
        .map_err(db)?
        .unwrap_or(0);
    if n as usize >= max_grants {
        return Err(KmsError::LimitExceeded(format!(
            "Key '{key_id}' already has {n} grants; a key can have at most {max_grants}. Retire or revoke grants first"
        )));
    }
    Ok(())
}

const GRANT_COLUMNS: &str = "grant_id, key_id, name, creation_date, grantee_principal, retiring_principal, \
                             issuing_account, operations, context_equals, context_subset";

/// A grant row as SQLite gives it; the JSON columns are parsed by `into_record`.
struct GrantRow {
    record: GrantRecord,
    operations: String,
    context_equals: Option<String>,
    context_subset: Option<String>,
}

fn grant_from_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok(GrantRow {
        record: GrantRecord {
            grant_id: r.get(0)?,
            key_id: r.get(1)?,
            name: r.get(2)?,
            creation_date: r.get(3)?,
            grantee_principal: r.get(4)?,
            retiring_principal: r.get(5)?,
            issuing_account: r.get(6)?,
            operations: Vec::new(),
            context_equals: None,
            context_subset: None,
        },
        operations: r.get(7)?,
        context_equals: r.get(8)?,
        context_subset: r.get(9)?,
    })
}

impl GrantRow {
    fn into_record(self) -> Result<GrantRecord> {
        let mut g = self.record;
        g.operations = from_json(&self.operations)?;
        g.context_equals = self.context_equals.as_deref().map(from_json).transpose()?;
        g.context_subset = self.context_subset.as_deref().map(from_json).transpose()?;
        Ok(g)
    }
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(super::failure)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|_| KmsError::internal("bad grant in store"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Puts `key_id` in PendingDeletion, due at `at`.
    fn schedule_deletion(s: &SqliteStore, key_id: &str, at: i64) {
        s.update_key(key_id, &mut |k| {
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(at);
            Ok(())
        })
        .unwrap();
    }

    pub(in crate::store) fn key(id: &str) -> KeyRecord {
        KeyRecord {
            key_id: id.into(),
            creation_date: 1,
            description: "d".into(),
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            origin: Origin::AwsKms,
            current_material: 1,
            version: 1,
        }
    }

    pub(in crate::store) fn material(id: &str) -> MaterialRecord {
        MaterialRecord {
            key_id: id.into(),
            material_id: 1,
            public_key: Some(vec![1, 2]),
            wrapped: vec![7; 60],
            created: 1,
        }
    }

    /// Reads go to connections of their own: one doesn't wait while a write holds the writer's
    /// connection (as a CreateKey batch does through its fsync), and it sees every committed write.
    #[test]
    fn reads_do_not_wait_for_the_writer_and_see_its_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&dir.path().join("kms.db")).unwrap());
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let writing = s.conn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn({
            let s = s.clone();
            move || tx.send(s.get_key("a").map(|k| k.map(|k| k.key_id))).unwrap()
        });
        let read = rx.recv_timeout(Duration::from_secs(5));
        drop(writing);
        reader.join().unwrap();
        assert_eq!(
            read.expect("the read waited for the writer").unwrap().as_deref(),
            Some("a")
        );
        s.update_key("a", &mut |k| {
            k.state = KeyState::Disabled;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            s.get_key("a").unwrap().unwrap().state,
            KeyState::Disabled,
            "read after write"
        );
    }

    /// UntagResource removes the named tags the key has, matched exactly (tag keys are
    /// case-sensitive), and ignores names it doesn't have, however many.
    #[test]
    fn untagging_removes_the_named_tags_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let tag = |k: &str| Tag {
            key: k.into(),
            value: format!("v-{k}"),
        };
        s.tag_key("a", &[tag("a"), tag("B"), tag("c")], 50).unwrap();
        let mut asked: Vec<String> = (0..10_000).map(|i| format!("absent-{i}")).collect();
        asked.extend(["b".into(), "c".into(), "c".into()]);
        s.untag_key("a", &asked).unwrap();
        let left: Vec<_> = s.list_tags("a", None, 10).unwrap().into_iter().map(|t| t.key).collect();
        assert_eq!(left, ["B", "a"]);
    }

    /// A change that panics (a bug) while the write connection is held changes nothing, and the
    /// writes after it, CreateKey's group commit included, still work.
    #[test]
    fn a_change_that_panics_leaves_the_key_as_it_was_and_later_writes_work() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.update_key("a", &mut |k| {
                k.state = KeyState::Disabled;
                panic!("a bug in a change");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(s.get_key("a").unwrap().unwrap(), key("a"), "nothing of the change");
        assert_eq!(s.update_key("a", &mut |_| Ok(())).unwrap().version, 2);
        s.create_key(&key("b"), &material("b"), &[], "{}").unwrap();
        s.put_key_policy("b", "{\"p\":2}").unwrap();
    }

    #[test]
    fn a_damaged_version_is_an_error_and_later_writes_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let s = SqliteStore::open(&path).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let raw = rusqlite::Connection::open(&path).unwrap();
        for bad in [-1, i64::MAX] {
            raw.execute("UPDATE keys SET version = ?1 WHERE key_id = 'a'", [bad])
                .unwrap();
            match s.update_key("a", &mut |_| Ok(())) {
                Err(KmsError::Internal(m)) => assert!(m.contains("bad version"), "{m}"),
                other => panic!("version {bad}: {other:?}"),
            }
        }
        raw.execute("UPDATE keys SET version = 7 WHERE key_id = 'a'", [])
            .unwrap();
        assert_eq!(s.update_key("a", &mut |_| Ok(())).unwrap().version, 8);
        s.put_key_policy("a", "{\"p\":2}").unwrap();
    }

    #[test]
    fn keys_round_trip_and_update_bumps_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        assert!(SqliteStore::holds_no_keys(&path).unwrap(), "no file yet");
        let s = SqliteStore::open(&path).unwrap();
        assert!(SqliteStore::holds_no_keys(&path).unwrap());
        s.create_key(
            &key("a"),
            &material("a"),
            &[Tag {
                key: "t".into(),
                value: "v".into(),
            }],
            "{\"p\":1}",
        )
        .unwrap();
        assert!(!SqliteStore::holds_no_keys(&path).unwrap());
        assert_eq!(s.get_key_policy("a").unwrap().as_deref(), Some("{\"p\":1}"));
        s.put_key_policy("a", "{\"p\":2}").unwrap();
        assert_eq!(s.get_key_policy("a").unwrap().as_deref(), Some("{\"p\":2}"));
        assert!(matches!(s.put_key_policy("zz", "{}"), Err(KmsError::NotFound(_))));
        assert_eq!(s.get_key("a").unwrap().unwrap(), key("a"));
        let k = s
            .update_key("a", &mut |k| {
                k.state = KeyState::Disabled;
                Ok(())
            })
            .unwrap();
        assert_eq!((k.state, k.version), (KeyState::Disabled, 2));
        assert!(matches!(
            s.update_key("zz", &mut |_| Ok(())),
            Err(KmsError::NotFound(_))
        ));
        assert_eq!(s.get_material("a", 1).unwrap().unwrap().wrapped, vec![7; 60]);
        assert!(s.get_material("a", 2).unwrap().is_none());
    }

    fn new_key(id: &str, description: &str) -> NewKey {
        let mut k = key(id);
        k.description = description.into();
        NewKey {
            key: k,
            material: material(id),
            tags: vec![Tag {
                key: "t".into(),
                value: id.into(),
            }],
            policy: format!("{{\"p\":\"{id}\"}}"),
        }
    }

    /// 64 threads x 8 creations (24 of them duplicates), then reopen: each id lands exactly once,
    /// with its material, tags and policy, and survives reopening the file.
    #[test]
    fn concurrent_creations_all_land_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let s = Arc::new(SqliteStore::open(&path).unwrap());
        let threads: Vec<_> = (0..64)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut failed = 0;
                    for i in 0..8 {
                        // Threads 0-3 all create the same 8 ids: 3 of the 4 creations of each must fail.
                        let id = if t < 4 {
                            format!("dup-{i}")
                        } else {
                            format!("k-{t}-{i}")
                        };
                        let n = new_key(&id, "d");
                        failed += s.create_key(&n.key, &n.material, &n.tags, &n.policy).is_err() as usize;
                    }
                    failed
                })
            })
            .collect();
        let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(failed, 3 * 8);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let ids = s.list_keys(None, 10_000).unwrap();
        assert_eq!(ids.len(), 60 * 8 + 8);
        for id in &ids {
            assert_eq!(s.get_key(id).unwrap().unwrap().key_id, *id);
            assert_eq!(s.get_material(id, 1).unwrap().unwrap().wrapped, vec![7; 60]);
            assert_eq!(s.list_tags(id, None, 10).unwrap()[0].value, *id);
            assert_eq!(s.get_key_policy(id).unwrap(), Some(format!("{{\"p\":\"{id}\"}}")));
        }
    }

    #[test]
    fn a_duplicate_in_a_batch_fails_alone_and_leaves_the_first_intact() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        let batch = [new_key("a", "first"), new_key("a", "second"), new_key("b", "d")];
        let results = crate::store::batch::write_batch(&s.conn().unwrap(), insert_key, &batch);
        assert!(
            results[0].is_ok() && results[1].is_err() && results[2].is_ok(),
            "{results:?}"
        );
        // The duplicate's row replaced the first in `keys` before its policy insert failed: undone.
        assert_eq!(s.get_key("a").unwrap().unwrap().description, "first");
        assert_eq!(s.list_keys(None, 10).unwrap(), ["a", "b"]);
        // Through the writer, too.
        let dup = new_key("b", "again");
        assert!(s.create_key(&dup.key, &dup.material, &dup.tags, &dup.policy).is_err());
        assert_eq!(s.get_key("b").unwrap().unwrap().description, "d");
    }

    #[test]
    fn deletion_removes_everything_only_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        s.create_alias(
            &AliasRecord {
                name: "alias/a".into(),
                target_key_id: "a".into(),
                creation_date: 1,
                last_updated_date: 1,
            },
            50,
        )
        .unwrap();
        assert!(!s.delete_key_if_due("a", 100).unwrap());
        schedule_deletion(&s, "a", 50);
        assert_eq!(s.keys_due_for_deletion(49).unwrap(), Vec::<String>::new());
        assert_eq!(s.keys_due_for_deletion(50).unwrap(), vec!["a".to_string()]);
        assert!(s.delete_key_if_due("a", 50).unwrap());
        assert!(s.get_key("a").unwrap().is_none());
        assert!(s.get_material("a", 1).unwrap().is_none());
        assert!(s.get_alias("alias/a").unwrap().is_none());

        // The deletion waits for its audit record; until then the log still holds the material.
        assert_eq!(s.deletions_to_audit().unwrap(), vec![("a".to_string(), 50)]);
        let wal = dir.path().join("kms.db-wal");
        let holds_material = || {
            let bytes = std::fs::read(&wal).unwrap_or_default();
            bytes.windows(60).any(|w| w == [7u8; 60])
        };
        assert!(holds_material(), "the control: the log has the material's page");
        assert!(
            !s.truncate_log_after_deletions().unwrap(),
            "not before the record is written"
        );
        s.deletion_audited("a").unwrap();
        assert!(s.deletions_to_audit().unwrap().is_empty());

        // An outside reader (a backup) holds the log: the truncation waits for the next pass.
        let reader = Connection::open(dir.path().join("kms.db")).unwrap();
        reader.execute_batch("BEGIN; SELECT COUNT(*) FROM keys;").unwrap();
        let started = std::time::Instant::now();
        assert!(!s.truncate_log_after_deletions().unwrap());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "gave up quickly");
        assert!(holds_material());
        reader.execute_batch("COMMIT").unwrap();
        assert!(s.truncate_log_after_deletions().unwrap());
        assert!(
            !holds_material(),
            "the destroyed material is still in the write-ahead log"
        );
    }

    /// A ScheduleKeyDeletion that commits after a request checked the key's state still stops
    /// the request's write: the state is read again inside the write's transaction.
    #[test]
    fn tags_aliases_and_grants_do_not_land_on_a_key_pending_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        schedule_deletion(&s, "a", 50);
        let tag = Tag {
            key: "k".into(),
            value: "v".into(),
        };
        let alias = AliasRecord {
            name: "alias/a".into(),
            target_key_id: "a".into(),
            creation_date: 1,
            last_updated_date: 1,
        };
        let pending = |r: Result<()>| matches!(r, Err(KmsError::InvalidState(_)));
        assert!(pending(s.tag_key("a", std::slice::from_ref(&tag), 50)));
        assert!(pending(s.untag_key("a", &["k".into()])));
        assert!(pending(s.create_alias(&alias, 50)));
        let grant = s.create_grant(&decrypt_grant("g1", "a", None), &[1; 32], 50);
        assert!(matches!(grant, Err(KmsError::InvalidState(_))), "{grant:?}");
        assert!(s.list_tags("a", None, 50).unwrap().is_empty());
        assert!(s.get_alias("alias/a").unwrap().is_none());
        assert!(s.get_grant("g1").unwrap().is_none());
        let gone = s.tag_key("nope", &[tag], 50);
        assert!(matches!(gone, Err(KmsError::NotFound(_))), "{gone:?}");
    }

    #[test]
    fn store_failures_reach_the_caller_without_sqlite_details() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let s = SqliteStore::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE materials")
            .unwrap();
        let Err(KmsError::Internal(msg)) = s.get_material("a", 1) else {
            panic!("a missing table is an internal error")
        };
        assert!(!msg.contains("materials") && !msg.contains("SELECT"), "{msg}");
        assert!(msg.contains("server log"), "{msg}");
    }

    #[test]
    fn tag_limit_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let tags: Vec<Tag> = (0..3)
            .map(|i| Tag {
                key: format!("k{i}"),
                value: "v".into(),
            })
            .collect();
        s.tag_key("a", &tags, 3).unwrap();
        s.tag_key("a", &tags[..1], 3).unwrap(); // overwrite does not count twice
        let more = [Tag {
            key: "k9".into(),
            value: "v".into(),
        }];
        assert!(matches!(s.tag_key("a", &more, 3), Err(KmsError::Tag(_))));
        assert_eq!(s.list_tags("a", None, 10).unwrap().len(), 3);
        assert_eq!(s.list_tags("a", Some("k0"), 10).unwrap().len(), 2);
    }

    #[test]
    fn grants_round_trip_retry_by_name_and_go_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let g = GrantRecord {
            grant_id: "g1".into(),
            key_id: "a".into(),
            name: Some("n".into()),
            creation_date: 1,
            grantee_principal: "arn:aws:iam::111122223333:user/bob".into(),
            retiring_principal: Some("arn:aws:iam::111122223333:user/carol".into()),
            issuing_account: "arn:aws:iam::111122223333:root".into(),
            operations: vec!["Encrypt".into(), "Decrypt".into()],
            context_equals: None,
            context_subset: Some([("k".to_string(), "v".to_string())].into()),
        };
        assert_eq!(s.create_grant(&g, &[1; 32], 50).unwrap(), g);
        let mut retry = g.clone();
        retry.grant_id = "g2".into();
        retry.operations.reverse();
        assert_eq!(s.create_grant(&retry, &[2; 32], 50).unwrap().grant_id, "g1");
        assert!(s.grant_has_token("g1", &[1; 32]).unwrap() && s.grant_has_token("g1", &[2; 32]).unwrap());
        assert!(!s.grant_has_token("g1", &[3; 32]).unwrap() && !s.grant_has_token("g2", &[2; 32]).unwrap());
        assert_eq!(s.grantee_grants("a", &g.grantee_principal).unwrap(), vec![g.clone()]);
        assert!(s
            .grantee_grants("a", "arn:aws:iam::111122223333:user/nobody")
            .unwrap()
            .is_empty());
        let carol = g.retiring_principal.as_deref().unwrap();
        assert_eq!(s.list_retirable_grants(carol, None, 10).unwrap().len(), 1);
        let mut missing = g.clone();
        missing.key_id = "zz".into();
        assert!(matches!(
            s.create_grant(&missing, &[3; 32], 50),
            Err(KmsError::NotFound(_))
        ));
        s.create_key(&key("b"), &material("b"), &[], "{}").unwrap();
        s.create_grant(&decrypt_grant("gb", "b", None), &[4; 32], 50).unwrap();
        schedule_deletion(&s, "a", 5);
        assert!(s.delete_key_if_due("a", 5).unwrap());
        assert!(s.get_grant("g1").unwrap().is_none());
        assert!(!s.grant_has_token("g1", &[1; 32]).unwrap() && !s.grant_has_token("g1", &[2; 32]).unwrap());
        assert!(
            s.grant_has_token("gb", &[4; 32]).unwrap(),
            "another key's grant keeps its token"
        );
        assert!(s.delete_grant("a", "g1").unwrap().is_none());
    }

    fn alias(name: &str, key_id: &str) -> AliasRecord {
        AliasRecord {
            name: name.into(),
            target_key_id: key_id.into(),
            creation_date: 1,
            last_updated_date: 1,
        }
    }

    #[test]
    fn alias_limit_counts_the_target_keys_other_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        s.create_key(&key("b"), &material("b"), &[], "{}").unwrap();
        s.create_alias(&alias("alias/a1", "a"), 2).unwrap();
        s.create_alias(&alias("alias/a2", "a"), 2).unwrap();
        let full = s.create_alias(&alias("alias/a3", "a"), 2);
        assert!(
            matches!(&full, Err(KmsError::LimitExceeded(m)) if m.contains("at most 2")),
            "{full:?}"
        );
        assert!(s.get_alias("alias/a3").unwrap().is_none(), "nothing written");
        // A taken name is AlreadyExists, whether or not its key is full (AWS checks the name first).
        assert!(matches!(
            s.create_alias(&alias("alias/a1", "a"), 2),
            Err(KmsError::AlreadyExists(_))
        ));
        s.create_alias(&alias("alias/b1", "b"), 2).unwrap();
        // Moving an alias onto a full key is refused and leaves it where it was ...
        assert!(matches!(
            s.update_alias("alias/b1", "b", "a", 2, 2),
            Err(KmsError::LimitExceeded(_))
        ));
        assert_eq!(s.get_alias("alias/b1").unwrap().unwrap().target_key_id, "b");
        // ... but re-pointing one of the key's own aliases at it does not count itself.
        assert!(s.update_alias("alias/a1", "a", "a", 3, 2).unwrap());
        // A change conditioned on a target the alias no longer has changes nothing.
        assert!(!s.update_alias("alias/b1", "a", "b", 4, 2).unwrap());
        assert!(!s.delete_alias("alias/b1", "a").unwrap());
        assert_eq!(s.get_alias("alias/b1").unwrap().unwrap().target_key_id, "b");
        assert!(matches!(s.delete_alias("alias/zz", "a"), Err(KmsError::NotFound(_))));
        assert!(matches!(
            s.update_alias("alias/zz", "a", "b", 4, 2),
            Err(KmsError::NotFound(_))
        ));
        assert!(s.delete_alias("alias/a2", "a").unwrap());
        assert!(s.update_alias("alias/b1", "b", "a", 4, 2).unwrap());
    }

    /// A Decrypt grant for bob on `key_id`.
    pub(in crate::store) fn decrypt_grant(id: &str, key_id: &str, name: Option<&str>) -> GrantRecord {
        GrantRecord {
            grant_id: id.into(),
            key_id: key_id.into(),
            name: name.map(String::from),
            creation_date: 1,
            grantee_principal: "arn:aws:iam::111122223333:user/bob".into(),
            retiring_principal: None,
            issuing_account: "arn:aws:iam::111122223333:root".into(),
            operations: vec!["Decrypt".into()],
            context_equals: None,
            context_subset: None,
        }
    }

    #[test]
    fn grant_limit_refuses_new_grants_but_not_retries() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let grant = |id: &str, name: &str| decrypt_grant(id, "a", Some(name));
        s.create_grant(&grant("g1", "one"), &[1; 32], 2).unwrap();
        s.create_grant(&grant("g2", "two"), &[2; 32], 2).unwrap();
        let full = s.create_grant(&grant("g3", "three"), &[3; 32], 2);
        assert!(
            matches!(&full, Err(KmsError::LimitExceeded(m)) if m.contains("at most 2")),
            "{full:?}"
        );
        assert!(s.get_grant("g3").unwrap().is_none());
        // A dry run is refused as the write was, and a retry is not.
        assert!(matches!(
            s.check_grant_quota(&grant("g3", "three"), 2),
            Err(KmsError::LimitExceeded(m)) if m.contains("at most 2")
        ));
        s.check_grant_quota(&grant("g4", "two"), 2).unwrap();
        s.check_grant_quota(&grant("g3", "three"), 3).unwrap();
        // An idempotent retry (same name and parameters) adds no grant, so it still succeeds.
        assert_eq!(s.create_grant(&grant("g4", "two"), &[4; 32], 2).unwrap().grant_id, "g2");
        assert!(s.delete_grant("a", "g1").unwrap().is_some());
        s.create_grant(&grant("g3", "three"), &[3; 32], 2).unwrap();
    }

    /// A DisableKey that commits after CreateGrant checked the key's state still stops the grant
    /// (DisabledException, as on a key disabled before).
    #[test]
    fn grants_do_not_land_on_a_key_disabled_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        s.update_key("a", &mut |k| {
            k.state = KeyState::Disabled;
            Ok(())
        })
        .unwrap();
        let grant = s.create_grant(&decrypt_grant("g1", "a", None), &[1; 32], 50);
        assert!(
            matches!(&grant, Err(KmsError::Disabled(m)) if m.contains("disabled")),
            "{grant:?}"
        );
        assert!(s.get_grant("g1").unwrap().is_none());
    }

    /// Each retry of a named CreateGrant adds a token to the one grant; past
    /// `MAX_TOKENS_PER_GRANT` the retry still succeeds and its token works, and one older token
    /// stops working, so the grant keeps that many.
    #[test]
    fn retries_of_a_named_grant_keep_a_bounded_number_of_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        let token = |i: i64| {
            let mut t = [0u8; 32];
            t[..8].copy_from_slice(&i.to_be_bytes());
            t
        };
        for i in 0..MAX_TOKENS_PER_GRANT {
            let retry = decrypt_grant(&format!("g{i}"), "a", Some("one"));
            assert_eq!(s.create_grant(&retry, &token(i), 50).unwrap().grant_id, "g0");
        }
        for extra in 0..3 {
            let i = MAX_TOKENS_PER_GRANT + extra;
            let past = decrypt_grant("gx", "a", Some("one"));
            assert_eq!(s.create_grant(&past, &token(i), 50).unwrap().grant_id, "g0");
            assert!(s.grant_has_token("g0", &token(i)).unwrap(), "the retry's token");
            let working = (0..=i).filter(|j| s.grant_has_token("g0", &token(*j)).unwrap()).count();
            assert_eq!(working as i64, MAX_TOKENS_PER_GRANT, "after retry {i}");
        }
    }

    /// The quota reads a count kept by triggers: it follows creations, revocations, idempotent
    /// retries (no new row) and the key's deletion (no row left behind).
    #[test]
    fn grant_counts_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        let count = |key_id: &str| -> Option<i64> {
            let conn = s.reader().unwrap();
            conn.query_row("SELECT n FROM grant_counts WHERE key_id = ?1", [key_id], |r| r.get(0))
                .optional()
                .unwrap()
        };
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        s.create_key(&key("b"), &material("b"), &[], "{}").unwrap();
        assert_eq!(count("a"), None);
        for i in 0..3 {
            s.create_grant(&decrypt_grant(&format!("a{i}"), "a", None), &[i; 32], 10)
                .unwrap();
        }
        s.create_grant(&decrypt_grant("b0", "b", Some("n")), &[9; 32], 10)
            .unwrap();
        s.create_grant(&decrypt_grant("b1", "b", Some("n")), &[8; 32], 10)
            .unwrap();
        assert_eq!((count("a"), count("b")), (Some(3), Some(1)), "the retry added no grant");
        assert!(s.delete_grant("a", "a1").unwrap().is_some());
        assert!(
            s.delete_grant("b", "a2").unwrap().is_none(),
            "another key's grant: nothing"
        );
        assert_eq!((count("a"), count("b")), (Some(2), Some(1)));
        assert!(matches!(
            s.create_grant(&decrypt_grant("b2", "b", None), &[7; 32], 1),
            Err(KmsError::LimitExceeded(m)) if m.contains("already has 1 grants")
        ));

        schedule_deletion(&s, "a", 50);
        assert!(s.delete_key_if_due("a", 50).unwrap());
        assert_eq!((count("a"), count("b")), (None, Some(1)));
    }

    #[test]
    fn revoking_through_another_key_leaves_the_grant_and_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        s.create_key(&key("a"), &material("a"), &[], "{}").unwrap();
        s.create_key(&key("b"), &material("b"), &[], "{}").unwrap();
        s.create_grant(&decrypt_grant("gb", "b", None), &[9; 32], 50).unwrap();
        assert!(s.delete_grant("a", "gb").unwrap().is_none(), "gb is not a's grant");
        assert!(s.get_grant("gb").unwrap().is_some());
        assert!(s.grant_has_token("gb", &[9; 32]).unwrap());
        assert_eq!(
            s.delete_grant("b", "gb").unwrap().as_deref(),
            Some("arn:aws:iam::111122223333:user/bob"),
            "the deleted grant's grantee"
        );
        assert!(!s.grant_has_token("gb", &[9; 32]).unwrap());
    }
}
