//! Which object handle unwraps use for the root key: the token object, or a session copy of it.
//!
//! SoftHSM2 re-reads a token object's file, with a lock and a stat, on every use: two thirds of an
//! unwrap's cost. A session copy (C_CopyObject with CKA_TOKEN false) stays in the token's memory with
//! the same attributes (a copy can't loosen sensitive or not extractable), so custody is unchanged.
//! Each pooled session makes its own copy, which lives and dies with that session: no copy is ever
//! shared, so none can be destroyed while another thread uses it. Wraps always use the token object,
//! so new material is never sealed under a key that is no longer on the token. The pool looks the
//! token object up again every `check_every` (`RootCopies::check_due`) and drops the sessions, and
//! with them their copies, whose root key is gone or was replaced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::errors;

pub struct RootCopies {
    /// None: unwraps use the token object (no copies, no checks).
    check_every: Option<Duration>,
    /// The HSM can't copy the key (CKA_COPYABLE false, no C_CopyObject): use the token object.
    refused: AtomicBool,
    /// Milliseconds after `epoch` when the token object is next looked up.
    next_check_ms: AtomicU64,
    epoch: Instant,
}

impl RootCopies {
    pub fn new(check_every: Option<Duration>) -> Self {
        RootCopies {
            check_every,
            refused: AtomicBool::new(false),
            next_check_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether sessions make copies (software tokens, `hsm.root_check_seconds` > 0).
    pub fn enabled(&self) -> bool {
        self.check_every.is_some()
    }

    /// A copy of `root` owned by `session`, or None when copies are off or the HSM can't make
    /// them. Other errors (device errors) are returned, for the caller's retry loop.
    pub fn copy(&self, session: &Session, root: ObjectHandle) -> Result<Option<ObjectHandle>, Error> {
        if self.check_every.is_none() || self.refused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match session.copy_object(root, &[Attribute::Token(false)]) {
            Ok(copy) => Ok(Some(copy)),
            Err(e) if refuses_copy(&e) => {
                tracing::warn!(error = %errors::short(&e), "the HSM will not copy the root key into a session; unwraps use the token object");
                self.refused.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the token object should be looked up again now: at most one caller gets `true` per
    /// period, and never when copies are off. The caller that gets `true` must call
    /// `check_failed` if its lookup fails.
    pub fn check_due(&self) -> bool {
        // Checks go on after a refusal: sessions opened before it still hold copies.
        let Some(every) = self.check_every else { return false };
        let now = millis(self.epoch.elapsed());
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

    /// The check `check_due` granted did not happen (the lookup failed): it is due again at once,
    /// so a failure never buys the sessions' copies another period unchecked.
    pub fn check_failed(&self) {
        self.next_check_ms.store(0, Ordering::Relaxed);
    }
}

/// The HSM can't or won't copy this key, now or ever (as opposed to a device error).
fn refuses_copy(e: &Error) -> bool {
    matches!(
        e,
        Error::NullFunctionPointer
            | Error::Pkcs11(
                RvError::ActionProhibited
                    | RvError::FunctionNotSupported
                    | RvError::AttributeReadOnly
                    | RvError::AttributeTypeInvalid
                    | RvError::AttributeValueInvalid
                    | RvError::TemplateInconsistent
                    | RvError::TemplateIncomplete,
                _
            )
    )
}

/// Whole milliseconds, saturating (a configured period may be absurdly long).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_due_once_per_period() {
        assert!(!RootCopies::new(None).check_due(), "no copies, no checks");
        let root = RootCopies::new(Some(Duration::from_secs(1)));
        assert!(root.check_due(), "the first check is due at once");
        assert!(!root.check_due(), "and then not again within the period");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(root.check_due());
        assert!(!root.check_due());
    }

    #[test]
    fn a_failed_check_does_not_count() {
        let root = RootCopies::new(Some(Duration::from_secs(3600)));
        assert!(root.check_due());
        root.check_failed();
        assert!(
            root.check_due(),
            "the failed check is due again at once, not in an hour"
        );
        assert!(!root.check_due(), "and granted once: this one succeeded");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!root.check_due(), "a successful check waits the whole period");
    }

    #[test]
    fn an_absurdly_long_period_saturates() {
        let root = RootCopies::new(Some(Duration::from_secs(u64::MAX)));
        assert!(root.check_due());
        assert!(!root.check_due());
    }

    #[test]
    fn only_refusals_turn_copies_off_for_good() {
        use cryptoki::context::Function;
        assert!(refuses_copy(&Error::Pkcs11(
            RvError::ActionProhibited,
            Function::CopyObject
        )));
        assert!(refuses_copy(&Error::Pkcs11(
            RvError::FunctionNotSupported,
            Function::CopyObject
        )));
        assert!(refuses_copy(&Error::NullFunctionPointer));
        for transient in [
            RvError::DeviceError,
            RvError::FunctionFailed,
            RvError::SessionHandleInvalid,
        ] {
            assert!(!refuses_copy(&Error::Pkcs11(transient, Function::CopyObject)));
        }
    }
}
