//! One server per data directory. Each server caches keys, policies and grants and invalidates
//! only its own caches, so a second one would go on using a key the first disabled; the two would
//! also overwrite each other's audit records and, with the embedded HSM, its token files. The lock
//! is an exclusive `flock` on `<data_dir>/kms.lock`, and goes with the process however it ends.
//! `main` takes it before it prepares the embedded HSM, and `Kms::open` again (library users):
//! within one process the second call shares the first's lock. `Kms::open` also `claim`s the
//! directory, so that two `Kms` in one process (a library user, a test) can't share one either.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Holds the lock while any clone of it lives.
pub type Lock = Arc<File>;

/// The locks this process holds, by canonical data directory.
static HELD: Mutex<Vec<(PathBuf, Weak<File>)>> = Mutex::new(Vec::new());

/// The directories a live `Kms` of this process uses.
static CLAIMED: Mutex<Vec<(PathBuf, Weak<()>)>> = Mutex::new(Vec::new());

/// A data directory locked for this process and used by one `Kms` in it, while this lives.
pub struct Claim {
    _lock: Lock,
    _mine: Arc<()>,
}

/// Locks `dir` and claims it for one `Kms`: a second claim while the first lives is refused.
pub fn claim(dir: &Path) -> Result<Claim, String> {
    let lock = lock(dir)?;
    let key = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve data directory {}: {e}", dir.display()))?;
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    claimed.retain(|(_, c)| c.strong_count() > 0);
    if claimed.iter().any(|(d, _)| *d == key) {
        return Err(format!(
            "the data directory {} is already in use by another Kms in this process",
            dir.display()
        ));
    }
    let mine = Arc::new(());
    claimed.push((key, Arc::downgrade(&mine)));
    Ok(Claim {
        _lock: lock,
        _mine: mine,
    })
}

/// Creates `dir` and its missing parents (mode 0700), and makes their names durable: each new directory's
/// entry is synced in its parent. Otherwise a power loss soon after the first start could lose
/// the whole data directory, with keys and audit records acknowledged as written inside it.
pub fn create_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    // Owner only: the audit trail names principals and keys, and the embedded HSM's token is here.
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for created in missing {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Locks `dir` (created if missing) for this process; an error says another server holds it. The
/// data directory must be on a local file system: `flock` over NFS may lock only locally.
pub fn lock(dir: &Path) -> Result<Lock, String> {
    create_durably(dir).map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let key = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve data directory {}: {e}", dir.display()))?;
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|(_, lock)| lock.strong_count() > 0);
    if let Some(lock) = held.iter().find(|(d, _)| *d == key).and_then(|(_, l)| l.upgrade()) {
        return Ok(lock);
    }
    if let Some(mode) = shared_mode(&key) {
        tracing::warn!(
            "the data directory {} is mode {mode:o}: others can read the store (and, with the \
             embedded HSM, list its token); make it owner-only (chmod 700)",
            dir.display()
        );
    }
    let path = key.join("kms.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600) // readable by others, it could be flock'ed by them and stop kms starting
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // One an older build made 0644 too.
    if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!("cannot make {} owner-only: {e}", path.display());
    }
    match file.try_lock() {
        Ok(()) => {
            let lock = Arc::new(file);
            held.push((key, Arc::downgrade(&lock)));
            Ok(lock)
        }
        Err(TryLockError::WouldBlock) => Err(format!(
            "another kms server is using the data directory {} (it holds a lock on {}); only one \
             server may use a data directory",
            dir.display(),
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// The directory's permission bits when group or others have any access to it (one kms created
/// is 0700; an existing one, such as a service manager's state directory, may be 0755).
fn shared_mode(dir: &Path) -> Option<u32> {
    let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn directories_are_created_with_their_parents_relative_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_durably(&deep).unwrap();
        assert!(deep.is_dir());
        for created in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(dir.path().join(created))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{created}");
        }
        create_durably(&deep).expect("there already: nothing to do");
        // A relative name whose parent is the working directory ("" as Path::parent says).
        let cwd = std::env::current_dir().unwrap();
        let relative = format!("kms-test-{}", std::process::id());
        let _ = std::fs::remove_dir(cwd.join(&relative));
        create_durably(Path::new(&relative)).unwrap();
        assert!(cwd.join(&relative).is_dir());
        std::fs::remove_dir(cwd.join(&relative)).unwrap();
    }

    /// A directory others can enter is noticed (kms warns at start); the lock file is owner-only.
    #[test]
    fn a_shared_directory_is_noticed_and_the_lock_file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(shared_mode(dir.path()), None);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(shared_mode(dir.path()), Some(0o755));
        // One left 0644 by an older build is made owner-only too.
        let path = dir.path().join("kms.lock");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _lock = lock(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("kms.lock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn one_kms_per_directory_in_a_process_too() {
        let dir = tempfile::tempdir().unwrap();
        let _main = lock(dir.path()).unwrap(); // as main takes it first
        let first = claim(dir.path()).unwrap();
        let err = claim(&dir.path().join(".")).err().expect("a second Kms is refused");
        assert!(err.contains("another Kms"), "{err}");
        drop(first);
        claim(dir.path()).expect("free again once the first Kms is gone");
    }

    #[test]
    fn one_process_shares_its_lock_and_releases_it_with_the_last_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let again = lock(&dir.path().join(".")).expect("the same directory, spelled otherwise");
        assert!(Arc::ptr_eq(&first, &again));
        // Another open file description (as another process would have) is refused meanwhile.
        let other = File::open(dir.path().join("kms.lock")).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop((first, again));
        other.try_lock().expect("released with the last holder");
    }
}
