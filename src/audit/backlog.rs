//! Whether the audit writer keeps up with its disk. A request waits for its record to be durable,
//! so a disk that stops answering (a dying device, a lost multipath, a hung NFS server) would
//! otherwise hold every request until the request timeout, and pile records up in memory without
//! bound. Past either limit below, a request is refused at once (KMSInternalException), and
//! requests are served again as soon as the writer is back.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::KmsError;

/// Records waiting for the writer, in bytes: far above what requests in flight hold when the disk
/// keeps up (one batch is at most 1 MiB), far below what would strain the server's memory.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// A batch still being written after this long means the disk has stopped answering: a durable
/// write takes milliseconds, a slow one a second.
pub const STALLED: Duration = Duration::from_secs(10);

/// `writing_since` when no batch is being written; `warned_at` before the first warning.
const IDLE: i64 = i64::MIN;

/// Refused records are logged at most this often (with how many there were).
pub const WARN_EVERY: Duration = Duration::from_secs(10);
const WARN_EVERY_MS: i64 = WARN_EVERY.as_millis() as i64;

pub struct Backlog {
    /// Bytes of records handed to the writer and not yet answered.
    queued: AtomicUsize,
    /// When the batch being written began, in milliseconds since `epoch` (`IDLE`: none is).
    writing_since: AtomicI64,
    /// Records refused since the last warning about them. The writer never sees them, so
    /// without this nothing would tell of them: a refusal (say, of an unauthenticated caller)
    /// is answered even when its record was refused.
    refused: AtomicU64,
    /// When refused records were last logged (milliseconds since `epoch`; `IDLE`: never).
    warned_at: AtomicI64,
    epoch: Instant,
}

impl Backlog {
    pub fn new() -> Backlog {
        Backlog {
            queued: AtomicUsize::new(0),
            writing_since: AtomicI64::new(IDLE),
            refused: AtomicU64::new(0),
            warned_at: AtomicI64::new(IDLE),
            epoch: Instant::now(),
        }
    }

    /// Counts a record of `bytes` as queued, unless the writer is stalled or too far behind.
    pub fn admit(&self, bytes: usize) -> Result<(), KmsError> {
        let since = self.writing_since.load(Relaxed);
        if since != IDLE {
            let writing_for = self.now_ms() - since;
            if writing_for > STALLED.as_millis() as i64 {
                return Err(self.refuse(KmsError::internal(format!(
                    "The audit log could not record this request: its disk has not finished a write in {} s",
                    writing_for / 1000
                ))));
            }
        }
        let queued = self.queued.fetch_add(bytes, Relaxed);
        if queued + bytes > MAX_QUEUED_BYTES {
            self.release(bytes);
            return Err(self.refuse(KmsError::internal(format!(
                "The audit log could not record this request: {} MiB of records are waiting for its disk",
                queued >> 20
            ))));
        }
        Ok(())
    }

    /// Counts a refused record, and logs the count once a warning is due.
    fn refuse(&self, e: KmsError) -> KmsError {
        if let Some(records) = self.note_refusal() {
            tracing::error!(records, reason = %e, "audit records refused since the last warning: their requests were refused, or (refusals) answered without a record");
        }
        e
    }

    /// Counts a refused record; Some(records refused since the last warning) when one is due.
    fn note_refusal(&self) -> Option<u64> {
        self.refused.fetch_add(1, Relaxed);
        self.take_refused(false)
    }

    /// The records refused since the last warning, noting a warning as given, when there are any
    /// and one is due (or `now`).
    fn take_refused(&self, now: bool) -> Option<u64> {
        if self.refused.load(Relaxed) == 0 {
            return None;
        }
        let at = self.now_ms();
        let last = self.warned_at.load(Relaxed);
        let due = now || last == IDLE || at - last >= WARN_EVERY_MS;
        (due && self.warned_at.compare_exchange(last, at, Relaxed, Relaxed).is_ok())
            .then(|| self.refused.swap(0, Relaxed))
            .filter(|&records| records > 0)
    }

    /// Logs the refusals held back since the last warning once a warning is due, or `now` (at
    /// shutdown): the writer calls this, so that the last ones are told of though no refusal
    /// comes after them.
    pub fn report_refused(&self, now: bool) {
        if let Some(records) = self.take_refused(now) {
            tracing::error!(records, "audit records refused since the last warning: their requests were refused, or (refusals) answered without a record");
        }
    }

    /// How long until held-back refusals are due to be logged; None when none are held back.
    pub fn refused_due_in(&self) -> Option<Duration> {
        if self.refused.load(Relaxed) == 0 {
            return None;
        }
        let last = self.warned_at.load(Relaxed);
        let since = if last == IDLE {
            WARN_EVERY_MS
        } else {
            self.now_ms().saturating_sub(last)
        };
        Some(Duration::from_millis(WARN_EVERY_MS.saturating_sub(since).max(0) as u64))
    }

    /// Records of `bytes` that were admitted are answered (or will never be written).
    pub fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Relaxed);
    }

    /// The writer starts writing a batch.
    pub fn writing(&self) {
        self.writing_since.store(self.now_ms(), Relaxed);
    }

    /// The writer is done with a batch of `bytes`, durable or failed.
    pub fn written(&self, bytes: usize) {
        self.writing_since.store(IDLE, Relaxed);
        self.release(bytes);
    }

    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// Bytes of records handed to the writer and not yet answered.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Records refused and not yet logged.
    #[cfg(test)]
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// As if the last warning about refused records had been given `ago`.
    #[cfg(test)]
    pub fn warned(&self, ago: Duration) {
        self.warned_at.store(self.now_ms() - ago.as_millis() as i64, Relaxed);
    }

    /// As if the batch being written had begun `ago`.
    #[cfg(test)]
    pub fn writing_since(&self, ago: Duration) {
        self.writing_since
            .store(self.now_ms() - ago.as_millis() as i64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_refused_past_the_byte_limit_and_admitted_again_once_written() {
        let b = Backlog::new();
        b.admit(MAX_QUEUED_BYTES - 10).unwrap();
        b.admit(10).unwrap();
        let refused = b.admit(1).unwrap_err();
        assert_eq!(refused.name(), "KMSInternalException");
        assert!(
            refused.to_string().contains("64 MiB of records are waiting"),
            "{refused}"
        );
        assert_eq!(b.queued(), MAX_QUEUED_BYTES, "a refused record is not counted");
        b.writing();
        b.written(MAX_QUEUED_BYTES - 10);
        b.admit(1).unwrap();
        assert_eq!(b.queued(), 11);
    }

    /// The writer never sees a refused record, so the backlog logs them: the first at once, then
    /// at most one warning per interval with the count since the last.
    #[test]
    fn refused_records_are_counted_into_a_warning_at_most_every_ten_seconds() {
        let b = Backlog::new();
        assert_eq!(b.note_refusal(), Some(1), "the first is logged at once");
        assert_eq!(b.note_refusal(), None);
        assert_eq!(b.note_refusal(), None);
        b.warned_at.store(b.now_ms() - WARN_EVERY_MS, Relaxed);
        assert_eq!(b.note_refusal(), Some(3), "the two held back and this one");
        assert_eq!(b.note_refusal(), None);
        // The one held back, without another refusal: when due, or at once at shutdown.
        assert!(b.refused_due_in().is_some_and(|d| d > Duration::from_secs(9)));
        assert_eq!(b.take_refused(false), None, "not due yet");
        assert_eq!(b.take_refused(true), Some(1), "at shutdown");
        assert_eq!(b.refused_due_in(), None, "none held back");
        assert_eq!(b.take_refused(true), None);
        // Through `admit`: a refusal is counted.
        b.admit(MAX_QUEUED_BYTES).unwrap();
        assert!(b.admit(1).is_err());
        assert_eq!(b.refused.load(Relaxed), 1);
    }

    #[test]
    fn a_batch_written_for_longer_than_the_stall_limit_refuses_new_records() {
        let b = Backlog::new();
        b.writing();
        b.admit(100).expect("a batch just begun is no stall");
        b.writing_since(STALLED - Duration::from_secs(1));
        b.admit(100).expect("not yet stalled");
        b.writing_since(STALLED + Duration::from_secs(2));
        let refused = b.admit(100).unwrap_err();
        assert!(
            refused.to_string().contains("has not finished a write in 12 s"),
            "{refused}"
        );
        assert_eq!(b.queued(), 200);
        // The disk answers: the batch is done, and records are admitted again.
        b.written(200);
        b.admit(100).unwrap();
    }
}
