//! Key generation and wrapping entry points.
use super::mech::mechanism;
use super::ptr::{bytes, capacity, deliver, guard, store, template};
use crate::module;
use cryptoki_sys::*;

pub unsafe extern "C" fn C_GenerateKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let md = module::get()?;
        // SAFETY: the caller passes a readable CK_MECHANISM.
        let mech = unsafe { mechanism(m) }?;
        // SAFETY: the caller passes n readable attributes.
        let t = unsafe { template(t, n) }?;
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let k = md.generate_key(h, &mech, &t)?;
        // SAFETY: checked non-null; the caller passes a writable handle.
        unsafe { store(out, k) }
    })
}

#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    pt: *mut CK_ATTRIBUTE,
    pn: CK_ULONG,
    vt: *mut CK_ATTRIBUTE,
    vn: CK_ULONG,
    pub_out: *mut CK_OBJECT_HANDLE,
    priv_out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let md = module::get()?;
        // SAFETY: the caller passes a readable CK_MECHANISM.
        let mech = unsafe { mechanism(m) }?;
        // SAFETY: the caller passes pn readable attributes.
        let pt = unsafe { template(pt, pn) }?;
        // SAFETY: the caller passes vn readable attributes.
        let vt = unsafe { template(vt, vn) }?;
        if pub_out.is_null() || priv_out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (p, v) = md.generate_key_pair(h, &mech, &pt, &vt)?;
        // SAFETY: checked non-null; the caller passes writable handles.
        unsafe { store(pub_out, p) }?;
        // SAFETY: as above.
        unsafe { store(priv_out, v) }
    })
}

pub unsafe extern "C" fn C_WrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut u8,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let md = module::get()?;
        // SAFETY: the caller passes a readable CK_MECHANISM.
        let mech = unsafe { mechanism(m) }?;
        // SAFETY: the caller passes a readable length.
        let cap = unsafe { capacity(out, out_len) }?;
        let r = md.wrap_key(h, &mech, wrapping, key, cap)?;
        // SAFETY: the capacity was honoured.
        unsafe { deliver(out, out_len, r) }
    })
}

#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut u8,
    wrapped_len: CK_ULONG,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let md = module::get()?;
        // SAFETY: the caller passes a readable CK_MECHANISM.
        let mech = unsafe { mechanism(m) }?;
        // SAFETY: the caller passes wrapped_len readable bytes.
        let data = unsafe { bytes(wrapped, wrapped_len) }?;
        // SAFETY: the caller passes n readable attributes.
        let t = unsafe { template(t, n) }?;
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let k = md.unwrap_key(h, &mech, unwrapping, data, &t)?;
        // SAFETY: checked non-null; the caller passes a writable handle.
        unsafe { store(out, k) }
    })
}
