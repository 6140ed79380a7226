//! A token: its persistent metadata (label, PIN records), login state, the
//! unlocked token key and the objects currently visible to the module.
use crate::attrs::{Attrs, Value};
use crate::config::Config;
use crate::object::{next_handle, Object};
use crate::pin::{ct_eq, hex, new_key, random_bytes, Key32, PinRecord};
use crate::store::{ObjectFile, Store, TokenMeta};
use crate::Rv;
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub const MIN_PIN: usize = 4;
pub const MAX_PIN: usize = 255;

pub struct Token {
    pub slot: usize,
    store: Store,
    cfg: Arc<Config>,
    /// Set when the token on disk could not be read: the token is then
    /// unusable (and never wiped) until the next C_Initialize.
    damaged: bool,
    inner: RwLock<TokenInner>,
}

#[derive(Default)]
pub struct TokenInner {
    pub meta: Option<TokenMeta>,
    pub login: Option<CK_USER_TYPE>,
    key: Option<Key32>,
    pub objects: HashMap<CK_OBJECT_HANDLE, Arc<Object>>,
    /// File id -> handle of the token objects loaded, so a token object keeps
    /// its handle while it stays loaded (when another process's change makes
    /// this one read the objects again).
    handles: HashMap<String, CK_OBJECT_HANDLE>,
    /// PIN checks under way (user, SO), each already counted as a failure.
    running: [u32; 2],
    /// The objects' generation when they were last read (`Store::objects_generation`).
    generation: Option<u64>,
}

impl TokenInner {
    /// Private objects are only visible to a logged-in user.
    pub fn visible(&self, o: &Object) -> bool {
        !o.is_private() || self.login == Some(CKU_USER)
    }

    pub fn get(&self, h: CK_OBJECT_HANDLE) -> Rv<Arc<Object>> {
        match self.objects.get(&h) {
            Some(o) if self.visible(o) => Ok(o.clone()),
            _ => Err(CKR_OBJECT_HANDLE_INVALID),
        }
    }
}

fn check_pin_len(pin: &[u8]) -> Rv<()> {
    if (MIN_PIN..=MAX_PIN).contains(&pin.len()) {
        Ok(())
    } else {
        Err(CKR_PIN_LEN_RANGE)
    }
}

/// An object about to be added (`Token::prepare`), its file written if it has one.
struct NewObject {
    handle: CK_OBJECT_HANDLE,
    attrs: Attrs,
    owner: CK_SESSION_HANDLE,
    /// A token object's file id and content.
    file: Option<(String, ObjectFile)>,
}

/// Makes a prepared object visible in this process.
fn add(inner: &mut TokenInner, new: NewObject) -> CK_OBJECT_HANDLE {
    let h = new.handle;
    let obj = match new.file {
        Some((id, _)) => {
            inner.handles.insert(id.clone(), h);
            Object::new(h, new.attrs, None, Some(id), false)
        }
        None => Object::new(h, new.attrs, Some(new.owner), None, false),
    };
    inner.objects.insert(h, Arc::new(obj));
    h
}

impl Token {
    pub fn open(slot: usize, cfg: Arc<Config>) -> Token {
        let store = Store::new(cfg.token_dir.join(format!("slot-{slot}")));
        // Only a blank directory is an uninitialized token: reading a
        // damaged one as blank would let C_InitToken wipe its objects.
        let (meta, damaged) = match store.load_meta() {
            Ok(meta) => {
                if let Some(lock) = store.lock_if_present() {
                    store.settle_objects_aside(&lock, meta.as_ref().map(|m| m.serial.as_str()));
                    store.settle_pending_pair(&lock);
                }
                (meta, false)
            }
            Err(reason) => {
                eprintln!("hsm-sim: slot {slot}: token unusable, left untouched: {reason}");
                (None, true)
            }
        };
        let t = Token {
            slot,
            store,
            cfg,
            damaged,
            inner: RwLock::new(TokenInner::default()),
        };
        {
            let mut inner = t.write();
            inner.meta = meta;
            if inner.meta.is_some() {
                let _ = t.load_objects(&mut inner);
            }
        }
        t
    }

    /// Fails for a token whose files could not be read.
    pub fn check_usable(&self) -> Rv<()> {
        if self.damaged {
            Err(CKR_TOKEN_NOT_RECOGNIZED)
        } else {
            Ok(())
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, TokenInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, TokenInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The metadata as on disk now (another process may have changed a PIN
    /// or its failure count), or as last read if the file can't be read.
    pub fn meta_now(&self) -> Option<TokenMeta> {
        self.store.load_meta().unwrap_or_else(|_| self.read().meta.clone())
    }

    pub fn max_attempts(&self) -> u32 {
        self.cfg.max_pin_attempts
    }

    /// (Re)loads token objects the current key can open; private ones need
    /// the token key, public ones load without it (secrets stay sealed).
    fn load_objects(&self, inner: &mut TokenInner) -> Rv<()> {
        // Read before the objects: a change made meanwhile is seen at the next look.
        let generation = self.store.objects_generation();
        let ids = self.store.object_ids()?;
        // A key pair not yet committed (being written by another process, or left by a dead
        // one) is not on the token: read after the listing, so a pair committed meanwhile is
        // seen at the next look, when the generation has moved.
        let uncommitted = self.store.pending_pair().ok().flatten().unwrap_or_default();
        inner.objects.retain(|_, o| !o.is_token());
        for id in ids.into_iter().filter(|id| !uncommitted.contains(id)) {
            // A damaged object file costs that object, not the token; it is named on stderr
            // (its content never is).
            let unreadable = |why: &str| eprintln!("hsm-sim: slot {}: object {id} skipped: {why}", self.slot);
            let Ok(file) = self.store.read_object(&id) else {
                unreadable("cannot be read or parsed");
                continue;
            };
            if file.private && inner.key.is_none() {
                continue;
            }
            let Ok((attrs, locked)) = file.decode(&id, inner.key.as_ref()) else {
                unreadable("its attributes cannot be decoded or unsealed");
                continue;
            };
            let h = *inner.handles.entry(id.clone()).or_insert_with(next_handle);
            inner
                .objects
                .insert(h, Arc::new(Object::new(h, attrs, None, Some(id), locked)));
        }
        inner.generation = generation;
        Ok(())
    }

    /// What is on disk decides whether the SO PIN must be checked, not what
    /// this process read when it started: another may have initialized the
    /// token since.
    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Rv<()> {
        self.check_usable()?;
        check_pin_len(so_pin)?;
        let on_disk = self.store.load_meta().map_err(|reason| {
            eprintln!("hsm-sim: slot {}: C_InitToken refused: {reason}", self.slot);
            CKR_TOKEN_NOT_RECOGNIZED
        })?;
        // Without an SO PIN to check, only a still blank directory may be initialized.
        let checked_serial = match on_disk {
            Some(_) => Some(self.unlock(true, so_pin)?.1),
            None => None,
        };
        let key = new_key()?;
        let mut serial = [0u8; 8];
        random_bytes(&mut serial)?;
        let meta = TokenMeta {
            label: label.to_string(),
            serial: hex(&serial),
            so: PinRecord::new(so_pin, &key, self.cfg.pbkdf2_iterations)?,
            user: None,
            so_failures: 0,
            user_failures: 0,
        };
        let mut inner = self.write();
        let lock = self.store.lock()?;
        // Still the token whose SO PIN was checked (or still blank).
        let now = self.store.load_meta().map_err(|_| CKR_TOKEN_NOT_RECOGNIZED)?;
        if now.map(|m| m.serial) != checked_serial {
            return Err(CKR_TOKEN_NOT_RECOGNIZED);
        }
        // The new token.json is the commit point: until it is saved, the
        // old objects can be put back (here on a failed save, at the next
        // open after a crash).
        if let Some(old) = &checked_serial {
            self.store.set_objects_aside(&lock, old)?;
        }
        if let Err(e) = self.store.save_meta(&lock, &meta) {
            if let Some(old) = &checked_serial {
                if self.store.restore_objects(&lock, old).is_err() {
                    eprintln!("hsm-sim: slot {}: C_InitToken failed and its objects could not be put back; the next C_Initialize will", self.slot);
                }
            }
            return Err(e);
        }
        self.store.settle_objects_aside(&lock, Some(&meta.serial));
        inner.objects.clear();
        inner.handles.clear();
        inner.meta = Some(meta);
        inner.login = None;
        inner.key = None;
        Ok(())
    }

    /// Verifies a PIN and counts failures. The attempt is counted, on disk
    /// too, before the slow KDF runs, so neither concurrent wrong PINs nor
    /// killing the process mid-check get past the limit; a success then
    /// takes back the failures counted so far, except attempts still running
    /// in this process. Returns the token key and the serial of the token it
    /// belongs to.
    fn unlock(&self, so: bool, pin: &[u8]) -> Rv<(Key32, String)> {
        let (record, serial) = self.reserve_attempt(so)?;
        let result = record.unlock(pin);
        self.settle_attempt(so, result.is_ok())?;
        Ok((result?, serial))
    }

    /// The PIN record as it is on disk now (another process may have
    /// changed the PIN), with the attempt counted there.
    fn reserve_attempt(&self, so: bool) -> Rv<(PinRecord, String)> {
        let max = self.max_attempts();
        let mut inner = self.write();
        let mut record = None;
        let meta = self.store.update_meta(|meta| {
            let found = if so { Some(meta.so.clone()) } else { meta.user.clone() };
            let found = found.ok_or(CKR_USER_PIN_NOT_INITIALIZED)?;
            let failures = meta.failures_mut(so);
            if *failures >= max {
                return Err(CKR_PIN_LOCKED);
            }
            *failures += 1;
            record = Some((found, meta.serial.clone()));
            Ok(true)
        })?;
        self.adopt(&mut inner, meta);
        let record = record.ok_or(CKR_USER_PIN_NOT_INITIALIZED)?;
        inner.running[usize::from(so)] += 1;
        Ok(record)
    }

    /// Ends an attempt begun by `reserve_attempt`: a failure stays counted;
    /// a success leaves only the attempts of checks still running.
    fn settle_attempt(&self, so: bool, ok: bool) -> Rv<()> {
        let mut inner = self.write();
        let running = &mut inner.running[usize::from(so)];
        *running = running.saturating_sub(1);
        let still = *running;
        if !ok {
            return Ok(());
        }
        let meta = self.store.update_meta(|meta| {
            let failures = meta.failures_mut(so);
            let changed = *failures > still;
            *failures = (*failures).min(still);
            Ok(changed)
        })?;
        self.adopt(&mut inner, meta);
        Ok(())
    }

    /// Takes metadata just read from disk. When another process has
    /// re-initialized the token (a new serial), this process's login, token
    /// key and token objects belong to the old token and are dropped.
    fn adopt(&self, inner: &mut TokenInner, meta: Option<TokenMeta>) {
        let replaced = inner
            .meta
            .as_ref()
            .is_some_and(|old| meta.as_ref().map(|m| &m.serial) != Some(&old.serial));
        if replaced {
            self.forget(inner);
            inner.objects.retain(|_, o| !o.is_token());
            inner.handles.clear();
        }
        inner.meta = meta;
    }

    /// Changes `token.json` for a PIN set by a logged-in user or SO: only
    /// if the token on disk is still the one this process logged in to.
    fn save_pin(&self, inner: &mut TokenInner, serial: &str, set: impl FnOnce(&mut TokenMeta)) -> Rv<()> {
        let mut done = false;
        let meta = self.store.update_meta(|meta| {
            if meta.serial != serial {
                return Ok(false);
            }
            set(meta);
            done = true;
            Ok(true)
        })?;
        self.adopt(inner, meta);
        if done {
            Ok(())
        } else {
            Err(CKR_USER_NOT_LOGGED_IN)
        }
    }

    pub fn login(&self, user: CK_USER_TYPE, pin: &[u8], ro_session_exists: bool) -> Rv<()> {
        {
            // Whether the token is initialized is read from disk by `unlock`.
            let inner = self.read();
            match (inner.login, user) {
                // Only an operation on a CKA_ALWAYS_AUTHENTICATE key waits for it, and no key
                // here has that: "improper use" (v2.40 C_Login), refused before any PIN check, so
                // it can't count toward locking the user's PIN.
                (_, CKU_CONTEXT_SPECIFIC) => return Err(CKR_OPERATION_NOT_INITIALIZED),
                (Some(cur), _) if cur == user => return Err(CKR_USER_ALREADY_LOGGED_IN),
                (Some(_), _) => return Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
                (None, CKU_SO) if ro_session_exists => return Err(CKR_SESSION_READ_ONLY_EXISTS),
                (None, CKU_SO | CKU_USER) => {}
                _ => return Err(CKR_USER_TYPE_INVALID),
            }
        }
        // A length no PIN can have (empty, a buffer's whole size) is wrong without being checked:
        // CKR_PIN_INCORRECT (C_Login has no CKR_PIN_LEN_RANGE), not counted, so a client's
        // mistake can't lock the user out.
        if check_pin_len(pin).is_err() {
            return Err(CKR_PIN_INCORRECT);
        }
        let so = user == CKU_SO;
        let (key, _) = self.unlock(so, pin)?;
        let mut inner = self.write();
        if inner.login.is_some() {
            return Err(CKR_USER_ALREADY_LOGGED_IN);
        }
        inner.key = Some(key);
        inner.login = Some(user);
        // A login whose objects can't be listed (EIO, EMFILE) fails whole: not left logged in.
        let loaded = self.load_objects(&mut inner);
        if loaded.is_err() {
            self.forget(&mut inner);
        }
        loaded
    }

    pub fn logout(&self) -> Rv<()> {
        let mut inner = self.write();
        if inner.login.is_none() {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        self.forget(&mut inner);
        Ok(())
    }

    /// Drops the login, the token key and every private object: private
    /// token objects are unloaded (reloaded at the next login, under new
    /// handles), private session objects are destroyed. PKCS#11 v2.40
    /// C_Logout: handles to private objects "remain invalid" even after a new
    /// login.
    fn forget(&self, inner: &mut TokenInner) {
        inner.login = None;
        inner.key = None;
        inner.objects.retain(|_, o| !o.is_private());
        let objects = &inner.objects;
        inner.handles.retain(|_, h| objects.contains_key(h));
    }

    /// Token pulled out: logout and drop session objects.
    pub fn reset(&self) {
        let mut inner = self.write();
        self.forget(&mut inner);
        inner.objects.retain(|_, o| o.is_token());
    }

    /// The PIN's key is derived outside the token lock: the slow KDF must
    /// not hold up every other call on the token.
    pub fn init_pin(&self, pin: &[u8]) -> Rv<()> {
        check_pin_len(pin)?;
        let key = match &*self.read() {
            TokenInner {
                login: Some(CKU_SO),
                key: Some(key),
                ..
            } => key.clone(),
            _ => return Err(CKR_USER_NOT_LOGGED_IN),
        };
        let record = PinRecord::new(pin, &key, self.cfg.pbkdf2_iterations)?;
        let mut guard = self.write();
        let inner = &mut *guard;
        // The SO may have logged out (or the token been re-initialized) meanwhile.
        let same = matches!((inner.login, &inner.key), (Some(CKU_SO), Some(now)) if ct_eq(&now[..], &key[..]));
        let serial = inner.meta.as_ref().map(|m| m.serial.clone());
        let (true, Some(serial)) = (same, serial) else {
            return Err(CKR_USER_NOT_LOGGED_IN);
        };
        // Saved first: a failed save leaves the old PIN in force here as on disk.
        self.save_pin(inner, &serial, |meta| {
            meta.user = Some(record);
            meta.user_failures = 0;
        })
    }

    /// Re-wraps the token key under the new PIN; objects are untouched.
    pub fn set_pin(&self, old: &[u8], new: &[u8]) -> Rv<()> {
        check_pin_len(new)?;
        let so = self.read().login == Some(CKU_SO);
        let (key, serial) = self.unlock(so, old)?;
        let record = PinRecord::new(new, &key, self.cfg.pbkdf2_iterations)?;
        let mut inner = self.write();
        // Saved first: a failed save leaves the old PIN in force here as on disk.
        self.save_pin(&mut inner, &serial, |meta| {
            if so {
                meta.so = record;
            } else {
                meta.user = Some(record);
            }
        })
    }

    /// Adds an object; token objects are written to disk first.
    pub fn insert(&self, attrs: Attrs, owner: CK_SESSION_HANDLE) -> Rv<CK_OBJECT_HANDLE> {
        self.insert_locked(&mut self.write(), attrs, owner)
    }

    /// Adds a copy of object `from` (C_CopyObject): `make` gets the object
    /// and whether the SO is logged in, and returns the copy's attributes.
    /// One write lock from the check to the insert, so the source cannot be
    /// made uncopyable or destroyed in between.
    pub fn insert_copy(
        &self,
        from: CK_OBJECT_HANDLE,
        owner: CK_SESSION_HANDLE,
        make: impl FnOnce(&Object, bool) -> Rv<Attrs>,
    ) -> Rv<CK_OBJECT_HANDLE> {
        let mut inner = self.write();
        let obj = inner.get(from)?;
        let attrs = make(&obj, inner.login == Some(CKU_SO))?;
        self.insert_locked(&mut inner, attrs, owner)
    }

    fn insert_locked(&self, inner: &mut TokenInner, attrs: Attrs, owner: CK_SESSION_HANDLE) -> Rv<CK_OBJECT_HANDLE> {
        let new = self.prepare(inner, attrs, owner)?;
        if let Some((id, file)) = &new.file {
            self.store.write_object(&self.store.lock()?, id, file)?;
        }
        Ok(add(inner, new))
    }

    /// Adds a key pair (C_GenerateKeyPair): both objects or neither, on disk as in memory, even
    /// if the process dies half way (`Store::write_pair`).
    pub fn insert_pair(
        &self,
        public: Attrs,
        private: Attrs,
        owner: CK_SESSION_HANDLE,
    ) -> Rv<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let mut inner = self.write();
        let public = self.prepare(&inner, public, owner)?;
        let private = self.prepare(&inner, private, owner)?;
        match (&public.file, &private.file) {
            (Some(a), Some(b)) => self
                .store
                .write_pair(&self.store.lock()?, [(&a.0, &a.1), (&b.0, &b.1)])?,
            (Some((id, file)), None) | (None, Some((id, file))) => {
                self.store.write_object(&self.store.lock()?, id, file)?
            }
            (None, None) => {}
        }
        Ok((add(&mut inner, public), add(&mut inner, private)))
    }

    /// A new object's handle, and for a token object its file, sealed, not yet written.
    fn prepare(&self, inner: &TokenInner, attrs: Attrs, owner: CK_SESSION_HANDLE) -> Rv<NewObject> {
        if attrs.bool(CKA_PRIVATE) && inner.login != Some(CKU_USER) {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let file = if attrs.bool(CKA_TOKEN) {
            let mut raw = [0u8; 16];
            random_bytes(&mut raw)?;
            let id = hex(&raw);
            let file = ObjectFile::encode(&id, &attrs, inner.key.as_ref())?;
            Some((id, file))
        } else {
            None
        };
        Ok(NewObject {
            handle: next_handle(),
            attrs,
            owner,
            file,
        })
    }

    /// Destroys an object if `check` allows it, under one write lock (its
    /// CKA_DESTROYABLE cannot turn false between the check and the removal).
    pub fn destroy(&self, h: CK_OBJECT_HANDLE, check: impl FnOnce(&Object) -> Rv<()>) -> Rv<()> {
        let mut inner = self.write();
        let obj = inner.get(h)?;
        check(&obj)?;
        if let Some(id) = &obj.file_id {
            self.store.delete_object(&self.store.lock()?, id)?;
            inner.handles.remove(id);
        }
        inner.objects.remove(&h);
        Ok(())
    }

    /// Changes an object's attributes (C_SetAttributeValue): `change` gets
    /// the current object and whether the SO is logged in, and returns the
    /// new attributes. Read, change and store happen under one write lock,
    /// so concurrent changes never undo one another.
    pub fn modify(&self, h: CK_OBJECT_HANDLE, change: impl FnOnce(&Object, bool) -> Rv<Attrs>) -> Rv<()> {
        let mut inner = self.write();
        let obj = inner.get(h)?;
        if obj.locked {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let attrs = change(&obj, inner.login == Some(CKU_SO))?;
        if let Some(id) = &obj.file_id {
            let file = ObjectFile::encode(id, &attrs, inner.key.as_ref())?;
            self.store.write_object(&self.store.lock()?, id, &file)?;
        }
        inner.objects.insert(h, Arc::new(obj.with_attrs(attrs)));
        Ok(())
    }

    pub fn drop_session_objects(&self, session: CK_SESSION_HANDLE) {
        self.write().objects.retain(|_, o| o.owner != Some(session));
    }

    /// Reads the token objects again if another process (or this one) changed them since they
    /// were read: an object created, replaced or destroyed by pkcs11-tool is found, or no longer
    /// found, by a process logged in before, as with SoftHSM2. A failed read keeps the objects
    /// as they were.
    fn refresh_objects(&self) {
        let now = self.store.objects_generation();
        if now.is_some() && now == self.read().generation {
            return;
        }
        let mut inner = self.write();
        if inner.meta.is_none() || (now.is_some() && now == inner.generation) {
            return;
        }
        let _ = self.load_objects(&mut inner);
    }

    pub fn find(&self, template: &[(CK_ATTRIBUTE_TYPE, Value)]) -> Vec<CK_OBJECT_HANDLE> {
        self.refresh_objects();
        let inner = self.read();
        let mut found: Vec<_> = inner
            .objects
            .values()
            .filter(|o| inner.visible(o) && o.attrs.matches(template))
            .map(|o| o.handle)
            .collect();
        found.sort_unstable();
        found
    }
}
