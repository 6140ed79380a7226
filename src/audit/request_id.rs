//! Request ids: a UUID in its 36-character hyphenated form, held inline. Every request makes one
//! and the authentication wrapper keeps a copy for the refusals it records, so it is `Copy`
//! rather than a heap string.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; 36]);

impl RequestId {
    /// A UUID-v4-shaped id, unique across restarts: a random 64-bit prefix drawn once per process
    /// and a counter, instead of a getrandom syscall per request.
    pub fn next() -> RequestId {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
        // The RFC 4122 variant bits sit at the top of the low half; the prefix keeps version 4.
        let low = COUNTER.fetch_add(1, Ordering::Relaxed) & (u64::MAX >> 2) | (1 << 63);
        RequestId::from_uuid(uuid::Uuid::from_u64_pair(prefix, low))
    }

    pub fn from_uuid(uuid: uuid::Uuid) -> RequestId {
        let mut text = [0u8; 36];
        uuid.hyphenated().encode_lower(&mut text);
        RequestId(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a hyphenated UUID is ASCII")
    }
}

impl Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
