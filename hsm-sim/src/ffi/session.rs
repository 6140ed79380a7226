//! Session and login entry points.
use super::ptr::{bytes, guard, store};
use crate::module;
use cryptoki_sys::*;
use std::ffi::c_void;

pub unsafe extern "C" fn C_InitPIN(h: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, len: CK_ULONG) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes len readable bytes.
        let pin = unsafe { bytes(pin, len) }?;
        m.init_pin(h, pin)
    })
}

pub unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes old_len readable bytes.
        let old = unsafe { bytes(old, old_len) }?;
        // SAFETY: the caller passes new_len readable bytes.
        let new = unsafe { bytes(new, new_len) }?;
        m.set_pin(h, old, new)
    })
}

pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    out: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        if out.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let h = module::get()?.open_session(slot, flags)?;
        // SAFETY: the caller passes a writable handle.
        unsafe { store(out, h) }
    })
}

pub unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module::get()?.close_session(h))
}

pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| module::get()?.close_all(slot))
}

pub unsafe extern "C" fn C_GetSessionInfo(h: CK_SESSION_HANDLE, out: *mut CK_SESSION_INFO) -> CK_RV {
    guard(|| {
        let i = module::get()?.session_info(h)?;
        let info = CK_SESSION_INFO {
            slotID: i.slot,
            state: i.state,
            flags: i.flags,
            ulDeviceError: 0,
        };
        // SAFETY: the caller passes a writable CK_SESSION_INFO.
        unsafe { store(out, info) }
    })
}

pub unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // NULL is for a protected authentication path (a PIN pad), which no slot here has.
        if pin.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: the caller passes len readable bytes.
        let pin = unsafe { bytes(pin, len) }?;
        m.login(h, user, pin)
    })
}

pub unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module::get()?.logout(h))
}
