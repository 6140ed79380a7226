//! A pool of logged-in PKCS#11 sessions. `cryptoki::Session` is Send but not Sync, so each session
//! is owned by one HSM worker thread at a time: taken from the pool, used, and put back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::errors;
use super::root::RootCopies;
use super::root_attrs;

/// A session with the root key's token object, found when the session was opened, and (software
/// tokens) the session's own copy of it, which closes with the session.
pub struct PooledSession {
    pub session: Session,
    /// The token object: used for wraps, so new material is sealed only under the key on the token.
    pub root: ObjectHandle,
    copy: Option<ObjectHandle>,
    /// The pool's generation when the session was opened; sessions of an older one are dropped.
    generation: u64,
    _live: Live,
}

impl PooledSession {
    /// The handle unwraps use: the session copy if there is one.
    pub fn unwrap_key(&self) -> ObjectHandle {
        self.copy.unwrap_or(self.root)
    }
}

/// Counts the pool's open sessions. SoftHSM2 forgets token object handles when the last session
/// closes, so a new handle for the root key means a new key only while other sessions are open.
struct Live(Arc<AtomicUsize>);

impl Live {
    /// Joins the count; also returns how many sessions were open before.
    fn join(count: &Arc<AtomicUsize>) -> (Live, usize) {
        let before = count.fetch_add(1, Ordering::AcqRel);
        (Live(count.clone()), before)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct SessionPool {
    module: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    root_id: Vec<u8>,
    copies: RootCopies,
    /// With copies: the handle of the root key's token object the current sessions found (0: none
    /// yet; never a valid handle). Sessions with another one are dropped.
    root_handle: AtomicU64,
    live: Arc<AtomicUsize>,
    /// Serializes root key lookups with copies (`current_root`).
    lookups: Mutex<()>,
    /// The handle of the unusable root key last warned about (0: none), so a bad key is logged
    /// once, not on every request it refuses.
    unusable_warned: AtomicU64,
    generation: AtomicU64,
    idle: Mutex<Vec<PooledSession>>,
    /// Idle sessions kept at most (`hsm.max_sessions`): while calls hang, replacement workers
    /// open sessions of their own, and those that come back after them are closed, not kept.
    max_idle: usize,
    /// Held across C_Login, so concurrent sessions never try the PIN at once; holds the return code
    /// once C_Login refused the PIN (`login`).
    pin_refused: Mutex<Option<RvError>>,
}

impl SessionPool {
    /// `root_check`: sessions unwrap with their own copy of the root key, and the token object is
    /// looked up again this often (None: unwraps use the token object itself).
    pub fn new(
        module: Pkcs11,
        slot: Slot,
        pin: AuthPin,
        root_id: Vec<u8>,
        root_check: Option<Duration>,
        max_idle: usize,
    ) -> Self {
        SessionPool {
            module,
            slot,
            pin,
            root_id,
            copies: RootCopies::new(root_check),
            root_handle: AtomicU64::new(0),
            live: Arc::new(AtomicUsize::new(0)),
            lookups: Mutex::new(()),
            unusable_warned: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            max_idle,
            pin_refused: Mutex::new(None),
        }
    }

    /// An idle session, or a new one when none is idle. When a root check is due, the session's
    /// root key is looked up on the token first.
    pub fn take(&self) -> Result<PooledSession, Error> {
        while let Some(s) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            if s.generation != self.generation.load(Ordering::Acquire) {
                continue;
            }
            if !self.copies.check_due() {
                return Ok(s);
            }
            // Device errors are errors (retried by the caller), not a missing key. While this
            // session is open, the token object keeps its handle, and a new object gets a new one.
            match self.current_root(&s.session, true) {
                Ok((h, _)) if h == s.root => {
                    self.keep_only(h);
                    return Ok(s);
                }
                Err(e) if !is_missing(&e) && !is_unusable(&e) => {
                    // A failed check is no check: the next session taken checks again, rather
                    // than every idle session unwrapping with its copy for another period.
                    self.copies.check_failed();
                    return Err(e);
                }
                _ => {
                    tracing::warn!(
                        "the root key on the token is gone, was replaced or is not usable: dropping every session and its copy"
                    );
                    self.clear();
                    break;
                }
            }
        }
        self.open_pooled()
    }

    fn open_pooled(&self) -> Result<PooledSession, Error> {
        let mut generation = self.generation.load(Ordering::Acquire);
        let (live, others) = Live::join(&self.live);
        let session = self.open()?;
        let (root, replaced) = self.current_root(&session, others > 0)?;
        if replaced {
            tracing::warn!("the root key on the token was replaced: dropping the sessions that used the old one");
            generation = self.clear();
        }
        let copy = self.copies.copy(&session, root)?;
        Ok(PooledSession {
            session,
            root,
            copy,
            generation,
            _live: live,
        })
    }

    /// Looks the root key's token object up in `session`. With copies, also records its handle as
    /// the current one and says whether that replaced another handle while `others_open`. The
    /// lookups are serialized, so the recorded handle always comes from the latest one: a lookup that
    /// raced a replacement can't record the old key after a later one recorded the new key.
    fn current_root(&self, session: &Session, others_open: bool) -> Result<(ObjectHandle, bool), Error> {
        if !self.copies.enabled() {
            return Ok((self.token_root(session)?, false));
        }
        let _in_order = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        let root = self.token_root(session)?;
        let previous = self.root_handle.swap(root.handle(), Ordering::AcqRel);
        Ok((root, others_open && previous != 0 && previous != root.handle()))
    }

    /// After a check found the root key at `h`: idle sessions that found another object are
    /// dropped (and sessions in use when they come back, by `put`).
    fn keep_only(&self, h: ObjectHandle) {
        let stale: Vec<PooledSession> = match self.idle.lock() {
            Ok(mut idle) => {
                let (keep, stale) = std::mem::take(&mut *idle).into_iter().partition(|s| s.root == h);
                *idle = keep;
                stale
            }
            Err(_) => vec![],
        };
        drop(stale); // closed outside the lock
    }

    /// Returns a healthy session for reuse. Sessions that saw a device error are dropped instead,
    /// and so are sessions opened before the last `clear` or on another root key object, and
    /// those past `max_idle`.
    pub fn put(&self, s: PooledSession) {
        if s.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        if self.copies.enabled() && s.root.handle() != self.root_handle.load(Ordering::Acquire) {
            return;
        }
        let spare = match self.idle.lock() {
            Ok(mut idle) if idle.len() < self.max_idle => {
                idle.push(s);
                return;
            }
            _ => s,
        };
        // Closed off the caller's path: this follows a hang, when the HSM may still be slow, and
        // the result this session just produced is on its way to a caller with a deadline. Rare
        // (only after hung calls return), so a thread of its own; if none can start, the closure
        // and the session with it are dropped here.
        let closer = std::thread::Builder::new()
            .name("hsm-close".into())
            .spawn(move || drop(spare));
        if let Err(e) = closer {
            tracing::warn!(error = %e, "cannot start a thread to close a spare HSM session: closed it here");
        }
    }

    /// Drops every idle session, and with it its root key copy (after the token went away, their
    /// handles are stale); sessions in use are dropped when they come back. Returns the new
    /// generation.
    pub fn clear(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let stale = self.idle.lock().map(|mut idle| std::mem::take(&mut *idle));
        drop(stale); // closed outside the lock
        generation
    }

    /// The root key's token object: `missing()` when the token has none (or several), `unusable()`
    /// when its attributes are wrong (warned about once per object found). Every session opened
    /// and every check reads the attributes again: a new object under the root key's CKA_ID is
    /// never adopted unchecked.
    fn token_root(&self, session: &Session) -> Result<ObjectHandle, Error> {
        let root = match find_root(session, &self.root_id)? {
            RootLookup::One(h) => h,
            // Checked at start; losing it now is a device or operator problem, not a bug here.
            RootLookup::None | RootLookup::Many(_) => return Err(missing()),
        };
        match root_attrs::check(session, root)? {
            Ok(()) => {
                self.unusable_warned.store(0, Ordering::Relaxed);
                Ok(root)
            }
            Err(defects) => {
                if self.unusable_warned.swap(root.handle(), Ordering::Relaxed) != root.handle() {
                    tracing::warn!(
                        "the root key on the token is not usable ({defects}): refusing every request \
                         that needs it until it is {}",
                        root_attrs::REQUIRED
                    );
                }
                Err(unusable())
            }
        }
    }

    /// A read-write logged-in session (CloudHSM has no read-only sessions; RW also lets us create the
    /// root key). Login is per token and application, so later sessions find it done already.
    fn open(&self) -> Result<Session, Error> {
        self.open_logged_in(true)
    }

    /// The first session, at start: as `open`, but a refused PIN is not logged here, since the
    /// server does not start and says why itself.
    pub fn open_first(&self) -> Result<Session, Error> {
        self.open_logged_in(false)
    }

    fn open_logged_in(&self, serving: bool) -> Result<Session, Error> {
        let session = self.module.open_rw_session(self.slot)?;
        // Login is per token: skip it (and the HSM's PIN check) when another session did it.
        if session.get_session_info()?.session_state() == SessionState::RwUser {
            return Ok(session);
        }
        self.login(&session, serving)?;
        Ok(session)
    }

    /// Logs the token in with the configured PIN, unless the HSM refused that PIN before.
    ///
    /// A refused PIN (`errors::is_pin_refused`: incorrect, locked, expired, invalid or out of range)
    /// is a credential failure, not a device one: trying it again can't succeed (kms has no other
    /// PIN; SIGHUP does not reload it) and every wrong login counts toward locking the HSM user,
    /// which CloudHSM does after 5 for every application using it. So the first refusal is latched
    /// and logged once, and from then on no session logs in until the process restarts; callers get
    /// the latched error (`KeyUnavailableException`). What needs no login keeps working: idle
    /// sessions still logged in, and sessions that find the token logged in already (`open`), so
    /// requests served from them or from the material cache are answered as before.
    ///
    /// Logins are serialized, so sessions opened at once (after a failover logged kms out) try the
    /// PIN once between them, not once each. A session that waited finds the token logged in by
    /// the one before it: CKR_USER_ALREADY_LOGGED_IN, which is success.
    fn login(&self, session: &Session, serving: bool) -> Result<(), Error> {
        let mut refused = self.pin_refused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rv) = *refused {
            return Err(Error::Pkcs11(rv, Function::Login));
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e @ Error::Pkcs11(rv, _)) if errors::is_pin_refused(&e) => {
                if serving {
                    tracing::error!(
                        "the HSM refused the configured PIN: C_Login returned {}. kms will not log in with \
                     it again, so as not to lock the HSM user; requests that need a new HSM session get \
                     KeyUnavailableException. An operator must fix the PIN (hsm.pin_file or \
                     hsm.pin_env) and restart kms: SIGHUP does not reload it",
                        errors::pin_rv_name(rv).unwrap_or("a PIN error")
                    );
                }
                *refused = Some(rv);
                Err(e)
            }
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

fn missing() -> Error {
    Error::Pkcs11(RvError::KeyHandleInvalid, cryptoki::context::Function::FindObjects)
}

pub fn is_missing(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(RvError::KeyHandleInvalid, cryptoki::context::Function::FindObjects)
    )
}

/// The root key on the token has attributes that make it unusable (`root_attrs`): treated as a
/// missing key by the pool, and refused as `KeyUnavailableException`. No real C_GetAttributeValue
/// answers CKR_KEY_FUNCTION_NOT_PERMITTED, so this can't be mistaken for the HSM's own answer.
fn unusable() -> Error {
    Error::Pkcs11(
        RvError::KeyFunctionNotPermitted,
        cryptoki::context::Function::GetAttributeValue,
    )
}

pub fn is_unusable(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::KeyFunctionNotPermitted,
            cryptoki::context::Function::GetAttributeValue
        )
    )
}
