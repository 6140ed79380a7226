//! The audit trail: one JSON line per request, allowed or refused. Records are written by one
//! thread in batches with one fsync per batch (group commit), and a request is answered only after
//! its record is on disk. Records carry names and outcomes, never plaintext, data keys or material.

mod backlog;
mod file;
mod request_id;
mod stat;
mod time;

use std::path::Path;
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use crate::error::{KmsError, Result};
use backlog::Backlog;
pub use backlog::STALLED;
use file::{AuditFile, Place};
pub use request_id::RequestId;
pub use time::{rfc3339_millis, LAST_RFC3339_SECOND};

/// The outcome of the record a state change makes durable before it changes anything; the
/// record of its real outcome, with the same request id, follows.
pub const STARTED: &str = "Started";

/// What one request did. Filled in as the request is handled; written as one JSON line by
/// [`AuditEvent::to_line`] (field order as declared; optional fields only when present).
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// When the request arrived (its headers: `api::preauth`), not when its record was written.
    pub time: String,
    pub request_id: RequestId,
    pub principal: Arc<str>,
    pub source_ip: Option<String>,
    pub operation: &'static str,
    pub key_arn: Option<String>,
    /// ReEncrypt: the key the ciphertext came from.
    pub source_key_arn: Option<String>,
    pub encryption_context_keys: Vec<String>,
    /// ReEncrypt: the keys of the context the ciphertext was decrypted with.
    pub source_encryption_context_keys: Vec<String>,
    /// "Success", the AWS exception name, or `STARTED` for the record a state change writes
    /// before it changes anything.
    pub outcome: &'static str,
    /// For denials: which rule decided.
    pub decision: Option<String>,
    /// Whether the request came over TLS (the aws:SecureTransport condition key). Not written.
    pub secure_transport: bool,
    /// The alias the caller named the key by (the kms:RequestAlias condition key). Not written.
    pub request_alias: Option<String>,
    /// A record that stands for this many refused requests (unauthenticated refusals past their
    /// address's share of records, `api::refusals`).
    pub count: Option<u64>,
    /// Whether this request's `STARTED` record is written (a request that retries its change
    /// writes it once). Not written.
    pub started: bool,
}

impl AuditEvent {
    pub fn new(operation: &'static str, principal: Arc<str>, source_ip: Option<String>) -> Self {
        AuditEvent {
            time: time::rfc3339_millis(std::time::SystemTime::now()),
            request_id: RequestId::next(),
            principal,
            source_ip,
            operation,
            key_arn: None,
            source_key_arn: None,
            encryption_context_keys: Vec::new(),
            source_encryption_context_keys: Vec::new(),
            outcome: "",
            decision: None,
            secure_transport: false,
            request_alias: None,
            count: None,
            started: false,
        }
    }

    /// The record as one JSON line. Written by hand because it runs on every request: one
    /// allocation, no serializer machinery.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.push(b'{');
        field(&mut out, "time", &self.time);
        field(&mut out, "request_id", &self.request_id);
        field(&mut out, "principal", &self.principal);
        match &self.source_ip {
            Some(ip) => field(&mut out, "source_ip", ip),
            None => out.extend_from_slice(b"\"source_ip\":null,"),
        }
        field(&mut out, "operation", self.operation);
        if let Some(arn) = &self.key_arn {
            field(&mut out, "key_arn", arn);
        }
        if let Some(arn) = &self.source_key_arn {
            field(&mut out, "source_key_arn", arn);
        }
        list_field(&mut out, "encryption_context_keys", &self.encryption_context_keys);
        list_field(
            &mut out,
            "source_encryption_context_keys",
            &self.source_encryption_context_keys,
        );
        field(&mut out, "outcome", self.outcome);
        if let Some(d) = &self.decision {
            field(&mut out, "decision", d);
        }
        if let Some(n) = self.count {
            out.extend_from_slice(format!("\"count\":{n},").as_bytes());
        }
        *out.last_mut().expect("at least one field") = b'}';
        out.push(b'\n');
        out
    }
}

/// `"name":"value",` with the value escaped.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    json_string(out, value);
    out.push(b',');
}

/// `"name":["a","b"],`, or nothing for an empty list.
fn list_field(out: &mut Vec<u8>, name: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, v);
    }
    out.extend_from_slice(b"],");
}

/// A JSON string literal (RFC 8259): quote, backslash and control characters escaped.
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // Almost every value (ARNs, ids, times) needs no escape: one branch-free pass, which the
    // compiler vectorizes, then one copy. The byte-by-byte loop below was 3/4 of a record's cost.
    if !s.bytes().fold(false, |seen, b| seen | needs_escape(b)) {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

type Pending = (Vec<u8>, oneshot::Sender<std::result::Result<(), String>>);

/// Handle to the writer thread. Cloning is cheap; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    backlog: Arc<Backlog>,
    /// Becomes true when the writer thread ends (a panic; or every sender gone, at shutdown).
    writer_ended: tokio::sync::watch::Receiver<bool>,
}

const MAX_BATCH: usize = 4096;
/// A batch stops taking records past this many bytes, so a torn batch is found near the end of
/// the file (`file::REPAIR_WINDOW`).
const MAX_BATCH_BYTES: usize = 1 << 20;

impl AuditLog {
    pub fn open(path: &Path) -> std::result::Result<AuditLog, String> {
        let file =
            AuditFile::open(path, file::STEP).map_err(|e| format!("cannot open audit log {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Pending>();
        let backlog = Arc::new(Backlog::new());
        let writer_backlog = backlog.clone();
        let (ended, writer_ended) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let _ended = WhenDropped(ended);
                write_loop(file, rx, &writer_backlog)
            })
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(AuditLog {
            tx,
            backlog,
            writer_ended,
        })
    }

    /// Bytes of records waiting to be made durable (their requests wait for them).
    pub fn bytes_waiting(&self) -> usize {
        self.backlog.queued()
    }

    /// Resolves when the writer thread has ended: from then on every request is refused (none
    /// can be recorded), which health checks must say.
    pub fn writer_ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.writer_ended.clone();
        async move {
            // An error: the sender is gone, so the thread has ended too.
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// Logs the count of records refused since the last warning (at shutdown: the writer thread,
    /// which logs it too, may not get to before the process exits).
    pub fn report_refused_now(&self) {
        self.backlog.report_refused(true);
    }

    /// Appends the record and waits until it is durable. A record that can't be written fails the
    /// request: an operation that can't be audited is not performed silently. So does one the
    /// writer can't take now (`Backlog`: its disk stalled, or too much waiting for it).
    pub async fn record(&self, event: &AuditEvent) -> Result<()> {
        let line = event.to_line();
        let bytes = line.len();
        self.backlog.admit(bytes)?;
        let (done, wait) = oneshot::channel();
        self.tx.send((line, done)).map_err(|_| {
            self.backlog.release(bytes);
            KmsError::internal("the audit writer has stopped")
        })?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            // The OS error is in the server's log (the writer logs it), not in the answer.
            Ok(Err(_)) => Err(KmsError::internal("the audit log could not record this request")),
            Err(_) => Err(KmsError::internal("the audit writer has stopped")),
        }
    }
}

/// Says the writer thread has ended when dropped: at its end, by return or by unwinding.
struct WhenDropped(tokio::sync::watch::Sender<bool>);

impl Drop for WhenDropped {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// How long the writer polls for the next record before it sleeps: under load the next record
/// comes within microseconds, and a sleep costs a futex wake-up and two context switches.
const LINGER: std::time::Duration = std::time::Duration::from_micros(20);

/// While a failed batch's zeroing is still to be done, the writer tries it again this often when
/// no record comes.
const CLEAN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

enum Next {
    Record(Pending),
    /// The wake-up came before a record.
    Idle,
    Closed,
}

/// The next record: polled for `LINGER` (yielding the CPU), then waited for at most `wake_in`.
fn next_record(rx: &mpsc::Receiver<Pending>, wake_in: std::time::Duration) -> Next {
    let started = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(p) => return Next::Record(p),
            Err(mpsc::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::TryRecvError::Empty) if started.elapsed() < LINGER => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Empty) => {
                return match rx.recv_timeout(wake_in) {
                    Ok(p) => Next::Record(p),
                    Err(mpsc::RecvTimeoutError::Timeout) => Next::Idle,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
                };
            }
        }
    }
}

/// Zeros a failed batch's remains now rather than at the next append (see `AuditFile::clean`).
fn clean(file: &mut AuditFile) {
    if let Err(e) = file.clean() {
        tracing::error!(error = %e, "cannot zero the failed audit batch yet; the next write will");
    }
}

/// Appends a batch and makes it durable in the log. A sync succeeds on a file that was deleted or
/// truncated under the writer although the batch is then in no log: the path is opened again and
/// the batch written there. After a rename (log rotation) the batch is durable in the renamed file,
/// and the next one goes to the file now at the path. On an error, nothing of the batch stays in
/// the log (its requests are refused).
fn write_batch(file: &mut AuditFile, buf: &[u8]) -> std::io::Result<()> {
    for _ in 0..2 {
        let start = file.end();
        let placed = file.append(buf).and_then(|_| file.sync()).and_then(|_| file.place());
        let lost = match placed {
            Ok(Place::Kept) => return Ok(()),
            Ok(Place::Renamed) => {
                match file.reopen() {
                    Ok(at_path) => *file = at_path,
                    Err(e) => {
                        tracing::error!(error = %e, path = %file.path().display(), "the audit log was renamed and its path can't be opened: records still go to the renamed file")
                    }
                }
                return Ok(());
            }
            Ok(Place::Lost(lost)) => lost,
            Err(e) => {
                file.rewind(start);
                clean(file);
                return Err(e);
            }
        };
        tracing::warn!(path = %file.path().display(), "the audit log file was {lost} while in use: opening it again and writing the batch there");
        // Truncated: what this batch wrote past the hole must not look like a torn batch.
        file.rewind(start);
        clean(file);
        *file = file.reopen()?;
    }
    Err(std::io::Error::other(
        "the audit log file was deleted or truncated again while a batch was written",
    ))
}

fn write_loop(mut file: AuditFile, rx: mpsc::Receiver<Pending>, backlog: &Backlog) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    loop {
        // Woken without a record to retry a zeroing, or to log refusals held back; and at least
        // every `backlog::WARN_EVERY`, for refusals counted after this look.
        let refused = backlog.refused_due_in().unwrap_or(backlog::WARN_EVERY);
        let wake_in = if file.stale() {
            refused.min(CLEAN_RETRY)
        } else {
            refused
        };
        let first = match next_record(&rx, wake_in) {
            Next::Record(p) => p,
            Next::Idle => {
                if file.stale() {
                    // A zeroing that hangs is a stalled disk too: past the stall limit, records
                    // are refused at once rather than each waiting out its request's timeout.
                    backlog.writing();
                    clean(&mut file);
                    backlog.written(0);
                }
                backlog.report_refused(false);
                continue;
            }
            Next::Closed => break,
        };
        buf.clear();
        waiters.clear();
        let mut next = Some(first);
        while let Some((line, done)) = next {
            buf.extend_from_slice(&line);
            waiters.push(done);
            next = if waiters.len() < MAX_BATCH && buf.len() < MAX_BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        backlog.writing();
        let result = write_batch(&mut file, &buf).map_err(|e| e.to_string());
        backlog.written(buf.len());
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit log write failed: the batch's requests are refused");
        }
        backlog.report_refused(false);
        for done in waiters.drain(..) {
            let _ = done.send(result.clone());
        }
    }
    // Stopping: a failed batch whose zeroing failed too gets one more try (best effort: nothing
    // waits for this thread at exit).
    backlog.report_refused(true);
    clean(&mut file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_durable_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let mut ev = AuditEvent::new("Encrypt", "anonymous".into(), Some("127.0.0.1".into()));
        ev.outcome = "Success";
        ev.encryption_context_keys = vec!["purpose".into()];
        let writes: Vec<_> = (0..50).map(|_| log.record(&ev)).collect();
        for w in writes {
            w.await.unwrap();
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        assert_eq!(text.lines().count(), 50);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["operation"], "Encrypt");
        assert_eq!(first["encryption_context_keys"][0], "purpose");
        assert!(first.get("key_arn").is_none());
    }

    fn records_in(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        let records = text.trim_end_matches('\0');
        assert!(!records.contains('\0'), "a hole among the records: {records:?}");
        records
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["operation"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    async fn record(log: &AuditLog, operation: &'static str) {
        log.record(&AuditEvent::new(operation, "p".into(), None)).await.unwrap();
    }

    /// The writer gives back what each batch held, and a stalled writer refuses records at once,
    /// without queueing them, until it is done with its batch.
    #[tokio::test]
    async fn the_backlog_follows_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for _ in 0..50 {
            record(&log, "Before").await;
        }
        assert_eq!(log.backlog.queued(), 0);
        log.backlog
            .writing_since(backlog::STALLED + std::time::Duration::from_secs(1));
        let refused = log
            .record(&AuditEvent::new("Stalled", "p".into(), None))
            .await
            .unwrap_err();
        assert_eq!(refused.name(), "KMSInternalException");
        assert!(refused.to_string().contains("has not finished a write"), "{refused}");
        log.backlog.written(0);
        record(&log, "After").await;
        assert_eq!(records_in(&path).len(), 51);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("Stalled"));
    }

    /// Refusals held back after a warning are logged by the writer once a warning is due, though
    /// no refusal comes after them (the disk recovered): after a batch, or on a timed wake-up.
    #[tokio::test]
    async fn refusals_held_back_are_logged_without_another_refusal() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
        let refuse = || async {
            log.backlog.writing_since(backlog::STALLED + Duration::from_secs(1));
            let refused = log.record(&AuditEvent::new("Stalled", "p".into(), None)).await;
            assert!(refused.is_err());
            log.backlog.written(0);
        };
        refuse().await; // logged at once
        refuse().await; // held back
        assert_eq!(log.backlog.refused(), 1);
        // Due by the next batch's end.
        log.backlog.warned(Duration::from_secs(11));
        record(&log, "After").await;
        assert_eq!(log.backlog.refused(), 0, "logged after the batch");
        // Due only after the batch: the writer wakes for it.
        refuse().await;
        log.backlog.warned(Duration::from_secs(5));
        record(&log, "After").await;
        assert_eq!(log.backlog.refused(), 1, "not yet due");
        let waited = std::time::Instant::now();
        while log.backlog.refused() > 0 && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(log.backlog.refused(), 0, "logged on the writer's wake-up");
    }

    #[tokio::test]
    async fn records_acknowledged_after_the_log_was_deleted_are_in_a_new_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        record(&log, "First").await;
        std::fs::remove_file(&path).unwrap();
        record(&log, "Second").await;
        record(&log, "Third").await;
        assert_eq!(records_in(&path), ["Second", "Third"]);
    }

    #[tokio::test]
    async fn records_acknowledged_after_the_log_was_truncated_follow_on_without_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        record(&log, "First").await;
        // logrotate's copytruncate: the records were copied elsewhere, then the log emptied.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        record(&log, "Second").await;
        record(&log, "Third").await;
        assert_eq!(records_in(&path), ["Second", "Third"]);
        drop(log);
        // The next start finds no torn batch: nothing is cut or set aside.
        let log = AuditLog::open(&path).unwrap();
        record(&log, "Fourth").await;
        assert_eq!(records_in(&path), ["Second", "Third", "Fourth"]);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["audit.log"]);
    }

    #[tokio::test]
    async fn after_a_rename_the_next_records_go_to_the_log_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let log = AuditLog::open(&path).unwrap();
        record(&log, "First").await;
        std::fs::rename(&path, &rotated).unwrap();
        // This batch is durable in the renamed file; the writer then moves to the path.
        record(&log, "Second").await;
        record(&log, "Third").await;
        assert_eq!(records_in(&rotated), ["First", "Second"]);
        assert_eq!(records_in(&path), ["Third"]);
    }

    /// The writer's end is seen, whether it returns or panics.
    #[tokio::test]
    async fn the_end_of_the_writer_thread_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
        let ended = log.writer_ended();
        record(&log, "Encrypt").await;
        drop(log); // its sender gone, the writer returns
        tokio::time::timeout(std::time::Duration::from_secs(10), ended)
            .await
            .expect("the writer's return not seen");

        let (ended, seen) = tokio::sync::watch::channel(false);
        let unwound = std::thread::spawn(move || {
            let _ended = WhenDropped(ended);
            panic!("a writer bug");
        })
        .join();
        assert!(unwound.is_err());
        assert!(*seen.borrow(), "the writer's panic not seen");
    }

    #[test]
    fn lines_are_json_with_every_field_escaped() {
        let odd = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h é 😀 </script>";
        let mut ev = AuditEvent::new("ReEncrypt", odd.into(), None);
        ev.key_arn = Some(format!("arn:{odd}"));
        ev.source_key_arn = Some(odd.into());
        ev.encryption_context_keys = vec![odd.into(), "".into()];
        ev.source_encryption_context_keys = vec!["from".into()];
        ev.outcome = "AccessDeniedException";
        ev.decision = Some(odd.into());
        let line = ev.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line per record");
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["principal"], odd);
        assert_eq!(v["key_arn"], format!("arn:{odd}"));
        assert_eq!(v["source_key_arn"], odd);
        assert_eq!(v["encryption_context_keys"], serde_json::json!([odd, ""]));
        assert_eq!(v["source_encryption_context_keys"], serde_json::json!(["from"]));
        assert_eq!(v["decision"], odd);
        assert_eq!(v["outcome"], "AccessDeniedException");
        assert_eq!(v["operation"], "ReEncrypt");
        assert!(v["source_ip"].is_null());
        assert_eq!(v["request_id"], ev.request_id.as_str());
        assert_eq!(v.as_object().unwrap().len(), 11);
        // Optional fields are left out when absent.
        let bare = AuditEvent::new("ListKeys", "p".into(), Some("::1".into()));
        let v: serde_json::Value = serde_json::from_slice(&bare.to_line()).unwrap();
        assert_eq!(v["source_ip"], "::1");
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<RequestId> = (0..1000)
            .map(|_| AuditEvent::new("Encrypt", "p".into(), None).request_id)
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }
}
