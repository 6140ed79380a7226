//! The store's tables, and the steps that bring a store written by an older build up to them. The
//! schema version is SQLite's `user_version`. Stores from before it was kept read as version 0. A
//! store from a newer build is refused rather than misread.

use rusqlite::{Connection, TransactionBehavior};

/// The schema this build reads and writes.
pub const VERSION: i32 = 3;

/// The current tables. Every statement is idempotent: after the migrations, this creates what
/// an older store lacks (tables and indexes added since) and leaves the rest alone.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    creation_date INTEGER NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    deletion_date INTEGER,
    pending_window_days INTEGER,
    key_spec TEXT NOT NULL,
    key_usage TEXT NOT NULL,
    origin TEXT NOT NULL,
    current_material INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_deletion ON keys(deletion_date) WHERE deletion_date IS NOT NULL;
CREATE TABLE IF NOT EXISTS materials (
    key_id TEXT NOT NULL,
    material_id INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    public_key BLOB,
    created INTEGER NOT NULL,
    PRIMARY KEY (key_id, material_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    creation_date INTEGER NOT NULL,
    last_updated_date INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_key ON aliases(key_id, name);
CREATE TABLE IF NOT EXISTS key_policies (
    key_id TEXT PRIMARY KEY,
    policy TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    key_id TEXT NOT NULL,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    name TEXT,
    creation_date INTEGER NOT NULL,
    grantee_principal TEXT NOT NULL,
    retiring_principal TEXT,
    issuing_account TEXT NOT NULL,
    operations TEXT NOT NULL,
    context_equals TEXT,
    context_subset TEXT,
    params BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_key ON grants(key_id, grant_id);
CREATE INDEX IF NOT EXISTS grants_grantee ON grants(key_id, grantee_principal, grant_id);
CREATE INDEX IF NOT EXISTS grants_params ON grants(key_id, name, params) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS grants_retiring ON grants(retiring_principal, grant_id) WHERE retiring_principal IS NOT NULL;
CREATE TABLE IF NOT EXISTS grant_counts (
    key_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS grants_counted AFTER INSERT ON grants BEGIN
    INSERT INTO grant_counts (key_id, n) VALUES (NEW.key_id, 1) ON CONFLICT (key_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS grants_uncounted AFTER DELETE ON grants BEGIN
    UPDATE grant_counts SET n = n - 1 WHERE key_id = OLD.key_id;
END;
CREATE TABLE IF NOT EXISTS deletions_to_audit (
    key_id TEXT PRIMARY KEY,
    deleted INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grant_tokens (
    grant_id TEXT NOT NULL,
    token_sha256 BLOB NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (grant_id, token_sha256)
) WITHOUT ROWID;
";

/// Brings the store to `VERSION` in one transaction: a new store gets the tables, an older one is
/// migrated step by step, and a newer one is refused.
pub fn prepare(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let found: i32 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if found > VERSION {
        return Err(format!(
            "the store was written by a newer build of kms (schema version {found}; this build knows \
             versions up to {VERSION}): run that build, or restore a backup made for this one"
        ));
    }
    if found < 1 {
        unversioned_to_1(&tx).map_err(|e| format!("cannot migrate the store to schema version 1: {e}"))?;
    }
    if found < 2 {
        one_to_2(&tx).map_err(|e| format!("cannot migrate the store to schema version 2: {e}"))?;
    }
    if found < 3 {
        two_to_3(&tx).map_err(|e| format!("cannot migrate the store to schema version 3: {e}"))?;
    }
    tx.execute_batch(TABLES).map_err(|e| e.to_string())?;
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

/// Stores from before schema versions: the first build's `materials` table has no `public_key`
/// column (added with asymmetric keys). Tables added later are created by `TABLES`.
fn unversioned_to_1(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    if has_table(tx, "materials")? && !has_column(tx, "materials", "public_key")? {
        tx.execute_batch("ALTER TABLE materials ADD COLUMN public_key BLOB")?;
    }
    Ok(())
}

/// Version 2 counts each key's grants in `grant_counts` (kept by triggers on `grants`), so that
/// CreateGrant's quota check reads one row instead of counting up to 50,000. The counts start
/// from the grants already there; the triggers come with `TABLES`.
fn one_to_2(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    if has_table(tx, "grants")? {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS grant_counts (key_id TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
             DELETE FROM grant_counts;
             INSERT INTO grant_counts (key_id, n) SELECT key_id, COUNT(*) FROM grants GROUP BY key_id;",
        )?;
    }
    Ok(())
}

/// Version 3 stores each grant's parameters digest (`grant_params.rs`) in `params`, indexed with
/// the key and the name (replacing `grants_name`). A grant whose stored JSON doesn't parse keeps
/// no digest: a retry of it makes a new grant, instead of the store refusing to start.
fn two_to_3(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    if !has_table(tx, "grants")? {
        return Ok(());
    }
    if !has_column(tx, "grants", "params")? {
        tx.execute_batch("ALTER TABLE grants ADD COLUMN params BLOB")?;
    }
    tx.execute_batch("DROP INDEX IF EXISTS grants_name")?;
    type Row = (String, String, Option<String>, String, Option<String>, Option<String>);
    let rows = tx
        .prepare(
            "SELECT grant_id, grantee_principal, retiring_principal, operations, context_equals, context_subset
             FROM grants WHERE params IS NULL",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    let map = |json: Option<String>| json.map(|j| serde_json::from_str(&j)).transpose();
    let mut update = tx.prepare("UPDATE grants SET params = ?1 WHERE grant_id = ?2")?;
    for (grant_id, grantee, retiring, operations, equals, subset) in rows {
        let (Ok(operations), Ok(equals), Ok(subset)) = (
            serde_json::from_str::<Vec<String>>(&operations),
            map(equals),
            map(subset),
        ) else {
            continue;
        };
        let digest = super::grant_params::parameters_digest(
            &grantee,
            retiring.as_deref(),
            &operations,
            equals.as_ref(),
            subset.as_ref(),
        );
        update.execute(rusqlite::params![&digest[..], grant_id])?;
    }
    Ok(())
}

fn has_table(tx: &rusqlite::Transaction<'_>, table: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn has_column(tx: &rusqlite::Transaction<'_>, table: &str, column: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRecord, MaterialRecord};
    use crate::store::{SqliteStore, Store};

    /// The first build's tables (commit 8dba9da), with one key and its material.
    const FIRST_BUILD: &str = "
        CREATE TABLE keys (key_id TEXT PRIMARY KEY, creation_date INTEGER NOT NULL,
            description TEXT NOT NULL, state TEXT NOT NULL, deletion_date INTEGER,
            pending_window_days INTEGER, key_spec TEXT NOT NULL, key_usage TEXT NOT NULL,
            origin TEXT NOT NULL, current_material INTEGER NOT NULL, version INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE materials (key_id TEXT NOT NULL, material_id INTEGER NOT NULL,
            wrapped BLOB NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (key_id, material_id)
        ) WITHOUT ROWID;
        CREATE TABLE aliases (name TEXT PRIMARY KEY, key_id TEXT NOT NULL,
            creation_date INTEGER NOT NULL, last_updated_date INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE tags (key_id TEXT NOT NULL, tag_key TEXT NOT NULL, tag_value TEXT NOT NULL,
            PRIMARY KEY (key_id, tag_key)) WITHOUT ROWID;
        INSERT INTO keys VALUES ('old', 1, '', 'Enabled', NULL, NULL, 'SYMMETRIC_DEFAULT',
            'ENCRYPT_DECRYPT', 'AWS_KMS', 1, 1);
        INSERT INTO materials VALUES ('old', 1, x'0707070707', 1);
    ";

    fn user_version(path: &std::path::Path) -> i32 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// A key made by this build: the store tests' record, with its own material bytes.
    fn new_key(id: &str) -> (KeyRecord, MaterialRecord) {
        let material = MaterialRecord {
            wrapped: vec![9; 60],
            public_key: None,
            ..super::super::sqlite::tests::material(id)
        };
        (super::super::sqlite::tests::key(id), material)
    }

    #[test]
    fn a_store_from_the_first_build_is_migrated_and_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        Connection::open(&path).unwrap().execute_batch(FIRST_BUILD).unwrap();
        assert_eq!(user_version(&path), 0);

        // Asked before the HSM is opened: it has keys, and it is not migrated by the asking.
        assert!(!SqliteStore::holds_no_keys(&path).unwrap());
        assert_eq!(user_version(&path), 0);

        let store = SqliteStore::open(&path).unwrap();
        let old = store.get_material("old", 1).unwrap().expect("the old key's material");
        assert_eq!((old.wrapped, old.public_key), (vec![7; 5], None));
        let (key, material) = new_key("new");
        store.create_key(&key, &material, &[], "{}").unwrap();
        assert_eq!(
            store.get_key_policy("old").unwrap(),
            None,
            "no policy row: read as the default"
        );
        drop(store);
        assert_eq!(user_version(&path), VERSION);
        // Opening again is a no-op.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_material("new", 1).unwrap().unwrap().wrapped, vec![9; 60]);
    }

    /// A version 1 store (grants, no counts) gets its grants counted: the quota holds for the
    /// grants made before the upgrade, and the counts go on from there.
    #[test]
    fn a_version_1_store_counts_the_grants_it_already_has() {
        use crate::error::KmsError;
        use crate::store::sqlite::tests::decrypt_grant;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let store = SqliteStore::open(&path).unwrap();
        for id in ["a", "b"] {
            let (key, material) = new_key(id);
            store.create_key(&key, &material, &[], "{}").unwrap();
        }
        for (i, key_id) in ["a", "a", "a", "b"].into_iter().enumerate() {
            store
                .create_grant(&decrypt_grant(&format!("g{i}"), key_id, None), &[i as u8; 32], 10)
                .unwrap();
        }
        drop(store);
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP TRIGGER grants_counted; DROP TRIGGER grants_uncounted; DROP TABLE grant_counts;
                 PRAGMA user_version = 1;",
            )
            .unwrap();

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), VERSION);
        let next = |key_id: &str| decrypt_grant("new", key_id, None);
        assert!(matches!(
            store.check_grant_quota(&next("a"), 3),
            Err(KmsError::LimitExceeded(_))
        ));
        store.check_grant_quota(&next("a"), 4).unwrap();
        assert!(matches!(
            store.check_grant_quota(&next("b"), 1),
            Err(KmsError::LimitExceeded(_))
        ));
        assert!(store.delete_grant("a", "g0").unwrap().is_some());
        store.check_grant_quota(&next("a"), 3).unwrap();
        store.create_grant(&next("b"), &[7; 32], 2).unwrap();
        assert!(matches!(
            store.check_grant_quota(&next("b"), 2),
            Err(KmsError::LimitExceeded(_))
        ));
    }

    /// A version 2 store (no parameters digest) gets one for each grant: a retried named
    /// CreateGrant finds the grant made before the upgrade. A grant whose stored JSON is damaged
    /// keeps none, and doesn't stop the store from opening.
    #[test]
    fn a_version_2_store_gets_its_grants_parameters_digests() {
        use crate::store::sqlite::tests::decrypt_grant;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let store = SqliteStore::open(&path).unwrap();
        let (key, material) = new_key("a");
        store.create_key(&key, &material, &[], "{}").unwrap();
        let mut g1 = decrypt_grant("g1", "a", Some("n"));
        g1.operations = vec!["Decrypt".into(), "Encrypt".into()];
        let mut g2 = decrypt_grant("g2", "a", Some("n"));
        g2.grantee_principal = "arn:aws:iam::111122223333:user/carol".into();
        let g3 = decrypt_grant("g3", "a", Some("m"));
        for (i, g) in [&g1, &g2, &g3].into_iter().enumerate() {
            store.create_grant(g, &[i as u8; 32], 10).unwrap();
        }
        drop(store);
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP INDEX grants_params; ALTER TABLE grants DROP COLUMN params;
                 CREATE INDEX grants_name ON grants(key_id, name) WHERE name IS NOT NULL;
                 UPDATE grants SET operations = 'damaged' WHERE grant_id = 'g3';
                 PRAGMA user_version = 2;",
            )
            .unwrap();

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), VERSION);
        let retry = |g: &crate::store::GrantRecord, id: &str| {
            let mut r = g.clone();
            r.grant_id = id.into();
            r.operations.reverse();
            store.create_grant(&r, &[9; 32], 10).unwrap().grant_id
        };
        assert_eq!(retry(&g1, "r1"), "g1");
        assert_eq!(retry(&g2, "r2"), "g2");
        assert_eq!(retry(&g3, "r3"), "r3", "the damaged grant has no digest: a new grant");
        let indexes: Vec<String> = Connection::open(&path)
            .unwrap()
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'grants' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(indexes.contains(&"grants_params".to_string()), "{indexes:?}");
        assert!(!indexes.contains(&"grants_name".to_string()), "{indexes:?}");
    }

    #[test]
    fn a_new_store_gets_the_current_version_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(user_version(&path), VERSION);

        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let err = SqliteStore::open(&path).err().expect("a newer store is refused");
        assert!(
            err.contains("newer build") && err.contains(&format!("{}", VERSION + 1)),
            "{err}"
        );
        assert_eq!(user_version(&path), VERSION + 1, "and left as it was");
    }
}
