//! The loaded module: configuration, tokens, the session table and the
//! fault injector. One instance lives between C_Initialize and C_Finalize.
mod crypto;
mod keys;
mod objects;

pub use objects::AttrValue;

use crate::config::Config;
use crate::faults::Faults;
use crate::object::next_handle;
use crate::session::Session;
use crate::token::{Token, MAX_PIN, MIN_PIN};
use crate::Rv;
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

static STATE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

pub struct Module {
    pub cfg: Arc<Config>,
    tokens: Vec<Token>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<SessionEntry>>>,
    /// One per slot, held across opening a session and across closing one
    /// (with the logout when it was the last), so the two never interleave:
    /// a session opened while the token is logged in keeps that login.
    open_close: Vec<Mutex<()>>,
    faults: Faults,
    /// Last unplug epoch each token has reacted to.
    seen_epoch: Vec<AtomicU64>,
}

/// A session plus what never changes about it (readable without taking the
/// session's lock, so counting sessions never waits for a running call).
pub struct SessionEntry {
    slot: usize,
    rw: bool,
    /// The unplug epoch it was opened in.
    epoch: u64,
    pub session: Mutex<Session>,
}

pub fn initialize() -> Rv<()> {
    let mut st = STATE.write().unwrap_or_else(|e| e.into_inner());
    if st.is_some() {
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    let cfg = Arc::new(Config::load().map_err(|e| {
        eprintln!("hsm-sim: bad configuration: {e}");
        CKR_GENERAL_ERROR
    })?);
    let tokens = (0..cfg.slots).map(|i| Token::open(i, cfg.clone())).collect();
    let faults = Faults::new(cfg.fault_file.clone(), cfg.slots);
    let seen_epoch = (0..cfg.slots).map(|i| AtomicU64::new(faults.epoch(i))).collect();
    let open_close = (0..cfg.slots).map(|_| Mutex::new(())).collect();
    *st = Some(Arc::new(Module {
        cfg,
        tokens,
        sessions: RwLock::new(HashMap::new()),
        open_close,
        faults,
        seen_epoch,
    }));
    Ok(())
}

pub fn finalize() -> Rv<()> {
    STATE
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|_| ())
        .ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)
}

pub fn get() -> Rv<Arc<Module>> {
    STATE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)
}

/// What C_GetTokenInfo reports.
pub struct TokenInfo {
    pub label: String,
    pub serial: String,
    pub flags: CK_FLAGS,
    pub sessions: usize,
    pub rw_sessions: usize,
    pub min_pin: usize,
    pub max_pin: usize,
}

pub struct SessionInfo {
    pub slot: CK_SLOT_ID,
    pub state: CK_STATE,
    pub flags: CK_FLAGS,
}

impl Module {
    fn token(&self, slot: CK_SLOT_ID) -> Rv<&Token> {
        self.tokens.get(slot as usize).ok_or(CKR_SLOT_ID_INVALID)
    }

    /// Reacts once to a new unplug: logout and drop session objects.
    fn sync(&self, slot: usize) {
        let e = self.faults.epoch(slot);
        if let Some(seen) = self.seen_epoch.get(slot) {
            if seen.swap(e, Ordering::AcqRel) != e {
                self.tokens[slot].reset();
            }
        }
    }

    /// Entry check of slot-level calls.
    pub fn slot_gate(&self, slot: CK_SLOT_ID, func: &str) -> Rv<&Token> {
        let t = self.token(slot)?;
        self.sync(t.slot);
        self.faults.check(t.slot, func, false)?;
        Ok(t)
    }

    /// Runs `f` on a live session with the session locked.
    pub fn with_session<R>(
        &self,
        h: CK_SESSION_HANDLE,
        func: &str,
        f: impl FnOnce(&Token, &mut Session) -> Rv<R>,
    ) -> Rv<R> {
        let entry = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .cloned()
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        let slot = entry.slot;
        self.sync(slot);
        // Faults (and their injected latency) apply before the session lock is taken, so a slow
        // call never blocks other sessions' calls, such as C_OpenSession counting sessions.
        let fault = self.faults.check(slot, func, true);
        let mut session = entry.session.lock().unwrap_or_else(|e| e.into_inner());
        // Closed while this call waited: what it made (objects) would outlive the session.
        if session.closed {
            return Err(CKR_SESSION_HANDLE_INVALID);
        }
        if let Err(rv) = fault {
            // A failed call ends the operation it belongs to, as on a device.
            end_operation(&mut session, func);
            return Err(rv);
        }
        if entry.epoch != self.faults.epoch(slot) {
            return Err(CKR_SESSION_HANDLE_INVALID);
        }
        f(&self.tokens[slot], &mut session)
    }

    /// The slot a session is on.
    pub fn session_slot(&self, h: CK_SESSION_HANDLE) -> Option<usize> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .map(|e| e.slot)
    }

    /// Ends the operation `func` belongs to, for an error found at the C
    /// boundary before the call reached the module.
    pub fn end_operation(&self, h: CK_SESSION_HANDLE, func: &str) {
        let entry = self.sessions.read().unwrap_or_else(|e| e.into_inner()).get(&h).cloned();
        if let Some(entry) = entry {
            end_operation(&mut entry.session.lock().unwrap_or_else(|e| e.into_inner()), func);
        }
    }

    pub fn slot_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn slot_present(&self, slot: CK_SLOT_ID) -> Rv<bool> {
        let t = self.token(slot)?;
        Ok(!self.faults.unplugged(t.slot))
    }

    /// (all, read-write) live sessions of a slot.
    fn session_counts(&self, slot: usize) -> (usize, usize) {
        let epoch = self.faults.epoch(slot);
        let map = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let mut all = 0;
        let mut rw = 0;
        for e in map.values() {
            if e.slot == slot && e.epoch == epoch {
                all += 1;
                rw += usize::from(e.rw);
            }
        }
        (all, rw)
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Rv<TokenInfo> {
        let t = self.slot_gate(slot, "C_GetTokenInfo")?;
        t.check_usable()?;
        let (sessions, rw_sessions) = self.session_counts(t.slot);
        let meta = t.meta_now();
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_RESTORE_KEY_NOT_NEEDED;
        let max = t.max_attempts();
        let (label, serial) = match &meta {
            Some(m) => {
                flags |= CKF_TOKEN_INITIALIZED;
                if m.user.is_some() {
                    flags |= CKF_USER_PIN_INITIALIZED;
                }
                flags |= pin_flags(
                    m.user_failures,
                    max,
                    CKF_USER_PIN_COUNT_LOW,
                    CKF_USER_PIN_FINAL_TRY,
                    CKF_USER_PIN_LOCKED,
                );
                flags |= pin_flags(
                    m.so_failures,
                    max,
                    CKF_SO_PIN_COUNT_LOW,
                    CKF_SO_PIN_FINAL_TRY,
                    CKF_SO_PIN_LOCKED,
                );
                (m.label.clone(), m.serial.clone())
            }
            None => (String::new(), format!("{:016}", t.slot)),
        };
        Ok(TokenInfo {
            label,
            serial,
            flags,
            sessions,
            rw_sessions,
            min_pin: MIN_PIN,
            max_pin: MAX_PIN,
        })
    }

    fn open_close_lock(&self, slot: usize) -> MutexGuard<'_, ()> {
        self.open_close[slot].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn init_token(&self, slot: CK_SLOT_ID, so_pin: &[u8], label: &str) -> Rv<()> {
        let t = self.slot_gate(slot, "C_InitToken")?;
        // No session may open between the check and the wipe.
        let _open_close = self.open_close_lock(t.slot);
        if self.session_counts(t.slot).0 > 0 {
            return Err(CKR_SESSION_EXISTS);
        }
        t.init_token(so_pin, label)
    }

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Rv<CK_SESSION_HANDLE> {
        let t = self.slot_gate(slot, "C_OpenSession")?;
        t.check_usable()?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        let _open_close = self.open_close_lock(t.slot);
        if !rw && t.read().login == Some(CKU_SO) {
            return Err(CKR_SESSION_READ_WRITE_SO_EXISTS);
        }
        let h = next_handle();
        let entry = SessionEntry {
            slot: t.slot,
            rw,
            epoch: self.faults.epoch(t.slot),
            session: Mutex::new(Session::new(h, t.slot, rw)),
        };
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h, Arc::new(entry));
        Ok(h)
    }

    /// Closes one session; the last one on a token logs it out. Removing
    /// the session, counting the rest and logging out happen under the
    /// slot's open/close lock, so no session can open in between and then
    /// lose the login it found.
    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        let slot = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?
            .slot;
        let open_close = self.open_close_lock(slot);
        // A concurrent close of the same handle may have won the race.
        let entry = self
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        // Waits for a call running on the session and turns away those that
        // already found it, so no object is created after its objects go.
        let mut session = entry.session.lock().unwrap_or_else(|e| e.into_inner());
        session.closed = true;
        let t = &self.tokens[slot];
        t.drop_session_objects(h);
        drop(session);
        if self.session_counts(slot).0 == 0 {
            let _ = t.logout();
        }
        drop(open_close);
        // A rule records the close (tests count them); it neither fails nor delays it.
        self.faults.record_only(slot, "C_CloseSession");
        Ok(())
    }

    pub fn close_all(&self, slot: CK_SLOT_ID) -> Rv<()> {
        let t = self.token(slot)?;
        let handles: Vec<_> = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, e)| e.slot == t.slot)
            .map(|(h, _)| *h)
            .collect();
        for h in handles {
            let _ = self.close_session(h);
        }
        self.faults.check(t.slot, "C_CloseAllSessions", false)
    }

    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Rv<SessionInfo> {
        self.with_session(h, "C_GetSessionInfo", |t, s| {
            let state = match (t.read().login, s.rw) {
                (Some(CKU_SO), _) => CKS_RW_SO_FUNCTIONS,
                (Some(_), true) => CKS_RW_USER_FUNCTIONS,
                (Some(_), false) => CKS_RO_USER_FUNCTIONS,
                (None, true) => CKS_RW_PUBLIC_SESSION,
                (None, false) => CKS_RO_PUBLIC_SESSION,
            };
            let flags = CKF_SERIAL_SESSION | if s.rw { CKF_RW_SESSION } else { 0 };
            Ok(SessionInfo {
                slot: s.slot as CK_SLOT_ID,
                state,
                flags,
            })
        })
    }

    fn has_ro_session(&self, slot: usize) -> bool {
        let (all, rw) = self.session_counts(slot);
        all > rw
    }

    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Rv<()> {
        let slot = self.with_session(h, "C_Login", |t, _| Ok(t.slot))?;
        let ro = self.has_ro_session(slot);
        let t = &self.tokens[slot];
        t.login(user, pin, ro)?;
        // The session may have closed during the PIN check; if it was the
        // last, nothing would log the token out. Under the open/close lock,
        // as close_session decides on logout under it.
        let _open_close = self.open_close_lock(slot);
        let live = self.sessions.read().unwrap_or_else(|e| e.into_inner()).contains_key(&h);
        if !live {
            let _ = t.logout();
            return Err(CKR_SESSION_HANDLE_INVALID);
        }
        // A read-only session may have opened during the PIN check, before
        // the login it must be refused under was in place. From here on
        // open_session sees the SO login; one that came before is counted now.
        if user == CKU_SO && self.has_ro_session(slot) {
            let _ = t.logout();
            return Err(CKR_SESSION_READ_ONLY_EXISTS);
        }
        Ok(())
    }

    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        self.with_session(h, "C_Logout", |t, _| t.logout())
    }

    pub fn init_pin(&self, h: CK_SESSION_HANDLE, pin: &[u8]) -> Rv<()> {
        self.with_session(h, "C_InitPIN", |t, s| {
            if !s.rw {
                return Err(CKR_SESSION_READ_ONLY);
            }
            t.init_pin(pin)
        })
    }

    pub fn set_pin(&self, h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Rv<()> {
        let slot = self.with_session(h, "C_SetPIN", |t, s| {
            if !s.rw {
                return Err(CKR_SESSION_READ_ONLY);
            }
            Ok(t.slot)
        })?;
        self.tokens[slot].set_pin(old, new)
    }
}

fn end_operation(s: &mut Session, func: &str) {
    if func.ends_with("Init") {
        return;
    }
    if func.starts_with("C_Encrypt") {
        s.encrypt = None;
    } else if func.starts_with("C_Decrypt") {
        s.decrypt = None;
    } else if func.starts_with("C_Sign") {
        s.sign = None;
    } else if func.starts_with("C_Verify") {
        s.verify = None;
    } else if func.starts_with("C_Digest") {
        s.digest = None;
    }
}

fn pin_flags(failures: u32, max: u32, low: CK_FLAGS, last: CK_FLAGS, locked: CK_FLAGS) -> CK_FLAGS {
    match failures {
        0 => 0,
        f if f >= max => locked,
        f if f + 1 == max => last | low,
        _ => low,
    }
}
