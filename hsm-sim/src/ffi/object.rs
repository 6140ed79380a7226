//! Object management entry points.
use super::ptr::{attributes, guard, load, slice_mut, store, template};
use crate::module::{self, AttrValue};
use cryptoki_sys::*;

pub unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes n readable attributes.
        let t = unsafe { template(t, n) }?;
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let o = m.create_object(h, &t)?;
        // SAFETY: checked non-null; the caller passes a writable handle.
        unsafe { store(out, o) }
    })
}

pub unsafe extern "C" fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes n readable attributes.
        let t = unsafe { template(t, n) }?;
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let o = m.copy_object(h, obj, &t)?;
        // SAFETY: checked non-null; the caller passes a writable handle.
        unsafe { store(out, o) }
    })
}

pub unsafe extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> CK_RV {
    guard(|| module::get()?.destroy_object(h, obj))
}

pub unsafe extern "C" fn C_GetObjectSize(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, out: *mut CK_ULONG) -> CK_RV {
    guard(|| {
        let n = module::get()?.object_size(h, obj)?;
        // SAFETY: the caller passes a writable CK_ULONG.
        unsafe { store(out, n as CK_ULONG) }
    })
}

/// Fills each requested attribute; errors for single attributes are
/// reported after all were processed, as the standard requires.
pub unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes n attributes.
        let types: Vec<CK_ATTRIBUTE_TYPE> = unsafe { attributes(t, n) }?.iter().map(|a| a.type_).collect();
        let values = m.get_attributes(h, obj, &types)?;
        let mut rv = CKR_OK;
        for (i, v) in values.into_iter().enumerate() {
            // SAFETY: i < n, within the caller's array.
            let slot = unsafe { t.add(i) };
            // SAFETY: slot points into the caller's attribute array.
            let a: CK_ATTRIBUTE = unsafe { load(slot) }?;
            let len = match v {
                AttrValue::Value(bytes) => {
                    if a.pValue.is_null() {
                        bytes.len() as CK_ULONG
                    } else if (a.ulValueLen as usize) < bytes.len() {
                        rv = CKR_BUFFER_TOO_SMALL;
                        CK_UNAVAILABLE_INFORMATION
                    } else {
                        // SAFETY: pValue holds ulValueLen >= bytes.len() writable bytes.
                        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a.pValue as *mut u8, bytes.len()) };
                        bytes.len() as CK_ULONG
                    }
                }
                AttrValue::Sensitive => {
                    rv = CKR_ATTRIBUTE_SENSITIVE;
                    CK_UNAVAILABLE_INFORMATION
                }
                AttrValue::Invalid => {
                    rv = CKR_ATTRIBUTE_TYPE_INVALID;
                    CK_UNAVAILABLE_INFORMATION
                }
            };
            // SAFETY: writing the ulValueLen field of the caller's attribute.
            unsafe { store(std::ptr::addr_of_mut!((*slot).ulValueLen), len) }?;
        }
        if rv == CKR_OK {
            Ok(())
        } else {
            Err(rv)
        }
    })
}

pub unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes n readable attributes.
        let t = unsafe { template(t, n) }?;
        m.set_attributes(h, obj, &t)
    })
}

pub unsafe extern "C" fn C_FindObjectsInit(h: CK_SESSION_HANDLE, t: *mut CK_ATTRIBUTE, n: CK_ULONG) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes n readable attributes.
        let t = unsafe { template(t, n) }?;
        m.find_init(h, &t)
    })
}

pub unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if count.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // Checked before any handle is taken from the search.
        // SAFETY: the caller passes max writable handles.
        let out = unsafe { slice_mut(out, max) }?;
        let found = module::get()?.find(h, out.len())?;
        out[..found.len()].copy_from_slice(&found);
        // SAFETY: checked non-null; the caller passes a writable count.
        unsafe { store(count, found.len() as CK_ULONG) }
    })
}

pub unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module::get()?.find_final(h))
}
