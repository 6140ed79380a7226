//! Which object handle operations use for the root key: the token object itself, or a session copy
//! of it inside the same token.
//!
//! Software tokens (SoftHSM2) re-read a token object's file, with a lock and a stat, on every use:
//! two thirds of an unwrap's cost. A session copy (C_CopyObject with CKA_TOKEN false) stays in the
//! token's memory with the same attributes (sensitive, not extractable), so custody is unchanged. The
//! copy lives as long as the session that made it (the anchor), and the token object is looked up
//! again every `check_every`: once it is gone (destroyed by an operator, token re-initialised) the
//! copy is destroyed too and unwraps fail as they would without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::error::Error;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::pool::{find_root, RootLookup};

/// The copy and the session that owns it; dropping the anchor closes it, which destroys the copy.
struct SessionCopy {
    anchor: Session,
    handle: ObjectHandle,
}

pub struct RootCopy {
    /// None: operations use the token object (no copy).
    check_every: Option<Duration>,
    copy: Mutex<Option<SessionCopy>>,
    /// The HSM refused to copy the key (CKA_COPYABLE false, or no C_CopyObject): use the token object.
    refused: std::sync::atomic::AtomicBool,
    /// Milliseconds after `epoch` when the token object is next looked up.
    next_check_ms: AtomicU64,
    epoch: Instant,
}

/// What a session should use as the root key.
pub enum RootHandle {
    Token(ObjectHandle),
    Copy(ObjectHandle),
}

impl RootHandle {
    pub fn handle(&self) -> ObjectHandle {
        match self {
            RootHandle::Token(h) | RootHandle::Copy(h) => *h,
        }
    }
}

impl RootCopy {
    pub fn new(check_every: Option<Duration>) -> Self {
        RootCopy {
            check_every,
            copy: Mutex::new(None),
            refused: false.into(),
            next_check_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The root key handle for a newly opened session. `openanchor` opens the session that will own
    /// a new copy.
    pub fn handle(
        &self,
        session: &Session,
        id: &[u8],
        openanchor: impl Fn() -> Result<Session, Error>,
    ) -> Result<RootHandle, Error> {
        let token = match find_root(session, id)? {
            RootLookup::One(h) => h,
            // Checked at start; losing it now is a device or operator problem, not a bug here.
            _ => return Err(missing()),
        };
        if self.check_every.is_none() || self.refused.load(Ordering::Relaxed) {
            return Ok(RootHandle::Token(token));
        }
        let mut copy = self.copy.lock().map_err(|_| missing())?;
        if let Some(c) = copy.as_ref() {
            return Ok(RootHandle::Copy(c.handle));
        }
        let anchor = openanchor()?;
        match anchor.copy_object(token, &[Attribute::Token(false)]) {
            Ok(handle) => {
                *copy = Some(SessionCopy { anchor, handle });
                self.schedule_check();
                Ok(RootHandle::Copy(handle))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the HSM would not copy the root key into a session; using the token object");
                self.refused.store(true, Ordering::Relaxed);
                Ok(RootHandle::Token(token))
            }
        }
    }

    /// Whether the token object should be looked up again now (at most one caller gets `true` per
    /// period).
    pub fn check_due(&self) -> bool {
        let Some(every) = self.check_every else { return false };
        let now = self.now_ms();
        let due = self.next_check_ms.load(Ordering::Relaxed);
        now >= due
            && self
                .next_check_ms
                .compare_exchange(
                    due,
                    now.saturating_add(millis(every)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Looks the token object up through the anchor session. False when a copy exists but the
    /// token object is gone (or can't be looked up): the caller must `forget` the copy.
    pub fn still_on_token(&self, id: &[u8]) -> bool {
        let Ok(copy) = self.copy.lock() else { return false };
        match copy.as_ref() {
            None => true,
            Some(c) => matches!(find_root(&c.anchor, id), Ok(RootLookup::One(_))),
        }
    }

    /// Destroys the copy (closing its anchor session); the next session makes a new one if the
    /// token object is still there.
    pub fn forget(&self) {
        if let Ok(mut copy) = self.copy.lock() {
            *copy = None;
        }
    }

    fn schedule_check(&self) {
        if let Some(every) = self.check_every {
            self.next_check_ms
                .store(self.now_ms().saturating_add(millis(every)), Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

/// Whole milliseconds, saturating (a configured period may be absurdly long).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn missing() -> Error {
    Error::Pkcs11(
        cryptoki::error::RvError::KeyHandleInvalid,
        cryptoki::context::Function::FindObjects,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_due_once_per_period() {
        assert!(!RootCopy::new(None).check_due(), "no copy, no checks");
        let root = RootCopy::new(Some(Duration::from_millis(30)));
        assert!(root.check_due(), "the first check is due at once");
        assert!(!root.check_due(), "and then not again within the period");
        std::thread::sleep(Duration::from_millis(40));
        assert!(root.check_due());
        assert!(!root.check_due());
    }

    #[test]
    fn an_absurdly_long_period_does_not_overflow() {
        let root = RootCopy::new(Some(Duration::from_secs(u64::MAX)));
        assert!(root.check_due());
        root.schedule_check();
        assert!(!root.check_due());
    }
}
