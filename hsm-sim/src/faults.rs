//! Fault injection driven by a TOML control file that another process may
//! rewrite at any time. The file is stat'ed at most every 50 ms and
//! re-parsed only when its mtime or size changes, so the hot path costs an
//! atomic load and a clock read.
//!
//! Rule keys: `latency_ms` (fixed or `[lo, hi]`), `error_rate`, `error` (a
//! return code name, see `rv_by_name`), `functions` (the rule applies to
//! these only; `"*"` is all), `fail_next`, `unplugged`, and `record`: a file
//! to which the name of every call the rule applies to is appended, one per
//! line, before its latency or failure (so a test can count the calls that
//! reached the module, e.g. C_Login; C_CloseSession is only recorded, never
//! failed or delayed), and `corrupt_output`: C_Encrypt and
//! C_Decrypt answer with the first byte of their output flipped, and
//! C_CopyObject makes a copy whose CKA_VALUE differs in its first byte (a
//! device that returns wrong data, as a caller's self-check must catch), and
//! `until_released`: a call's latency ends early once the file no longer
//! gives that call a latency (so a test can hold calls until it releases
//! them; without it a call sleeps its whole latency, as a hung device would).
use crate::Rv;
use cryptoki_sys::*;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

const CHECK_EVERY_MS: u64 = 50;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Latency {
    Fixed(u64),
    Range([u64; 2]),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    latency_ms: Option<Latency>,
    error_rate: Option<f64>,
    error: Option<String>,
    functions: Option<Vec<String>>,
    fail_next: Option<u64>,
    unplugged: Option<bool>,
    record: Option<PathBuf>,
    corrupt_output: Option<bool>,
    until_released: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawFile {
    #[serde(flatten)]
    top: RawRule,
    #[serde(default)]
    slot: HashMap<String, RawRule>,
}

#[derive(Debug, Default)]
struct Rule {
    latency: Option<(u64, u64)>,
    error_rate: f64,
    error_rv: CK_RV,
    functions: Option<Vec<String>>,
    fail_next: AtomicU64,
    unplugged: bool,
    record: Option<PathBuf>,
    corrupt_output: bool,
    until_released: bool,
}

fn rv_by_name(name: &str) -> Result<CK_RV, String> {
    Ok(match name {
        "CKR_DEVICE_ERROR" => CKR_DEVICE_ERROR,
        "CKR_FUNCTION_FAILED" => CKR_FUNCTION_FAILED,
        "CKR_GENERAL_ERROR" => CKR_GENERAL_ERROR,
        "CKR_DEVICE_MEMORY" => CKR_DEVICE_MEMORY,
        "CKR_TOKEN_NOT_PRESENT" => CKR_TOKEN_NOT_PRESENT,
        "CKR_DEVICE_REMOVED" => CKR_DEVICE_REMOVED,
        "CKR_PIN_INCORRECT" => CKR_PIN_INCORRECT,
        "CKR_PIN_LOCKED" => CKR_PIN_LOCKED,
        "CKR_PIN_EXPIRED" => CKR_PIN_EXPIRED,
        "CKR_PIN_INVALID" => CKR_PIN_INVALID,
        "CKR_PIN_LEN_RANGE" => CKR_PIN_LEN_RANGE,
        other => return Err(format!("unknown error name {other}")),
    })
}

impl Rule {
    fn from_raw(r: &RawRule) -> Result<Rule, String> {
        Ok(Rule {
            latency: r.latency_ms.as_ref().map(|l| match l {
                Latency::Fixed(ms) => (*ms, *ms),
                Latency::Range([a, b]) => (*a.min(b), *a.max(b)),
            }),
            error_rate: r.error_rate.unwrap_or(0.0).clamp(0.0, 1.0),
            error_rv: rv_by_name(r.error.as_deref().unwrap_or("CKR_DEVICE_ERROR"))?,
            functions: r.functions.clone(),
            fail_next: AtomicU64::new(r.fail_next.unwrap_or(0)),
            unplugged: r.unplugged.unwrap_or(false),
            record: r.record.clone(),
            corrupt_output: r.corrupt_output.unwrap_or(false),
            until_released: r.until_released.unwrap_or(false),
        })
    }

    fn applies(&self, func: &str) -> bool {
        self.functions
            .as_ref()
            .is_none_or(|fs| fs.iter().any(|f| f == func || f == "*"))
    }

    fn is_active(&self) -> bool {
        self.latency.is_some()
            || self.error_rate > 0.0
            || self.fail_next.load(Ordering::Relaxed) > 0
            || self.unplugged
            || self.record.is_some()
            || self.corrupt_output
    }
}

#[derive(Default)]
struct State {
    stamp: Option<(SystemTime, u64)>,
    top: Rule,
    slots: HashMap<usize, Rule>,
}

impl State {
    fn rule(&self, slot: usize) -> &Rule {
        self.slots.get(&slot).unwrap_or(&self.top)
    }
}

pub struct Faults {
    path: PathBuf,
    start: Instant,
    next_check_ms: AtomicU64,
    active: AtomicBool,
    /// Held while the file is checked; see `refresh`.
    reload: Mutex<()>,
    state: RwLock<State>,
    /// Bumped each time a slot becomes unplugged: sessions opened in an
    /// older epoch are dead.
    epochs: Vec<AtomicU64>,
}

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if SystemRandom::new().fill(&mut b).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Appends `func` and a newline to `path` in one write (O_APPEND: lines of
/// concurrent calls never interleave). A file that can't be written is
/// skipped: the call itself is not failed for it.
fn record_call(path: &std::path::Path, func: &str) {
    use std::io::Write;
    let line = format!("{func}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("hsm-sim: cannot record a call to {}: {e}", path.display());
    }
}

impl Faults {
    pub fn new(path: PathBuf, slots: usize) -> Faults {
        let f = Faults {
            path,
            start: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            active: AtomicBool::new(false),
            reload: Mutex::new(()),
            state: RwLock::new(State::default()),
            epochs: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        };
        f.refresh();
        f
    }

    fn refresh(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        if now < self.next_check_ms.load(Ordering::Acquire) {
            return;
        }
        // Calls that come due together wait for the one check between them: a call that
        // went on before the reload finished would miss a fault the file already names.
        let _reloading = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        if now < self.next_check_ms.load(Ordering::Acquire) {
            return;
        }
        self.reload_if_changed();
        // Only now: a call that finds the check not yet due must find its result in place.
        self.next_check_ms.store(now + CHECK_EVERY_MS, Ordering::Release);
    }

    fn reload_if_changed(&self) {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if self.state.read().map(|s| s.stamp == stamp).unwrap_or(true) {
            return;
        }
        let parsed = match stamp {
            None => Ok(RawFile::default()),
            Some(_) => std::fs::read_to_string(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str::<RawFile>(&t).map_err(|e| e.to_string())),
        };
        let built = parsed.and_then(|raw| {
            let mut slots = HashMap::new();
            for (k, r) in &raw.slot {
                let n: usize = k.parse().map_err(|_| format!("bad slot number {k}"))?;
                slots.insert(n, Rule::from_raw(r)?);
            }
            Ok(State {
                stamp,
                top: Rule::from_raw(&raw.top)?,
                slots,
            })
        });
        let mut st = match self.state.write() {
            Ok(st) => st,
            Err(_) => return,
        };
        match built {
            Ok(new) => {
                for (i, e) in self.epochs.iter().enumerate() {
                    if new.rule(i).unplugged && !st.rule(i).unplugged {
                        e.fetch_add(1, Ordering::AcqRel);
                    }
                }
                let active = new.top.is_active() || new.slots.values().any(Rule::is_active);
                *st = new;
                self.active.store(active, Ordering::Release);
            }
            Err(e) => {
                // Keep the previous rules; remember the stamp to warn once.
                eprintln!("hsm-sim: ignoring fault file {}: {e}", self.path.display());
                st.stamp = stamp;
            }
        }
    }

    pub fn epoch(&self, slot: usize) -> u64 {
        self.epochs.get(slot).map_or(0, |e| e.load(Ordering::Acquire))
    }

    pub fn unplugged(&self, slot: usize) -> bool {
        self.refresh();
        self.active.load(Ordering::Acquire) && self.state.read().map(|s| s.rule(slot).unplugged).unwrap_or(false)
    }

    /// Whether `func`'s output is to be corrupted (`corrupt_output`) on the slot `slot` names.
    /// The rules were refreshed by the call's `check`; with no fault active this costs one
    /// atomic load (`slot` is not asked).
    pub fn corrupts(&self, func: &str, slot: impl FnOnce() -> Option<usize>) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let Some(slot) = slot() else { return false };
        self.state
            .read()
            .map(|s| s.rule(slot).corrupt_output && s.rule(slot).applies(func))
            .unwrap_or(false)
    }

    /// Records a call of `func` on `slot` to the rule's `record` file, if the rule applies to it,
    /// and applies nothing else: for calls that must not fail or wait (C_CloseSession, whose
    /// caller has let go of the session, and which runs under the slot's open/close lock).
    pub fn record_only(&self, slot: usize, func: &str) {
        self.refresh();
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let record = match self.state.read() {
            Ok(st) if st.rule(slot).applies(func) => st.rule(slot).record.clone(),
            _ => None,
        };
        if let Some(path) = record {
            record_call(&path, func);
        }
    }

    /// Applies the configured faults to one call of `func` on `slot`.
    pub fn check(&self, slot: usize, func: &str, session_call: bool) -> Rv<()> {
        self.refresh();
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let (latency, until_released, result, record) = {
            let Ok(st) = self.state.read() else {
                return Ok(());
            };
            let rule = st.rule(slot);
            if rule.unplugged {
                return Err(if session_call {
                    CKR_DEVICE_REMOVED
                } else {
                    CKR_TOKEN_NOT_PRESENT
                });
            }
            if !rule.applies(func) {
                return Ok(());
            }
            let fail = rule
                .fail_next
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
                || (rule.error_rate > 0.0 && random_unit() < rule.error_rate);
            (
                rule.latency,
                rule.until_released,
                if fail { Err(rule.error_rv) } else { Ok(()) },
                rule.record.clone(),
            )
        };
        if let Some(path) = record {
            record_call(&path, func);
        }
        if let Some((lo, hi)) = latency {
            let ms = lo + ((hi - lo) as f64 * random_unit()) as u64;
            if until_released {
                self.hold(slot, func, Duration::from_millis(ms));
            } else {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        result
    }

    /// Sleeps up to `latency`, in steps of the file's check interval, and stops as soon as the
    /// rules no longer give `func` on `slot` a latency to be held for (`until_released`).
    fn hold(&self, slot: usize, func: &str, latency: Duration) {
        let until = Instant::now() + latency;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(CHECK_EVERY_MS)));
            self.refresh();
            let held = self.active.load(Ordering::Acquire)
                && self.state.read().is_ok_and(|s| {
                    let rule = s.rule(slot);
                    rule.until_released && rule.latency.is_some() && rule.applies(func)
                });
            if !held {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Calls that come due at the same moment all see a fault the file has just gained: none
    /// goes on under the old rules while another call reloads them.
    #[test]
    fn calls_that_come_due_together_all_see_a_new_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.toml");
        let faults = Arc::new(Faults::new(path.clone(), 1));
        const CALLERS: usize = 8;
        for round in 0..20 {
            let failing = round % 2 == 0;
            let text = if failing { "error_rate = 1.0\n" } else { "" };
            std::fs::write(&path, format!("{text}# round {round}\n")).unwrap();
            std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS + 10));
            let barrier = Arc::new(Barrier::new(CALLERS));
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (faults, barrier) = (faults.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        faults.check(0, "C_Decrypt", true).is_err()
                    })
                })
                .collect();
            for c in callers {
                assert_eq!(c.join().unwrap(), failing, "round {round}");
            }
        }
    }
}
