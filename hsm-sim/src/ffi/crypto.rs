//! Encrypt, decrypt, digest, sign, verify and random entry points.
use super::mech::mechanism;
use super::ptr::{bytes, capacity, deliver, guard, slice_mut};
use crate::module;
use crate::session::Out;
use crate::Rv;
use cryptoki_sys::*;

pub unsafe extern "C" fn C_EncryptInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: the caller passes a readable CK_MECHANISM.
    guard(|| module::get()?.encrypt_init(h, &unsafe { mechanism(m) }?, k, true))
}

pub unsafe extern "C" fn C_DecryptInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: the caller passes a readable CK_MECHANISM.
    guard(|| module::get()?.encrypt_init(h, &unsafe { mechanism(m) }?, k, false))
}

/// Runs a call's argument checks; an error there ends the operation `func`
/// belongs to, as any error but CKR_BUFFER_TOO_SMALL must, although the
/// call never reached the module.
fn checked<T>(m: &module::Module, h: CK_SESSION_HANDLE, func: &str, args: impl FnOnce() -> Rv<T>) -> Rv<T> {
    args().inspect_err(|_| m.end_operation(h, func))
}

/// Shared body of single-part and update calls that return data.
///
/// # Safety
/// `input` holds `in_len` readable bytes; `out`/`out_len` follow the
/// length convention.
unsafe fn crypt(
    h: CK_SESSION_HANDLE,
    func: &str,
    input: *const u8,
    in_len: CK_ULONG,
    out: *mut u8,
    out_len: *mut CK_ULONG,
    call: impl FnOnce(&module::Module, &[u8], Option<usize>) -> Rv<Out>,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        let (data, cap) = checked(&m, h, func, || {
            // SAFETY: forwarded caller guarantees.
            let data = unsafe { bytes(input, in_len) }?;
            // SAFETY: forwarded caller guarantees.
            let cap = unsafe { capacity(out, out_len) }?;
            Ok((data, cap))
        })?;
        let r = call(&m, data, cap)?;
        // SAFETY: forwarded caller guarantees; capacity was honoured.
        unsafe { deliver(out, out_len, r) }
    })
}

/// # Safety
/// As for [`crypt`], without input.
unsafe fn finish(
    h: CK_SESSION_HANDLE,
    func: &str,
    out: *mut u8,
    out_len: *mut CK_ULONG,
    call: impl FnOnce(&module::Module, Option<usize>) -> Rv<Out>,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: forwarded caller guarantees.
        let cap = checked(&m, h, func, || unsafe { capacity(out, out_len) })?;
        let r = call(&m, cap)?;
        // SAFETY: forwarded caller guarantees; capacity was honoured.
        unsafe { deliver(out, out_len, r) }
    })
}

/// Shared body of the update calls that take input only.
///
/// # Safety
/// `input` holds `in_len` readable bytes.
unsafe fn update(
    h: CK_SESSION_HANDLE,
    func: &str,
    input: *const u8,
    in_len: CK_ULONG,
    call: impl FnOnce(&module::Module, &[u8]) -> Rv<()>,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: forwarded caller guarantee.
        let data = checked(&m, h, func, || unsafe { bytes(input, in_len) })?;
        call(&m, data)
    })
}

pub unsafe extern "C" fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    d: *mut u8,
    n: CK_ULONG,
    o: *mut u8,
    on: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { crypt(h, "C_Encrypt", d, n, o, on, |m, d, c| m.crypt(h, d, c, true)) }
}

pub unsafe extern "C" fn C_EncryptUpdate(
    h: CK_SESSION_HANDLE,
    d: *mut u8,
    n: CK_ULONG,
    o: *mut u8,
    on: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe {
        crypt(h, "C_EncryptUpdate", d, n, o, on, |m, d, c| {
            m.crypt_update(h, d, c, true)
        })
    }
}

pub unsafe extern "C" fn C_EncryptFinal(h: CK_SESSION_HANDLE, o: *mut u8, on: *mut CK_ULONG) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { finish(h, "C_EncryptFinal", o, on, |m, c| m.crypt_final(h, c, true)) }
}

pub unsafe extern "C" fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    d: *mut u8,
    n: CK_ULONG,
    o: *mut u8,
    on: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { crypt(h, "C_Decrypt", d, n, o, on, |m, d, c| m.crypt(h, d, c, false)) }
}

pub unsafe extern "C" fn C_DecryptUpdate(
    h: CK_SESSION_HANDLE,
    d: *mut u8,
    n: CK_ULONG,
    o: *mut u8,
    on: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe {
        crypt(h, "C_DecryptUpdate", d, n, o, on, |m, d, c| {
            m.crypt_update(h, d, c, false)
        })
    }
}

pub unsafe extern "C" fn C_DecryptFinal(h: CK_SESSION_HANDLE, o: *mut u8, on: *mut CK_ULONG) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { finish(h, "C_DecryptFinal", o, on, |m, c| m.crypt_final(h, c, false)) }
}

pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM) -> CK_RV {
    // SAFETY: the caller passes a readable CK_MECHANISM.
    guard(|| module::get()?.digest_init(h, &unsafe { mechanism(m) }?))
}

pub unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    d: *mut u8,
    n: CK_ULONG,
    o: *mut u8,
    on: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { crypt(h, "C_Digest", d, n, o, on, |m, d, c| m.digest(h, d, c)) }
}

pub unsafe extern "C" fn C_DigestUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG) -> CK_RV {
    // SAFETY: the caller passes n readable bytes.
    unsafe { update(h, "C_DigestUpdate", d, n, |m, d| m.digest_update(h, d)) }
}

pub unsafe extern "C" fn C_DigestFinal(h: CK_SESSION_HANDLE, o: *mut u8, on: *mut CK_ULONG) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { finish(h, "C_DigestFinal", o, on, |m, c| m.digest_final(h, c)) }
}

pub unsafe extern "C" fn C_SignInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: the caller passes a readable CK_MECHANISM.
    guard(|| module::get()?.sign_init(h, &unsafe { mechanism(m) }?, k, true))
}

pub unsafe extern "C" fn C_Sign(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { crypt(h, "C_Sign", d, n, o, on, |m, d, c| m.sign(h, d, c)) }
}

pub unsafe extern "C" fn C_SignUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG) -> CK_RV {
    // SAFETY: the caller passes n readable bytes.
    unsafe { update(h, "C_SignUpdate", d, n, |m, d| m.sign_update(h, d, true)) }
}

pub unsafe extern "C" fn C_SignFinal(h: CK_SESSION_HANDLE, o: *mut u8, on: *mut CK_ULONG) -> CK_RV {
    // SAFETY: caller buffers per the standard.
    unsafe { finish(h, "C_SignFinal", o, on, |m, c| m.sign_final(h, c)) }
}

pub unsafe extern "C" fn C_VerifyInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE) -> CK_RV {
    // SAFETY: the caller passes a readable CK_MECHANISM.
    guard(|| module::get()?.sign_init(h, &unsafe { mechanism(m) }?, k, false))
}

pub unsafe extern "C" fn C_Verify(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, s: *mut u8, sn: CK_ULONG) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        let (data, sig) = checked(&m, h, "C_Verify", || {
            // SAFETY: the caller passes n readable bytes.
            let data = unsafe { bytes(d, n) }?;
            // SAFETY: the caller passes sn readable bytes.
            let sig = unsafe { bytes(s, sn) }?;
            Ok((data, sig))
        })?;
        m.verify(h, Some(data), sig)
    })
}

pub unsafe extern "C" fn C_VerifyUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG) -> CK_RV {
    // SAFETY: the caller passes n readable bytes.
    unsafe { update(h, "C_VerifyUpdate", d, n, |m, d| m.sign_update(h, d, false)) }
}

pub unsafe extern "C" fn C_VerifyFinal(h: CK_SESSION_HANDLE, s: *mut u8, sn: CK_ULONG) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes sn readable bytes.
        let sig = checked(&m, h, "C_VerifyFinal", || unsafe { bytes(s, sn) })?;
        m.verify(h, None, sig)
    })
}

pub unsafe extern "C" fn C_GenerateRandom(h: CK_SESSION_HANDLE, out: *mut u8, n: CK_ULONG) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes n writable bytes.
        let buf = unsafe { slice_mut(out, n) }?;
        m.random(h, buf)
    })
}

pub unsafe extern "C" fn C_SeedRandom(h: CK_SESSION_HANDLE, _seed: *mut u8, _n: CK_ULONG) -> CK_RV {
    guard(|| {
        module::get()?.with_session(h, "C_SeedRandom", |_, _| Ok(()))?;
        Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
    })
}
