//! The audit log file, preallocated: appends overwrite blocks that were written as zeros in
//! `step`-byte steps ahead of the records. An `fdatasync` after an append then has no metadata (file
//! size, block map) to commit through the file system's journal, only the data and a device flush.
//! On ext4 with both cores busy this halved what durable auditing costs GenerateDataKey (BENCHMARKS.md,
//! item 12). The price: after the last record the file holds NUL bytes up to the next step boundary,
//! and readers stop at the first NUL. Opening finds the end of the records again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::stat;

/// How far ahead the file is preallocated: a few thousand records per step, so growing (one write of
/// zeros and one journal commit) is rare, and the padding is small.
pub const STEP: u64 = 4 << 20;

pub struct AuditFile {
    file: File,
    path: PathBuf,
    /// Where the next record goes: just after the last non-NUL byte.
    end: u64,
    /// Bytes of the file written so far (records and zeros).
    allocated: u64,
    step: u64,
    /// After a failed batch: the end of what it may have left in the file, to be zeroed by `clean`
    /// or the next append (0: nothing to clean). Never past `allocated`: nothing was written there.
    stale_until: u64,
    /// Where the last append attempted to write up to.
    attempted: u64,
    /// The file was found shorter than `allocated` before an append (truncated while the writer
    /// was idle): that append may grow it back past `allocated`, hiding the truncation from `place`.
    shrunk: bool,
}

impl AuditFile {
    pub fn open(path: &Path, step: u64) -> io::Result<AuditFile> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // earlier records stay
            .mode(0o600) // records name principals, keys and source addresses
            .open(path)?;
        if created {
            sync_parent(path)?; // the new file's name must survive a power loss as its records do
        } else if file.metadata()?.permissions().mode() & 0o077 != 0 {
            // Made by someone else (a rotation's `create` without a mode, a restore): the mode
            // given above only applies to a file this call creates.
            tracing::warn!(path = %path.display(), "the audit log is readable or writable by others than its owner: its records name principals, keys and source addresses (chmod 600)");
        }
        let allocated = file.metadata()?.len();
        let end = records_end(&file, allocated)?;
        let end = drop_torn_batch(&file, path, end)?;
        let end = drop_torn_record(&file, path, end)?;
        let mut log = AuditFile {
            file,
            path: path.to_path_buf(),
            end,
            allocated,
            step: step.max(1),
            stale_until: 0,
            attempted: end,
            shrunk: false,
        };
        // A line longer than any record (not ours) ends without a newline: the next record
        // starts on a line of its own.
        let mut last = [0u8; 1];
        if end > 0 && log.file.read_exact_at(&mut last, end - 1).is_ok() && last[0] != b'\n' {
            log.append(b"\n")?;
        }
        Ok(log)
    }

    /// Where the next record goes.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Writes `data` after the last record; durable only after `sync`. What a failed batch left
    /// past it is zeroed in the same write.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.shrunk |= stat::of_file(&self.file)?.len < self.allocated;
        let needed = self.end + data.len() as u64;
        self.attempted = needed.max(self.stale_until);
        if needed > self.allocated {
            self.grow(needed)?;
        }
        if self.stale_until > needed {
            let mut cleaned = data.to_vec();
            cleaned.resize((self.stale_until - self.end) as usize, 0);
            self.file.write_all_at(&cleaned, self.end)?;
        } else {
            self.file.write_all_at(data, self.end)?;
        }
        self.end = needed;
        Ok(())
    }

    /// After a failed append or sync: what was written from `from` on is not durable, and its
    /// requests were refused. The next append writes over it and zeros the rest, so a failed
    /// batch's records never show up among later ones.
    pub fn rewind(&mut self, from: u64) {
        // A batch that failed while growing the file wrote nothing past what was allocated.
        self.stale_until = self.stale_until.max(self.attempted).max(self.end).min(self.allocated);
        self.end = from;
    }

    /// Whether a failed batch's remains are still to be zeroed.
    pub fn stale(&self) -> bool {
        self.stale_until > self.end
    }

    /// Zeros what failed batches may have left past the records and makes that durable, so a stop
    /// or a crash before the next append can't leave refused requests' records at the end of the
    /// log, where the next start would take them for acknowledged ones. If it fails too (the disk
    /// still failing), the next append writes over them as before.
    pub fn clean(&mut self) -> io::Result<()> {
        if self.stale_until <= self.end {
            return Ok(());
        }
        let zeros = vec![0u8; (self.stale_until - self.end) as usize];
        self.file.write_all_at(&zeros, self.end)?;
        self.sync()
    }

    /// Makes what was appended durable; once it is, a failed batch's remains are gone for good
    /// (zeroed on disk), so they need not be zeroed again.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.stale_until = 0;
        Ok(())
    }

    /// Whether the records synced so far are still in the log at its path. Someone else may have
    /// deleted the file (`rm`), truncated it (logrotate's `copytruncate`) or renamed it (logrotate's
    /// `create`) while this writer kept its descriptor: a sync then succeeds on a file that is gone,
    /// or after a hole that the next start takes for a torn batch.
    pub fn place(&self) -> io::Result<Place> {
        let meta = stat::of_file(&self.file)?;
        if meta.links == 0 {
            return Ok(Place::Lost("deleted"));
        }
        if self.shrunk || meta.len < self.allocated {
            return Ok(Place::Lost("truncated"));
        }
        Ok(match stat::of_path(&self.path) {
            Ok(now) if now.identity == meta.identity => Place::Kept,
            Ok(_) => Place::Renamed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Place::Renamed,
            // Can't tell (a permission changed on the directory): the descriptor still works.
            Err(_) => Place::Kept,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file now at the log's path (created if there is none), after `place` found it moved.
    pub fn reopen(&self) -> io::Result<AuditFile> {
        AuditFile::open(&self.path, self.step)
    }

    /// Writes zeros up to the step boundary past `needed` (real zeros, not a hole or fallocate's
    /// unwritten extents: either would turn later appends back into metadata changes).
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let target = needed.div_ceil(self.step) * self.step;
        let zeros = vec![0u8; (1 << 20).min(target - self.allocated) as usize];
        while self.allocated < target {
            let n = zeros.len().min((target - self.allocated) as usize);
            self.file.write_all_at(&zeros[..n], self.allocated)?;
            self.allocated += n as u64;
        }
        Ok(())
    }
}

/// Where the records synced through an `AuditFile` are, as `AuditFile::place` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// In the file at the log's path.
    Kept,
    /// In a file that still exists under another name (log rotation); the path names another
    /// file or none: later records go there.
    Renamed,
    /// Not in any log: the file was deleted, or truncated under the writer.
    Lost(&'static str),
}

/// The most a batch writes (`MAX_BATCH_BYTES`) plus one record, however large: a crash during a
/// batch's flush can only have torn the last this many bytes.
const REPAIR_WINDOW: u64 = 2 << 20;

/// A crash while a batch was being flushed can persist a later page of it but not an earlier one,
/// leaving NUL bytes among the records (a record never holds a NUL: JSON escapes it). None of that
/// batch was acknowledged, so the records end at the first such NUL: readers, which stop there,
/// then miss nothing after it. What followed the gap is first copied, byte for byte, to
/// `<log>.torn-<offset>` beside the log and the cut is logged: a log written by an older build
/// (which appended after a gap) may hold acknowledged records there, and none is ever destroyed.
fn drop_torn_batch(file: &File, path: &Path, end: u64) -> io::Result<u64> {
    let (from, tail) = read_tail(file, end)?;
    let Some(gap) = tail.iter().position(|&b| b == 0) else {
        return Ok(end);
    };
    let cut = from + gap as u64;
    set_aside(
        file,
        path,
        cut,
        &tail[gap..],
        "its records end at the gap; what followed it is kept aside",
    )?;
    Ok(cut)
}

/// A crash during a batch's write can also cut its last record short with no gap after it: a
/// line without its newline. A batch is synced with its final newline before anyone is answered,
/// so that record was never acknowledged; it goes aside as a torn batch does, and readers never
/// meet a line that isn't JSON. A "line" longer than the repair window is no record of ours (the
/// longest is ~150 KiB): it stays, and the next record starts a line of its own.
fn drop_torn_record(file: &File, path: &Path, end: u64) -> io::Result<u64> {
    let (from, tail) = read_tail(file, end)?;
    if tail.last().is_none_or(|&b| b == b'\n') {
        return Ok(end);
    }
    let start = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if from == 0 => 0,
        None => return Ok(end),
    };
    let cut = from + start as u64;
    set_aside(
        file,
        path,
        cut,
        &tail[start..],
        "its last record is cut short; it is kept aside",
    )?;
    Ok(cut)
}

/// The last `REPAIR_WINDOW` bytes before `end`, and where they start.
fn read_tail(file: &File, end: u64) -> io::Result<(u64, Vec<u8>)> {
    let from = end.saturating_sub(REPAIR_WINDOW);
    let mut tail = vec![0u8; (end - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    Ok((from, tail))
}

/// Copies `torn` (the log's bytes from `cut` to its end) to a new file beside the log, durably,
/// then zeros it in the log: nothing is ever destroyed.
fn set_aside(file: &File, path: &Path, cut: u64, torn: &[u8], what: &str) -> io::Result<()> {
    let (mut kept, aside) = create_aside(path, cut)?;
    std::io::Write::write_all(&mut kept, torn)?;
    kept.sync_all()?;
    sync_parent(&aside)?;
    tracing::warn!(
        offset = cut,
        bytes = torn.len(),
        kept = %aside.display(),
        "the audit log's last batch was torn by a crash: {what}"
    );
    file.write_all_at(&vec![0u8; torn.len()], cut)?;
    file.sync_data()
}

/// A new `<log>.torn-<offset>` file, or `<log>.torn-<offset>.<n>` if a torn batch was already
/// kept for that offset (a crash loop can cut at the same place twice): never one written over.
fn create_aside(path: &Path, cut: u64) -> io::Result<(File, PathBuf)> {
    for n in 0u32.. {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".torn-{cut}"));
        if n > 0 {
            aside.push(format!(".{n}"));
        }
        let aside = PathBuf::from(aside);
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside) {
            Ok(file) => return Ok((file, aside)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name for the torn batch"))
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The offset just past the last non-NUL byte among the first `len` bytes of the file.
fn records_end(file: &File, len: u64) -> io::Result<u64> {
    let mut block = vec![0u8; 64 * 1024];
    let mut to = len;
    while to > 0 {
        let from = to.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(to - from) as usize];
        file.read_exact_at(chunk, from)?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(from + i as u64 + 1);
        }
        to = from;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn appends_fill_preallocated_steps_and_reopening_continues_after_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditFile::open(&path, 100).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "records name principals and keys: owner only");
        log.append(b"{\"a\":1}\n").unwrap();
        log.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100, "one step of zeros");
        assert_eq!(text(&path).trim_end_matches('\0'), "{\"a\":1}\n");
        // Crossing step boundaries, with a record longer than a step.
        let long = format!("{}\n", "x".repeat(250));
        log.append(long.as_bytes()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 300);
        drop(log);
        let mut log = AuditFile::open(&path, 100).unwrap();
        log.append(b"{\"b\":2}\n").unwrap();
        assert_eq!(
            text(&path).trim_end_matches('\0'),
            format!("{{\"a\":1}}\n{long}{{\"b\":2}}\n")
        );
    }

    /// logrotate's copytruncate while the writer is idle, and a next batch that grows the file
    /// (or ends exactly at what was allocated): the file is as long as expected again, but with a
    /// hole where the records were.
    #[test]
    fn a_truncation_is_seen_even_when_the_next_append_grows_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for second in [&b"{\"b\":22}\n"[..], &b"{\"b\":2}\n"[..]] {
            let mut log = AuditFile::open(&path, 16).unwrap();
            log.append(b"{\"a\":1}\n").unwrap(); // 8 bytes of a 16-byte step
            log.sync().unwrap();
            assert_eq!(log.place().unwrap(), Place::Kept);
            File::options().write(true).open(&path).unwrap().set_len(0).unwrap();
            log.append(second).unwrap(); // ends at 17 (grows) or at 16 (exactly the step)
            log.sync().unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() >= 16);
            assert_eq!(log.place().unwrap(), Place::Lost("truncated"), "{second:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_batch_torn_by_a_crash_is_dropped_at_the_first_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // A power loss kept the second page of the last batch but not its first.
        let mut bytes = b"{\"a\":1}\n{\"b\":".to_vec();
        bytes.extend_from_slice(&[0u8; 100]);
        bytes.extend_from_slice(b"2}\n{\"c\":3}\n");
        bytes.extend_from_slice(&[0u8; 50]);
        std::fs::write(&path, &bytes).unwrap();
        let mut log = AuditFile::open(&path, 1000).unwrap();
        log.append(b"{\"d\":4}\n").unwrap();
        let text = text(&path);
        assert_eq!(text.trim_end_matches('\0'), "{\"a\":1}\n{\"d\":4}\n");
        assert!(
            !text.contains("\"c\""),
            "nothing of the torn batch after the gap: {text:?}"
        );
        let cut = "{\"a\":1}\n{\"b\":".len();
        let aside = std::fs::read(dir.path().join(format!("audit.log.torn-{cut}"))).unwrap();
        assert!(
            aside.ends_with(b"2}\n{\"c\":3}\n"),
            "what followed the gap is kept: {aside:?}"
        );
        // And the record the gap cut short, before it.
        let aside = std::fs::read(dir.path().join("audit.log.torn-8")).unwrap();
        assert_eq!(aside, b"{\"b\":");
    }

    #[test]
    fn a_line_longer_than_any_record_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let foreign = "x".repeat(REPAIR_WINDOW as usize + 10);
        std::fs::write(&path, format!("{{\"a\":1}}\n{foreign}")).unwrap();
        let mut log = AuditFile::open(&path, 64).unwrap();
        log.append(b"{\"b\":2}\n").unwrap();
        let t = text(&path);
        let lines: Vec<&str> = t.trim_end_matches('\0').lines().collect();
        assert_eq!(lines, ["{\"a\":1}", foreign.as_str(), "{\"b\":2}"]);
    }

    #[test]
    fn a_second_batch_torn_at_the_same_offset_is_kept_beside_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let torn = |tail: &[u8]| {
            let mut bytes = b"{\"a\":1}\n".to_vec();
            bytes.extend_from_slice(&[0u8; 20]);
            bytes.extend_from_slice(tail);
            bytes
        };
        let path = dir.path().join("audit.log");
        std::fs::write(&path, torn(b"{\"first\":1}\n")).unwrap();
        drop(AuditFile::open(&path, 1000).unwrap());
        // A crash loop: the next batch tears at the same place.
        std::fs::write(&path, torn(b"{\"second\":2}\n")).unwrap();
        drop(AuditFile::open(&path, 1000).unwrap());
        let first = std::fs::read(dir.path().join("audit.log.torn-8")).unwrap();
        let second = std::fs::read(dir.path().join("audit.log.torn-8.1")).unwrap();
        assert!(first.ends_with(b"{\"first\":1}\n"), "{first:?}");
        assert!(second.ends_with(b"{\"second\":2}\n"), "{second:?}");
    }

    #[test]
    fn a_failed_batch_is_written_over_and_its_remains_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditFile::open(&path, 1000).unwrap();
        log.append(b"{\"a\":1}\n").unwrap();
        // A batch whose sync failed: its requests were refused, so it must not stay in the log.
        let start = log.end();
        log.append(b"{\"failed\":\"a long batch of records\"}\n").unwrap();
        log.rewind(start);
        log.append(b"{\"b\":2}\n").unwrap();
        let text = text(&path);
        assert_eq!(text.trim_end_matches('\0'), "{\"a\":1}\n{\"b\":2}\n");
        assert!(!text.contains("failed") && !text.contains("records"), "{text:?}");
        // Two failed batches in a row, the second shorter: neither leaves anything behind.
        let start = log.end();
        log.append(b"{\"failed\":\"the longest batch of refused records\"}\n")
            .unwrap();
        log.rewind(start);
        log.append(b"{\"failed\":2}\n").unwrap();
        log.rewind(start);
        log.append(b"{\"c\":3}\n").unwrap();
        log.sync().unwrap();
        let text = super::tests::text(&path);
        assert_eq!(text.trim_end_matches('\0'), "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
        assert!(!text.contains("failed") && !text.contains("refused"), "{text:?}");
        // Reopened, it continues after the last record.
        drop(log);
        let log = AuditFile::open(&path, 1000).unwrap();
        assert_eq!(log.end() as usize, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n".len());
    }

    #[test]
    fn a_batch_that_failed_while_growing_the_file_is_not_zeroed_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditFile::open(&path, 100).unwrap();
        log.append(b"{\"a\":1}\n").unwrap();
        let start = log.end();
        // As if growing for a 1000-byte batch failed (ENOSPC) after the first step.
        log.attempted = start + 1000;
        log.rewind(start);
        assert!(
            log.stale_until <= log.allocated,
            "{} > {}",
            log.stale_until,
            log.allocated
        );
        log.clean().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100, "the file did not grow");
        assert!(!log.stale());
    }

    #[test]
    fn a_failed_batch_is_zeroed_at_once_so_a_stop_before_the_next_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditFile::open(&path, 1000).unwrap();
        log.append(b"{\"a\":1}\n").unwrap();
        log.sync().unwrap();
        let start = log.end();
        log.append(b"{\"refused\":1}\n{\"refused\":2}\n").unwrap();
        log.rewind(start);
        log.clean().unwrap();
        // Stopped here, with no later append: reopened, the refused records are not in the log.
        drop(log);
        assert_eq!(text(&path).trim_end_matches('\0'), "{\"a\":1}\n");
        let log = AuditFile::open(&path, 1000).unwrap();
        assert_eq!(log.end() as usize, "{\"a\":1}\n".len());
    }

    #[test]
    fn a_torn_last_record_is_set_aside_and_plain_files_are_continued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // A log from before preallocation (no padding) ending in a torn record.
        std::fs::write(&path, "{\"a\":1}\n{\"to").unwrap();
        let mut log = AuditFile::open(&path, 64).unwrap();
        log.append(b"{\"b\":2}\n").unwrap();
        let t = text(&path);
        let lines: Vec<&str> = t.trim_end_matches('\0').lines().collect();
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(std::fs::read(dir.path().join("audit.log.torn-8")).unwrap(), b"{\"to");
        let aside = std::fs::metadata(dir.path().join("audit.log.torn-8")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&aside.permissions()) & 0o777,
            0o600
        );
        // Padding longer than the scan block (64 KiB): the end is still found.
        drop(log);
        let mut log = AuditFile::open(&path, 200_000).unwrap();
        let c = format!("{}\n", "c".repeat(49));
        log.append(c.as_bytes()).unwrap();
        drop(log);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 200_000);
        let log = AuditFile::open(&path, 200_000).unwrap();
        assert_eq!(log.end as usize, t.trim_end_matches('\0').len() + c.len());
    }
}
