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

/// Checks a caller's array of `n` `T`s before it becomes a slice: Ok(None)
/// when empty; CKR_ARGUMENTS_BAD for a null or misaligned pointer, or a
/// length no object can have (over isize::MAX bytes a slice is undefined
/// behaviour, whatever the caller passed).
fn checked_len<T>(p: *const T, n: CK_ULONG) -> Rv<Option<usize>> {
    if n == 0 {
        return Ok(None);
    }
    let max = isize::MAX as usize / size_of::<T>().max(1);
    match usize::try_from(n) {
        Ok(n) if n <= max && !p.is_null() && p.is_aligned() => Ok(Some(n)),
        _ => Err(CKR_ARGUMENTS_BAD),
    }
}

/// A caller's array of `n` `T`s, checked by [`checked_len`].
///
/// # Safety
/// `p` must be null or point to `n` readable `T`s that stay valid and
/// unmodified for `'a`.
pub unsafe fn slice<'a, T>(p: *const T, n: CK_ULONG) -> Rv<&'a [T]> {
    match checked_len(p, n)? {
        None => Ok(&[]),
        // SAFETY: non-null, aligned, at most isize::MAX bytes, and the
        // caller guarantees `n` readable elements.
        Some(n) => Ok(unsafe { std::slice::from_raw_parts(p, n) }),
    }
}

/// A caller's writable array of `n` `T`s, checked by [`checked_len`].
///
/// # Safety
/// `p` must be null or point to `n` writable `T`s that nothing else uses
/// for `'a`.
pub unsafe fn slice_mut<'a, T>(p: *mut T, n: CK_ULONG) -> Rv<&'a mut [T]> {
    match checked_len(p, n)? {
        None => Ok(&mut []),
        // SAFETY: non-null, aligned, at most isize::MAX bytes, and the
        // caller guarantees `n` writable elements used by no one else.
        Some(n) => Ok(unsafe { std::slice::from_raw_parts_mut(p, n) }),
    }
}

/// # Safety
/// `p` must be null or point to `len` readable bytes that stay valid and
/// unmodified for `'a`.
pub unsafe fn bytes<'a>(p: *const u8, len: CK_ULONG) -> Rv<&'a [u8]> {
    // SAFETY: forwarded caller guarantee.
    unsafe { slice(p, len) }
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
    // SAFETY: forwarded caller guarantee.
    unsafe { slice(p, n) }
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
    // SAFETY: `buf` holds at least `cap >= items.len()` writable elements.
    unsafe { slice_mut(buf, items.len() as CK_ULONG) }?.copy_from_slice(items);
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
