//! Dropped AES keys leave no copy of the key in freed heap memory. This
//! binary's allocator looks for the key's first 16 bytes (AES round key 0
//! for every key size) in each block freed while armed. Each key size gets
//! its own first byte: stack residue of one key's setup can be copied into
//! the next key's heap block (through the aes crate's uninitialised union
//! bytes), which is not what this test is about.
use hsm_sim::mechanisms::aes::AesKey;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

const KEY: [u8; 32] = *b"?reed-memory test key: 012345678";

/// The first byte of the key being tested.
static FIRST: AtomicU8 = AtomicU8::new(0);

static ARMED: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicBool = AtomicBool::new(false);

struct Scanner;

// SAFETY: forwards every call to the system allocator unchanged; dealloc
// only reads the block it is handed before freeing it.
unsafe impl GlobalAlloc for Scanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes until freed below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let first = FIRST.load(Ordering::SeqCst);
            if block.windows(16).any(|w| w[0] == first && w[1..] == KEY[1..16]) {
                FOUND.store(true, Ordering::SeqCst);
            }
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Scanner = Scanner;

#[test]
fn dropped_aes_keys_leave_no_key_in_freed_memory() {
    for len in [16, 24, 32] {
        let mut key = KEY;
        key[0] = len as u8;
        FIRST.store(key[0], Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        // Boxed as the module keeps keys (inside an Arc), so the schedule is on the heap.
        let k = Box::new(AesKey::new(&key[..len]).unwrap());
        let ct = k.gcm_seal(&[0; 12], b"aad", b"plaintext").unwrap();
        assert_eq!(&k.gcm_open(&[0; 12], b"aad", &ct).unwrap()[..], b"plaintext");
        drop(k);
        ARMED.store(false, Ordering::SeqCst);
        assert!(!FOUND.load(Ordering::SeqCst), "a freed block held the {len}-byte key");
    }
}
