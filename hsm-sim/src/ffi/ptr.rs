//! Pointer handling at the C boundary: every raw read or write the module
//! does on caller memory goes through these helpers.
use crate::attrs::Template;
use crate::session::Out;
use crate::Rv;
use cryptoki_sys::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use zeroize::Zeroizing;

/// Runs an entry point body; a panic becomes CKR_GENERAL_ERROR instead of
/// unwinding into C.
pub fn guard(f: impl FnOnce() -> Rv<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// # Safety
/// `p` must be null or point to `len` readable bytes that stay valid and
/// unmodified for `'a`.
pub unsafe fn bytes<'a>(p: *const u8, len: CK_ULONG) -> Rv<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    // No object can be longer than isize::MAX bytes (a slice claiming more
    // would be undefined behaviour), nor than the address space.
    let len = match usize::try_from(len) {
        Ok(n) if n <= isize::MAX as usize => n,
        _ => return Err(CKR_ARGUMENTS_BAD),
    };
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, at most isize::MAX, and the caller guarantees `len`
    // readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// # Safety
/// `p` must be null or valid for writing a `T`.
pub unsafe fn store<T>(p: *mut T, v: T) -> Rv<()> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller guarantees it is writable; unaligned
    // writes keep us safe with packed caller structs.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// # Safety
/// `p` must be null or valid for reading a `T`.
pub unsafe fn load<T: Copy>(p: *const T) -> Rv<T> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller guarantees a readable `T`.
    Ok(unsafe { p.read_unaligned() })
}

/// # Safety
/// `p` must be null or point to `n` CK_ATTRIBUTEs whose pValue/ulValueLen
/// describe readable memory.
pub unsafe fn attributes<'a>(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Rv<&'a [CK_ATTRIBUTE]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller guarantees `n` attributes.
    Ok(unsafe { std::slice::from_raw_parts(p, n as usize) })
}

/// Copies a caller template; the copies are wiped when dropped, as values
/// may be key material.
///
/// # Safety
/// As for [`attributes`].
pub unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Rv<Template> {
    // SAFETY: forwarded caller guarantee.
    let attrs = unsafe { attributes(p, n) }?;
    attrs
        .iter()
        .map(|a| {
            // SAFETY: the caller guarantees each pValue holds ulValueLen bytes.
            let v = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
            Ok((a.type_, Zeroizing::new(v.to_vec())))
        })
        .collect()
}

/// The caller's output capacity: None for a length query (null buffer).
///
/// # Safety
/// `len` must be null or a readable CK_ULONG.
pub unsafe fn capacity(buf: *const u8, len: *const CK_ULONG) -> Rv<Option<usize>> {
    // SAFETY: forwarded caller guarantee.
    let n = unsafe { load(len) }?;
    Ok(if buf.is_null() { None } else { Some(n as usize) })
}

/// Writes an [`Out`] following the length convention.
///
/// # Safety
/// `len` must be writable; a `Data` result only arises when `buf` was
/// non-null with at least that many writable bytes.
pub unsafe fn deliver(buf: *mut u8, len: *mut CK_ULONG, out: Out) -> Rv<()> {
    match out {
        // SAFETY: forwarded caller guarantee on `len`.
        Out::Len(n) => unsafe { store(len, n as CK_ULONG) },
        Out::TooSmall(n) => {
            // SAFETY: forwarded caller guarantee on `len`.
            unsafe { store(len, n as CK_ULONG) }?;
            Err(CKR_BUFFER_TOO_SMALL)
        }
        Out::Data(v) => {
            if !v.is_empty() {
                // SAFETY: `produce` checked the capacity the caller gave for
                // `buf`; source and destination cannot overlap.
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len()) };
            }
            // SAFETY: forwarded caller guarantee on `len`.
            unsafe { store(len, v.len() as CK_ULONG) }
        }
    }
}

/// Array output with the length convention (slot and mechanism lists).
///
/// # Safety
/// `count` must be readable/writable; `buf`, when non-null, must hold
/// `*count` writable elements.
pub unsafe fn list<T: Copy>(buf: *mut T, count: *mut CK_ULONG, items: &[T]) -> Rv<()> {
    // SAFETY: forwarded caller guarantee on `count`.
    let cap = unsafe { load(count) }? as usize;
    // SAFETY: forwarded caller guarantee on `count`.
    unsafe { store(count, items.len() as CK_ULONG) }?;
    if buf.is_null() {
        return Ok(());
    }
    if cap < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `buf` holds at least `cap >= items.len()` elements.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), buf, items.len()) };
    Ok(())
}

/// A blank-padded fixed-size text field.
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let b = s.as_bytes();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}
