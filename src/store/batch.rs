//! Group commit for the store's hot write (CreateKey). With `synchronous = FULL` every commit
//! costs an fsync, and one commit per key made creations queue behind each other's fsyncs on the
//! single connection. Here callers hand their item to one writer thread, which writes every item
//! waiting (at most `MAX_BATCH`) in one transaction and commits once, like the audit log.
//!
//! Guarantees: a caller returns `Ok` only after the transaction holding its item has committed
//! (durable, as before); each item runs inside its own SAVEPOINT, so an item that fails (e.g. a
//! constraint violation) is rolled back alone and only its caller gets the error; a failed COMMIT
//! fails every caller of the batch and leaves nothing of it behind. The writer takes the shared
//! connection only for the batch, so other store calls wait behind at most one bounded batch. If
//! the writer thread dies, waiting and later callers get an internal error instead of hanging.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::error::{KmsError, Result};

/// Items written in one transaction at most: bounds how long other store calls wait for the connection.
pub const MAX_BATCH: usize = 64;

/// Writes one item; runs inside the batch's transaction, within a savepoint of its own.
pub type WriteItem<T> = fn(&Connection, &T) -> Result<()>;

type Pending<T> = (T, SyncSender<Result<()>>);

/// Handle to the writer thread; dropping it lets the thread finish the queue and joins it.
pub struct GroupCommit<T: Send + 'static> {
    tx: Option<Sender<Pending<T>>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> GroupCommit<T> {
    pub fn start(name: &str, conn: Arc<Mutex<Connection>>, write: WriteItem<T>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_loop(&conn, write, rx))?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues the item and blocks until the transaction holding it has committed (or failed).
    pub fn submit(&self, item: T) -> Result<()> {
        let stopped = || KmsError::internal("the store writer has stopped");
        let (done, wait) = mpsc::sync_channel(1);
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send((item, done)).map_err(|_| stopped())?;
        // A dead writer drops our `done` sender, so this returns an error rather than waiting forever.
        wait.recv().map_err(|_| stopped())?
    }
}

impl<T: Send + 'static> Drop for GroupCommit<T> {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop<T>(conn: &Mutex<Connection>, write: WriteItem<T>, rx: Receiver<Pending<T>>) {
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some((item, done)) = next {
            items.push(item);
            waiters.push(done);
            next = if items.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let results = match super::lock::lock(conn) {
            Ok(conn) => write_batch(&conn, write, &items),
            Err(e) => vec![Err(e); items.len()],
        };
        items.clear();
        for (done, result) in waiters.drain(..).zip(results) {
            let _ = done.send(result);
        }
    }
}

/// Writes `items` in one transaction, each in its own savepoint; one result per item.
pub fn write_batch<T>(conn: &Connection, write: WriteItem<T>, items: &[T]) -> Vec<Result<()>> {
    let db = |e: rusqlite::Error| super::failure(e);
    let all_fail = |e: KmsError| vec![Err(e); items.len()];
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return all_fail(db(e));
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let result = conn
            .execute_batch("SAVEPOINT item")
            .map_err(db)
            .and_then(|_| write(conn, item));
        let undone = match &result {
            Ok(()) => conn.execute_batch("RELEASE item"),
            Err(_) => conn.execute_batch("ROLLBACK TO item; RELEASE item"),
        };
        // Some errors (I/O, disk full) abort the whole transaction: then no item of it is written.
        if undone.is_err() || conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
            return all_fail(match (result, undone) {
                (Err(e), _) => e,
                (Ok(()), Err(e)) => db(e),
                (Ok(()), Ok(())) => super::failure("the transaction ended early"),
            });
        }
        results.push(result);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return all_fail(db(e));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> Connection {
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);",
        )
        .unwrap();
        conn
    }

    /// Inserts rows `id` and `id + 1_000_000`: a duplicate id fails on the first insert;
    /// `1 - 1_000_000` on the second, after its first row was written.
    fn insert(conn: &Connection, id: &i64) -> Result<()> {
        if *id == i64::MIN {
            panic!("writer dies");
        }
        let db = |e: rusqlite::Error| KmsError::internal(e.to_string());
        conn.execute("INSERT INTO t (id, v) VALUES (?1, ?1)", [id])
            .map_err(db)?;
        conn.execute("INSERT INTO t (id, v) VALUES (?1 + 1000000, ?1)", [id])
            .map_err(db)?;
        Ok(())
    }

    fn ids(conn: &Connection) -> Vec<i64> {
        let mut st = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn a_failing_item_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir);
        // 2 twice: the second fails on its first row; -999_999 writes its first row, then fails.
        let results = write_batch(&conn, insert, &[1, 2, 2, -999_999, 3]);
        let failed: Vec<bool> = results.iter().map(|r| r.is_err()).collect();
        assert_eq!(failed, [false, false, true, true, false]);
        assert_eq!(ids(&conn), [1, 2, 3, 1_000_001, 1_000_002, 1_000_003]);
        assert!(conn.is_autocommit());
    }

    #[test]
    fn a_failed_commit_fails_every_item_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir);
        // A deferred foreign key is checked at COMMIT only.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        fn child(conn: &Connection, id: &i64) -> Result<()> {
            insert(conn, id)?;
            conn.execute("INSERT INTO c (id, p) VALUES (?1, ?1)", [id])
                .map_err(|e| KmsError::internal(e.to_string()))?;
            Ok(())
        }
        let results = write_batch(&conn, child, &[1, 2]);
        assert!(results.iter().all(|r| r.is_err()), "{results:?}");
        assert!(ids(&conn).is_empty());
        assert!(conn.is_autocommit());
    }

    #[test]
    fn concurrent_submits_all_commit_and_a_dead_writer_fails_callers() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Arc::new(Mutex::new(open(&dir)));
        let writer = Arc::new(GroupCommit::start("test-writer", conn.clone(), insert).unwrap());
        let threads: Vec<_> = (1..=200i64)
            .map(|i| {
                let w = writer.clone();
                std::thread::spawn(move || w.submit(i))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(ids(&conn.lock().unwrap()).len(), 400);
        assert!(writer.submit(1).is_err());
        // The writer panics: this caller and every later one get an error, none hangs.
        assert!(writer.submit(i64::MIN).is_err());
        assert!(matches!(writer.submit(500), Err(KmsError::Internal(_))));
    }
}
