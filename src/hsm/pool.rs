//! A pool of logged-in PKCS#11 sessions. `cryptoki::Session` is Send but not Sync, so each session
//! is owned by one HSM worker thread at a time: taken from the pool, used, and put back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use std::time::Duration;

use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::root::RootCopy;

/// A session with the root key's handle, found when the session was opened.
pub struct PooledSession {
    pub session: Session,
    pub root: ObjectHandle,
    /// The pool's generation when the session was opened; sessions of an older one are dropped.
    generation: u64,
}

pub struct SessionPool {
    module: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    root_id: Vec<u8>,
    root: RootCopy,
    generation: AtomicU64,
    idle: Mutex<Vec<PooledSession>>,
}

impl SessionPool {
    /// `root_check`: use a session copy of the root key, and look the token object up again this
    /// often (None: use the token object itself).
    pub fn new(module: Pkcs11, slot: Slot, pin: AuthPin, root_id: Vec<u8>, root_check: Option<Duration>) -> Self {
        SessionPool {
            module,
            slot,
            pin,
            root_id,
            root: RootCopy::new(root_check),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle session, or a new one when none is idle.
    pub fn take(&self) -> Result<PooledSession, Error> {
        if self.root.check_due() && !self.root.still_on_token(&self.root_id) {
            tracing::warn!("the root key is no longer on the token: its session copy is destroyed");
            self.clear();
        }
        let generation = self.generation.load(Ordering::Acquire);
        while let Some(s) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            if s.generation == generation {
                return Ok(s);
            }
        }
        let session = self.open()?;
        let root = self.root.handle(&session, &self.root_id, || self.open())?.handle();
        Ok(PooledSession {
            session,
            root,
            generation,
        })
    }

    /// Returns a healthy session for reuse. Sessions that saw a device error are dropped instead,
    /// and so are sessions opened before the last `clear`.
    pub fn put(&self, s: PooledSession) {
        if s.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(s);
        }
    }

    /// Drops every idle session and the root key's session copy (after the token went away, their
    /// handles are stale); sessions in use are dropped when they come back.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        self.root.forget();
    }

    /// A read-write logged-in session (CloudHSM has no read-only sessions; RW also lets us create the
    /// root key). Login is per token and application, so later sessions find it done already.
    pub fn open(&self) -> Result<Session, Error> {
        let session = self.module.open_rw_session(self.slot)?;
        // Login is per token: skip it (and the HSM's PIN check) when another session did it.
        if session.get_session_info()?.session_state() == SessionState::RwUser {
            return Ok(session);
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(e),
        }
    }
}

pub enum RootLookup {
    None,
    One(ObjectHandle),
    Many(usize),
}

/// Finds the root key's token object by CKA_ID (never by label alone: labels are not unique; and
/// never its session copy, which has the same CKA_ID).
pub fn find_root(session: &Session, id: &[u8]) -> Result<RootLookup, Error> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(id.to_vec()),
        Attribute::Token(true),
    ])?;
    Ok(match found.len() {
        0 => RootLookup::None,
        1 => RootLookup::One(found[0]),
        n => RootLookup::Many(n),
    })
}
