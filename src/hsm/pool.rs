//! A pool of logged-in PKCS#11 sessions. `cryptoki::Session` is Send but not Sync, so each session
//! is owned by one HSM worker thread at a time: taken from the pool, used, and put back.

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// A session with the root key's handle, found when the session was opened.
pub struct PooledSession {
    pub session: Session,
    pub root: ObjectHandle,
}

pub struct SessionPool {
    module: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    root_id: Vec<u8>,
    idle: Mutex<Vec<PooledSession>>,
}

impl SessionPool {
    pub fn new(module: Pkcs11, slot: Slot, pin: AuthPin, root_id: Vec<u8>) -> Self {
        SessionPool {
            module,
            slot,
            pin,
            root_id,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle session, or a new one when none is idle.
    pub fn take(&self) -> Result<PooledSession, Error> {
        if let Some(s) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(s);
        }
        let session = self.open()?;
        let root = match find_root(&session, &self.root_id)? {
            RootLookup::One(h) => h,
            // The root key was checked at start; losing it now is a device problem, not a bug here.
            _ => {
                return Err(Error::Pkcs11(
                    RvError::KeyHandleInvalid,
                    cryptoki::context::Function::FindObjects,
                ))
            }
        };
        Ok(PooledSession { session, root })
    }

    /// Returns a healthy session for reuse. Sessions that saw a device error are dropped instead.
    pub fn put(&self, s: PooledSession) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(s);
        }
    }

    /// Drops every idle session (after the token went away, their handles are stale).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
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

/// Finds the root key by CKA_ID (never by label alone: labels are not unique).
pub fn find_root(session: &Session, id: &[u8]) -> Result<RootLookup, Error> {
    let found = session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(id.to_vec())])?;
    Ok(match found.len() {
        0 => RootLookup::None,
        1 => RootLookup::One(found[0]),
        n => RootLookup::Many(n),
    })
}
