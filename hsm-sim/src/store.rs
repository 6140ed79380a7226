//! On-disk token: `token.json` plus one file per token object under
//! `objects/`. Every write is atomic (temp file, fsync, rename, fsync dir),
//! and key material only ever reaches disk sealed under the token key.
//!
//! Several processes may open one token directory (kms and pkcs11-tool,
//! say). Every write happens under the slot's lock ([`SlotLock`]), and
//! `token.json` is changed by reading it afresh under that lock
//! ([`Store::update_meta`]): one process never writes back a PIN or a
//! failure count another has since changed, and no two share a temp file.
use crate::attrs::{is_secret, Attrs, Value};
use crate::pin::{hex, open, seal, unhex, Key32, PinRecord};
use crate::Rv;
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenMeta {
    pub label: String,
    pub serial: String,
    pub so: PinRecord,
    pub user: Option<PinRecord>,
    #[serde(default)]
    pub so_failures: u32,
    #[serde(default)]
    pub user_failures: u32,
}

impl TokenMeta {
    /// The consecutive wrong PINs counted for the SO or the user.
    pub fn failures_mut(&mut self, so: bool) -> &mut u32 {
        if so {
            &mut self.so_failures
        } else {
            &mut self.user_failures
        }
    }
}

/// One token object file. Private objects are sealed whole; public ones
/// keep non-secret attributes readable so they load before login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectFile {
    pub private: bool,
    pub public: BTreeMap<String, String>,
    pub sealed: Option<String>,
}

pub struct Store {
    dir: PathBuf,
}

/// Proof that the slot's lock is held: an advisory `flock` on the slot
/// directory, released when dropped (or when the process dies). Store
/// writes take one, so they cannot be made without it. Taken only while
/// the token's in-process write lock is held, so threads of one process
/// never wait on each other's `flock`.
pub struct SlotLock {
    _dir: File,
}

fn io_err(_: std::io::Error) -> cryptoki_sys::CK_RV {
    CKR_DEVICE_ERROR
}

/// Creates `dir` and its missing ancestors, owner-only (0700: object ids and
/// PIN records are no one else's), then fsyncs the parent of each one
/// created, so a new directory's entry survives a power loss (the files
/// written into it are synced, their directory entry would not be).
/// Returns the directories it synced.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.is_dir() {
        missing.push(p);
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut synced = Vec::new();
    for d in missing {
        let parent = match d.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
        synced.push(parent.to_path_buf());
    }
    Ok(synced)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the
/// new content, never a torn file. The temporary file is made new (a stale
/// one, left by a crash, is removed first), so it is this process's, 0600,
/// and never a link someone left there to be written through.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn decode(map: &BTreeMap<String, String>, into: &mut Attrs) -> Rv<()> {
    for (t, v) in map {
        let t = CK_ATTRIBUTE_TYPE::from_str_radix(t, 16).map_err(|_| CKR_DEVICE_ERROR)?;
        into.set(t, unhex(v).map_err(|_| CKR_DEVICE_ERROR)?);
    }
    Ok(())
}

/// Attribute values as hex strings by type, the on-disk form. Wiped when
/// dropped: the sealed part is key material.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
struct HexAttrs(BTreeMap<String, String>);

impl Drop for HexAttrs {
    fn drop(&mut self) {
        self.0.values_mut().for_each(Zeroize::zeroize);
    }
}

impl HexAttrs {
    fn encode<'a>(attrs: impl Iterator<Item = (&'a CK_ATTRIBUTE_TYPE, &'a Value)>) -> HexAttrs {
        HexAttrs(attrs.map(|(t, v)| (format!("{t:x}"), hex(v))).collect())
    }

    /// An upper bound of the JSON size: hex needs no escapes, so each entry
    /// is `"k":"v",` at most.
    fn json_size(&self) -> usize {
        2 + self.0.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>()
    }

    /// JSON in a buffer sized up front: a growing Vec would leave copies of
    /// the secrets behind in freed memory.
    fn to_json(&self) -> Rv<Zeroizing<Vec<u8>>> {
        let mut json = Zeroizing::new(Vec::with_capacity(self.json_size()));
        serde_json::to_writer(&mut *json, self).map_err(|_| CKR_GENERAL_ERROR)?;
        Ok(json)
    }
}

fn aad(id: &str) -> Vec<u8> {
    format!("hsm-sim object {id}").into_bytes()
}

impl ObjectFile {
    /// Fails with CKR_USER_NOT_LOGGED_IN when secrets must be sealed but the
    /// token key is locked.
    pub fn encode(id: &str, a: &Attrs, key: Option<&Key32>) -> Rv<ObjectFile> {
        let private = a.bool(CKA_PRIVATE);
        let class = a.class();
        let (secret, public): (Vec<_>, Vec<_>) = a.0.iter().partition(|(t, _)| private || is_secret(class, **t));
        let sealed = if secret.is_empty() {
            None
        } else {
            let key = key.ok_or(CKR_USER_NOT_LOGGED_IN)?;
            let json = HexAttrs::encode(secret.into_iter()).to_json()?;
            Some(hex(&seal(key, &aad(id), &json)?))
        };
        let mut public = HexAttrs::encode(public.into_iter());
        Ok(ObjectFile {
            private,
            public: std::mem::take(&mut public.0),
            sealed,
        })
    }

    /// Returns the attributes that can be recovered with `key`, and whether
    /// some stayed sealed.
    /// A file not shaped as `encode` writes one (a private object with attributes outside the
    /// seal or no seal, key material in the clear part, a CKA_PRIVATE that disagrees with the
    /// file) was not written here: it is refused as a damaged one (CKR_DEVICE_ERROR), so a file
    /// planted in the token directory can't pass key material or a private object off as the
    /// token's. (The clear part of a public object is not authenticated: its attributes other
    /// than key material are as the directory's writers left them.)
    pub fn decode(&self, id: &str, key: Option<&Key32>) -> Rv<(Attrs, bool)> {
        if self.private && (!self.public.is_empty() || self.sealed.is_none()) {
            return Err(CKR_DEVICE_ERROR);
        }
        let mut a = Attrs::default();
        decode(&self.public, &mut a)?;
        // Key material in the clear part, or a public object whose clear CKA_PRIVATE says
        // otherwise (checked before login too, not only once the seal opens).
        if a.0.keys().any(|t| is_secret(a.class(), *t)) || (!self.private && a.bool(CKA_PRIVATE)) {
            return Err(CKR_DEVICE_ERROR);
        }
        let mut locked = false;
        if let Some(sealed) = &self.sealed {
            match key {
                Some(key) => {
                    let plain = open(key, &aad(id), &unhex(sealed)?).map_err(|_| CKR_DEVICE_ERROR)?;
                    let map: HexAttrs = serde_json::from_slice(&plain).map_err(|_| CKR_DEVICE_ERROR)?;
                    decode(&map.0, &mut a)?;
                }
                None => locked = true,
            }
        }
        if !locked && a.bool(CKA_PRIVATE) != self.private {
            return Err(CKR_DEVICE_ERROR);
        }
        Ok((a, locked))
    }
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }

    fn ensure(&self) -> Rv<()> {
        create_dirs(&self.objects_dir()).map(|_| ()).map_err(io_err)
    }

    /// The token metadata; None only for a blank token: no `token.json`
    /// and no objects (objects without metadata are a damaged token, not a
    /// blank one). The error names the file and the cause, never its
    /// content (PIN verifiers must not reach a log).
    pub fn load_meta(&self) -> Result<Option<TokenMeta>, String> {
        let path = self.dir.join("token.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                let what = match e.classify() {
                    serde_json::error::Category::Eof => "truncated",
                    serde_json::error::Category::Syntax => "not JSON",
                    _ => "not token metadata",
                };
                format!("{}: {what} (line {}, column {})", path.display(), e.line(), e.column())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.has_objects()? {
                    Err(format!(
                        "{} is missing but {} holds objects",
                        path.display(),
                        self.objects_dir().display()
                    ))
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Whether `objects/` holds anything besides leftovers of interrupted
    /// writes (dot files).
    fn has_objects(&self) -> Result<bool, String> {
        let dir = self.objects_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in rd {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes the slot's lock, creating the token's directories first.
    pub fn lock(&self) -> Rv<SlotLock> {
        self.ensure()?;
        self.lock_existing()?.ok_or(CKR_DEVICE_ERROR)
    }

    /// The slot's lock; None when the slot directory does not exist.
    fn lock_existing(&self) -> Rv<Option<SlotLock>> {
        let dir = match File::open(&self.dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        dir.lock().map_err(io_err)?;
        Ok(Some(SlotLock { _dir: dir }))
    }

    /// Reads `token.json` afresh under the slot's lock, lets `change` edit
    /// it and saves it when `change` returns true. Returns the metadata as
    /// it now is on disk; None for a blank token (`change` is not called).
    pub fn update_meta(&self, change: impl FnOnce(&mut TokenMeta) -> Rv<bool>) -> Rv<Option<TokenMeta>> {
        let Some(lock) = self.lock_existing()? else {
            return Ok(None);
        };
        let loaded = self.load_meta().map_err(|reason| {
            eprintln!("hsm-sim: {reason}");
            CKR_DEVICE_ERROR
        })?;
        let Some(mut meta) = loaded else {
            return Ok(None);
        };
        if change(&mut meta)? {
            self.save_meta(&lock, &meta)?;
        }
        Ok(Some(meta))
    }

    pub fn save_meta(&self, _: &SlotLock, meta: &TokenMeta) -> Rv<()> {
        self.ensure()?;
        let bytes = serde_json::to_vec_pretty(meta).map_err(|_| CKR_GENERAL_ERROR)?;
        write_atomic(&self.dir.join("token.json"), &bytes).map_err(io_err)
    }

    /// Ids of the stored objects; leftovers of interrupted writes are skipped.
    pub fn object_ids(&self) -> Rv<Vec<String>> {
        let rd = match fs::read_dir(self.objects_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        };
        let mut ids = Vec::new();
        for entry in rd {
            let name = entry.map_err(io_err)?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json") {
                if !id.starts_with('.') {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub fn read_object(&self, id: &str) -> Rv<ObjectFile> {
        let bytes = fs::read(self.objects_dir().join(format!("{id}.json"))).map_err(io_err)?;
        serde_json::from_slice(&bytes).map_err(|_| CKR_DEVICE_ERROR)
    }

    pub fn write_object(&self, lock: &SlotLock, id: &str, file: &ObjectFile) -> Rv<()> {
        self.ensure()?;
        let bytes = serde_json::to_vec(file).map_err(|_| CKR_GENERAL_ERROR)?;
        let written = write_atomic(&self.objects_dir().join(format!("{id}.json")), &bytes).map_err(io_err);
        self.objects_changed(lock);
        written
    }

    /// Writes a key pair's two object files so that a crash leaves both or neither: the ids are
    /// recorded first, and while that record exists the pair is not committed. A record a dead
    /// writer left is rolled back (`settle_pending_pair`) by the next open and by the next pair
    /// written; a failure here rolls its own back. Generation moves once, after both files.
    pub fn write_pair(&self, lock: &SlotLock, pair: [(&str, &ObjectFile); 2]) -> Rv<()> {
        self.ensure()?;
        let record = self.dir.join(PENDING_PAIR_FILE);
        // Writers hold the lock, so a record found now is a dead writer's: its half pair goes
        // first, or overwriting the record would make that half permanent.
        self.settle_pending_pair(lock);
        if record.exists() {
            return Err(CKR_DEVICE_ERROR);
        }
        write_atomic(&record, format!("{}\n{}\n", pair[0].0, pair[1].0).as_bytes()).map_err(io_err)?;
        // Removing the record commits the pair.
        let committed = pair
            .iter()
            .try_for_each(|(id, file)| {
                let bytes = serde_json::to_vec(file).map_err(|_| CKR_GENERAL_ERROR)?;
                write_atomic(&self.objects_dir().join(format!("{id}.json")), &bytes).map_err(io_err)
            })
            .and_then(|()| fs::remove_file(&record).map_err(io_err));
        if committed.is_err() {
            self.settle_pending_pair(lock);
        }
        self.objects_changed(lock);
        committed?;
        // Made durable as `write_atomic` makes a rename durable.
        self.sync_dir()
    }

    /// Rolls back a key pair whose writing did not finish (`write_pair`): deletes what was written
    /// of it, then its record. Failures go to stderr; the record stays for the next try.
    pub fn settle_pending_pair(&self, lock: &SlotLock) {
        let record = self.dir.join(PENDING_PAIR_FILE);
        let ids = match self.pending_pair() {
            Ok(None) => return,
            Ok(Some(ids)) => ids,
            Err(e) => {
                eprintln!(
                    "hsm-sim: {}: cannot read it to roll a key pair back: {e}",
                    record.display()
                );
                return;
            }
        };
        let rolled_back = ids
            .iter()
            .try_for_each(
                |id| match fs::remove_file(self.objects_dir().join(format!("{id}.json"))) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            )
            .and_then(|()| File::open(self.objects_dir()).and_then(|d| d.sync_all()))
            .and_then(|()| fs::remove_file(&record))
            .and_then(|()| File::open(&self.dir).and_then(|d| d.sync_all()));
        self.objects_changed(lock);
        if let Err(e) = rolled_back {
            eprintln!("hsm-sim: {}: rolling back a key pair: {e}", record.display());
        }
    }

    /// The ids a key pair record names (`write_pair`), None without a record. Only file ids this
    /// module makes are taken, so a damaged record can't name another path.
    pub fn pending_pair(&self) -> std::io::Result<Option<Vec<String>>> {
        match fs::read_to_string(self.dir.join(PENDING_PAIR_FILE)) {
            Ok(text) => Ok(Some(
                text.lines()
                    .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_string)
                    .collect(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn delete_object(&self, lock: &SlotLock, id: &str) -> Rv<()> {
        let deleted = fs::remove_file(self.objects_dir().join(format!("{id}.json"))).map_err(io_err);
        self.objects_changed(lock);
        deleted?;
        File::open(self.objects_dir())
            .and_then(|d| d.sync_all())
            .map_err(io_err)
    }

    /// The objects' generation: a counter every change of a token object moves on, so that
    /// another process on this token sees that its copy of the objects is out of date. None if
    /// it can't be read (being rewritten, say): then the objects are read again to be sure.
    pub fn objects_generation(&self) -> Option<u64> {
        match fs::read_to_string(self.dir.join(GENERATION_FILE)) {
            Ok(text) => text.trim().parse().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
            Err(_) => None,
        }
    }

    /// Moves the generation on, after the change it announces (under the slot's lock, so no two
    /// writers race). Replaced by a rename, so a writer killed half way never leaves a file that
    /// reads as an older generation; not synced, since after a power loss every process reads the
    /// objects afresh anyway. A failure leaves the other processes' copies as they were until
    /// their next login, as before there was a generation.
    fn objects_changed(&self, _: &SlotLock) {
        let next = self.objects_generation().unwrap_or(0).wrapping_add(1);
        let path = self.dir.join(GENERATION_FILE);
        let tmp = self.dir.join(format!(".{GENERATION_FILE}.tmp"));
        if let Err(e) = fs::write(&tmp, next.to_string()).and_then(|()| fs::rename(&tmp, &path)) {
            eprintln!("hsm-sim: {}: {e}", path.display());
        }
    }

    /// Where C_InitToken puts the objects of the token it replaces. Named
    /// by that token's serial, so that after a crash the next open can tell
    /// whether the new `token.json` was saved (`settle_objects_aside`).
    fn aside_dir(&self, serial: &str) -> PathBuf {
        self.dir.join(format!("{ASIDE_PREFIX}{serial}"))
    }

    fn sync_dir(&self) -> Rv<()> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err)
    }

    /// C_InitToken's first step: every object leaves the token in one
    /// rename, so a crash never leaves some of them behind.
    pub fn set_objects_aside(&self, lock: &SlotLock, serial: &str) -> Rv<()> {
        let moved = fs::rename(self.objects_dir(), self.aside_dir(serial));
        // After the change it announces: a reader that saw the new generation lists the new objects.
        self.objects_changed(lock);
        match moved {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Puts back objects set aside by the token `serial`, when `objects/`
    /// is absent or empty (a failed save may have made it).
    pub fn restore_objects(&self, lock: &SlotLock, serial: &str) -> Rv<()> {
        let aside = self.aside_dir(serial);
        if !aside.exists() {
            return Ok(());
        }
        let _ = fs::remove_dir(self.objects_dir()); // only if empty
        let moved = fs::rename(&aside, self.objects_dir()).map_err(io_err);
        self.objects_changed(lock);
        moved?;
        self.sync_dir()
    }

    /// Finishes what an interrupted C_InitToken left: objects set aside by
    /// the token `token.json` still describes (`current`) go back, those of
    /// a token since replaced are deleted. Failures go to stderr.
    pub fn settle_objects_aside(&self, lock: &SlotLock, current: Option<&str>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(serial) = name.to_str().and_then(|n| n.strip_prefix(ASIDE_PREFIX)) else {
                continue;
            };
            let result = if Some(serial) == current {
                self.restore_objects(lock, serial)
                    .map_err(|rv| format!("CK_RV {rv:#x}"))
            } else {
                fs::remove_dir_all(entry.path()).map_err(|e| e.to_string())
            };
            if let Err(e) = result {
                eprintln!("hsm-sim: {}: {e}", entry.path().display());
            }
        }
    }

    /// The slot's lock if the slot directory exists, for `settle_objects_aside` at open.
    pub fn lock_if_present(&self) -> Option<SlotLock> {
        self.lock_existing().ok().flatten()
    }
}

/// Directory name prefix of objects set aside by C_InitToken.
const ASIDE_PREFIX: &str = ".objects-of-";
/// The record of a key pair being written (`Store::write_pair`), beside `objects/`.
const PENDING_PAIR_FILE: &str = "pair.pending";
/// The file holding the objects' generation (`Store::objects_generation`), beside `objects/`.
const GENERATION_FILE: &str = "objects.generation";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::new_key;

    /// A path in the temporary directory that no other test uses (not created).
    fn fresh_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("hsm-sim-{tag}-{}-{nanos}", std::process::id()))
    }

    #[test]
    fn new_directories_are_synced_into_their_parents() {
        let root = fresh_dir("dirs");
        fs::create_dir(&root).unwrap();
        let objects = root.join("slot-3").join("objects");
        let synced = create_dirs(&objects).unwrap();
        assert!(objects.is_dir());
        assert_eq!(synced, vec![root.join("slot-3"), root.clone()]);
        assert!(create_dirs(&objects).unwrap().is_empty(), "nothing new to sync");
        fs::remove_dir_all(&root).unwrap();
    }

    /// New directories are owner-only; a stale temporary file, even a link to a file elsewhere,
    /// is replaced, not written through.
    #[test]
    fn directories_are_owner_only_and_temporary_files_are_made_new() {
        use std::os::unix::fs::PermissionsExt;
        let root = fresh_dir("modes");
        let objects = root.join("slot-0").join("objects");
        create_dirs(&objects).unwrap();
        for d in [&root, &root.join("slot-0"), &objects] {
            assert_eq!(
                fs::metadata(d).unwrap().permissions().mode() & 0o777,
                0o700,
                "{}",
                d.display()
            );
        }
        let elsewhere = root.join("elsewhere");
        fs::write(&elsewhere, "untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, objects.join(".o1.json.tmp")).unwrap();
        write_atomic(&objects.join("o1.json"), b"new").unwrap();
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "untouched");
        assert_eq!(fs::read(objects.join("o1.json")).unwrap(), b"new");
        let mode = fs::metadata(objects.join("o1.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&root).unwrap();
    }

    /// Files shaped otherwise than `encode` writes them are refused: key material in the clear
    /// part, a private object with clear attributes or no seal, a private flag that disagrees
    /// with CKA_PRIVATE. What `encode` writes decodes to what it was given.
    #[test]
    fn object_files_not_shaped_as_written_are_refused() {
        let key = new_key().unwrap();
        let secret = |private: bool| {
            let mut a = Attrs::default();
            a.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
            a.set_bool(CKA_PRIVATE, private);
            a.set(CKA_VALUE, vec![7u8; 32]);
            a.set(CKA_LABEL, b"k".to_vec());
            a
        };
        for private in [false, true] {
            let file = ObjectFile::encode("o1", &secret(private), Some(&key)).unwrap();
            let (a, locked) = file.decode("o1", Some(&key)).unwrap();
            assert!(!locked);
            assert_eq!(a.0, secret(private).0);
            assert!(file.decode("o2", Some(&key)).is_err(), "sealed for another id");
        }
        let public = ObjectFile::encode("o1", &secret(false), Some(&key)).unwrap();
        let private = ObjectFile::encode("o1", &secret(true), Some(&key)).unwrap();
        let mut planted = public.clone();
        planted.public.insert(format!("{CKA_VALUE:x}"), "00".repeat(32));
        assert_eq!(planted.decode("o1", Some(&key)).err(), Some(CKR_DEVICE_ERROR));
        let mut unsealed = private.clone();
        unsealed.sealed = None;
        assert_eq!(unsealed.decode("o1", Some(&key)).err(), Some(CKR_DEVICE_ERROR));
        let mut clear = private.clone();
        clear.public.insert(format!("{CKA_LABEL:x}"), "6b".into());
        assert_eq!(clear.decode("o1", Some(&key)).err(), Some(CKR_DEVICE_ERROR));
        let mut flipped = private.clone();
        flipped.private = false;
        assert_eq!(flipped.decode("o1", Some(&key)).err(), Some(CKR_DEVICE_ERROR));
        let mut flipped = public.clone();
        flipped.private = true;
        assert_eq!(flipped.decode("o1", Some(&key)).err(), Some(CKR_DEVICE_ERROR));
        // A public object's clear CKA_PRIVATE made TRUE is refused before login as well.
        let mut claims_private = public.clone();
        claims_private.public.insert(format!("{CKA_PRIVATE:x}"), "01".into());
        assert_eq!(claims_private.decode("o1", None).err(), Some(CKR_DEVICE_ERROR));
    }

    /// A pair's record names file ids only: a damaged one that names another path deletes
    /// nothing outside `objects/`, and is removed.
    #[test]
    fn a_damaged_pair_record_deletes_only_object_files() {
        let dir = fresh_dir("pair");
        let store = Store::new(dir.clone());
        store.ensure().unwrap();
        fs::write(dir.join("token.json"), "{}").unwrap();
        fs::write(store.objects_dir().join("ab12.json"), "{}").unwrap();
        fs::write(store.objects_dir().join("cd34.json"), "{}").unwrap();
        fs::write(dir.join(PENDING_PAIR_FILE), "../token\nab12\n").unwrap();
        store.settle_pending_pair(&store.lock().unwrap());
        assert!(
            dir.join("token.json").exists(),
            "a path outside objects/ is never deleted"
        );
        assert!(
            !store.objects_dir().join("ab12.json").exists(),
            "the pair's half is rolled back"
        );
        assert!(store.objects_dir().join("cd34.json").exists(), "other objects stay");
        assert!(!dir.join(PENDING_PAIR_FILE).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The sealed JSON fits the buffer sized for it (so it never grew and
    /// left a copy behind), and reads back.
    #[test]
    fn sealed_attributes_fit_their_buffer_and_round_trip() {
        let mut a = Attrs::default();
        a.set_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
        a.set_bool(CKA_PRIVATE, true);
        a.set(CKA_VALUE, vec![0xab; 4096]);
        a.set(CKA_LABEL, Vec::new());
        let map = HexAttrs::encode(a.0.iter());
        let json = map.to_json().unwrap();
        assert!(json.len() <= map.json_size(), "{} > {}", json.len(), map.json_size());
        let key = new_key().unwrap();
        let file = ObjectFile::encode("id", &a, Some(&key)).unwrap();
        assert!(file.public.is_empty());
        assert_eq!(file.decode("id", Some(&key)).unwrap(), (a, false));
    }
}
