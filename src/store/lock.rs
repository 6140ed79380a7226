//! Locking a SQLite connection that a panicking thread held. The lock is poisoned, but the
//! connection is sound: rusqlite rolls a dropped transaction back as the panic unwinds, and
//! anything still open is rolled back here. Refusing the connection instead would fail every
//! later write (or one read in N) until a restart, for one request's bug.

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::Connection;

use crate::error::Result;

/// `conn`, locked; recovered if a panic poisoned it.
pub fn lock(conn: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>> {
    match conn.lock() {
        Ok(guard) => Ok(guard),
        Err(poisoned) => recover(conn, poisoned),
    }
}

/// `conn`, if free; recovered if a panic poisoned it.
pub fn try_lock(conn: &Mutex<Connection>) -> Option<Result<MutexGuard<'_, Connection>>> {
    match conn.try_lock() {
        Ok(guard) => Some(Ok(guard)),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Poisoned(poisoned)) => Some(recover(conn, poisoned)),
    }
}

fn recover<'a>(
    conn: &'a Mutex<Connection>,
    poisoned: PoisonError<MutexGuard<'a, Connection>>,
) -> Result<MutexGuard<'a, Connection>> {
    let guard = poisoned.into_inner();
    if !guard.is_autocommit() {
        guard.execute_batch("ROLLBACK").map_err(super::failure)?;
    }
    conn.clear_poison();
    tracing::warn!("a store connection was held by a thread that panicked; its transaction is rolled back");
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Mutex<Connection> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        Mutex::new(conn)
    }

    fn count(conn: &Mutex<Connection>) -> i64 {
        lock(conn)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// A thread that panics inside a transaction leaves nothing of it, and the connection serves
    /// the next caller: locked or tried.
    #[test]
    fn a_panic_inside_a_transaction_rolls_it_back_and_the_connection_goes_on() {
        let conn = table();
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let mut guard = lock(&conn).unwrap();
                let tx = guard.transaction().unwrap();
                tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
                panic!("a bug while writing");
            })
            .join()
        });
        assert!(panicked.is_err());
        assert!(conn.is_poisoned());
        assert_eq!(count(&conn), 0, "the panicking transaction left nothing");
        assert!(!conn.is_poisoned());
        lock(&conn).unwrap().execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(count(&conn), 1);
    }

    /// A panic between BEGIN and COMMIT issued as statements (no `Transaction` to roll back as it
    /// unwinds) leaves the transaction open: it is rolled back before the connection is handed on.
    #[test]
    fn a_transaction_left_open_by_a_panic_is_rolled_back() {
        let conn = table();
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let guard = lock(&conn).unwrap();
                guard.execute_batch("BEGIN; INSERT INTO t VALUES (1);").unwrap();
                panic!("a bug while writing");
            })
            .join()
        });
        let recovered = try_lock(&conn).expect("free").unwrap();
        assert!(recovered.is_autocommit(), "no transaction still open");
        drop(recovered);
        assert_eq!(count(&conn), 0);
    }
}
