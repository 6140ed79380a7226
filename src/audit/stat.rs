//! What the audit writer asks of its file around each batch (size, links, identity), without
//! asking for its times.
//!
//! stat(2), and std's `metadata`, return the modification and change times too. Since Linux 6.13,
//! a file whose times were asked for gets a fine-grained time at its next write (multigrain
//! timestamps), so the times changed at every batch, and on ext4 without a journal every
//! `fdatasync` then wrote the inode's block as well as the records: 133-144 us a flush instead of
//! 94-99 us, 70 us of CPU instead of 45 (BENCHMARKS.md, session 25). statx(2) with a mask that
//! leaves the times out doesn't mark them as asked for.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{makedev, statx, AtFlags, StatxFlags, CWD};

/// What `AuditFile` checks of a file: whether it was truncated, deleted or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub len: u64,
    pub links: u64,
    /// Device and inode: the same pair means the same file.
    pub identity: (u64, u64),
}

pub fn of_file(file: &File) -> io::Result<Stat> {
    match stat_at(statx(file, "", AtFlags::EMPTY_PATH, WANTED)) {
        Some(stat) => Ok(stat),
        None => Ok(from_metadata(&file.metadata()?)),
    }
}

pub fn of_path(path: &Path) -> io::Result<Stat> {
    match stat_at(statx(CWD, path, AtFlags::empty(), WANTED)) {
        Some(stat) => Ok(stat),
        None => Ok(from_metadata(&std::fs::metadata(path)?)),
    }
}

const WANTED: StatxFlags = StatxFlags::SIZE.union(StatxFlags::NLINK).union(StatxFlags::INO);

/// None when statx can't answer (a kernel before 4.11, a sandbox refusing it, a file system
/// that leaves a field out), for the caller to ask stat(2) instead; an error of the file itself
/// (not found, no permission) as stat(2) would give it.
fn stat_at(answer: rustix::io::Result<rustix::fs::Statx>) -> Option<Stat> {
    match answer {
        Ok(s) if StatxFlags::from_bits_retain(s.stx_mask).contains(WANTED) => Some(Stat {
            len: s.stx_size,
            links: u64::from(s.stx_nlink),
            identity: (makedev(s.stx_dev_major, s.stx_dev_minor), s.stx_ino),
        }),
        _ => None,
    }
}

fn from_metadata(meta: &std::fs::Metadata) -> Stat {
    Stat {
        len: meta.len(),
        links: meta.nlink(),
        identity: (meta.dev(), meta.ino()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statx_and_stat_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"12345").unwrap();
        let file = File::open(&path).unwrap();
        let by_statx = of_file(&file).unwrap();
        assert_eq!(by_statx, from_metadata(&file.metadata().unwrap()));
        assert_eq!(by_statx, of_path(&path).unwrap());
        assert_eq!((by_statx.len, by_statx.links), (5, 1));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(of_file(&file).unwrap().links, 0);
        assert_eq!(of_path(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
