//! General-purpose, slot and token entry points.
use super::ptr::{bytes, guard, list, load, padded, store};
use crate::mechanisms::{info, MECHANISMS};
use crate::module;
use cryptoki_sys::*;
use std::ffi::c_void;

pub const VERSION: CK_VERSION = CK_VERSION { major: 2, minor: 40 };
const LIB_VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };
const MANUFACTURER: &str = "hsm-sim";

pub unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    guard(|| {
        if !args.is_null() {
            // SAFETY: a non-null argument is a CK_C_INITIALIZE_ARGS per the standard.
            let a: CK_C_INITIALIZE_ARGS = unsafe { load(args as *const CK_C_INITIALIZE_ARGS) }?;
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let callbacks = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if callbacks.iter().any(|c| *c) && !callbacks.iter().all(|c| *c) {
                return Err(CKR_ARGUMENTS_BAD);
            }
            // Only OS locking is implemented; callbacks alone can't be honoured.
            if callbacks[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(CKR_CANT_LOCK);
            }
        }
        module::initialize()
    })
}

pub unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        module::finalize()
    })
}

pub unsafe extern "C" fn C_GetInfo(out: *mut CK_INFO) -> CK_RV {
    guard(|| {
        module::get()?;
        let info = CK_INFO {
            cryptokiVersion: VERSION,
            manufacturerID: padded(MANUFACTURER),
            flags: 0,
            libraryDescription: padded("hsm-sim PKCS#11 software token"),
            libraryVersion: LIB_VERSION,
        };
        // SAFETY: the caller passes a writable CK_INFO.
        unsafe { store(out, info) }
    })
}

pub unsafe extern "C" fn C_GetSlotList(present: CK_BBOOL, slots: *mut CK_SLOT_ID, count: *mut CK_ULONG) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        let mut ids = Vec::new();
        for id in 0..m.slot_count() as CK_SLOT_ID {
            if present == CK_FALSE || m.slot_present(id)? {
                ids.push(id);
            }
        }
        // SAFETY: the caller passes a count and, if non-null, that many slots.
        unsafe { list(slots, count, &ids) }
    })
}

pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, out: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        let present = m.slot_present(slot)?;
        let info = CK_SLOT_INFO {
            slotDescription: padded(&format!("hsm-sim slot {slot}")),
            manufacturerID: padded(MANUFACTURER),
            flags: CKF_REMOVABLE_DEVICE | if present { CKF_TOKEN_PRESENT } else { 0 },
            hardwareVersion: LIB_VERSION,
            firmwareVersion: LIB_VERSION,
        };
        // SAFETY: the caller passes a writable CK_SLOT_INFO.
        unsafe { store(out, info) }
    })
}

pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, out: *mut CK_TOKEN_INFO) -> CK_RV {
    guard(|| {
        let t = module::get()?.token_info(slot)?;
        let info = CK_TOKEN_INFO {
            label: padded(&t.label),
            manufacturerID: padded(MANUFACTURER),
            model: padded("hsm-sim"),
            serialNumber: padded(&t.serial),
            flags: t.flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: t.sessions as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: t.rw_sessions as CK_ULONG,
            ulMaxPinLen: t.max_pin as CK_ULONG,
            ulMinPinLen: t.min_pin as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: LIB_VERSION,
            firmwareVersion: LIB_VERSION,
            utcTime: padded(""),
        };
        // SAFETY: the caller passes a writable CK_TOKEN_INFO.
        unsafe { store(out, info) }
    })
}

pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    mechs: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        module::get()?.slot_gate(slot, "C_GetMechanismList")?;
        let all: Vec<CK_MECHANISM_TYPE> = MECHANISMS.iter().map(|m| m.0).collect();
        // SAFETY: the caller passes a count and, if non-null, that many entries.
        unsafe { list(mechs, count, &all) }
    })
}

pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    out: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        module::get()?.slot_gate(slot, "C_GetMechanismInfo")?;
        let (min, max, flags) = info(mech)?;
        let mi = CK_MECHANISM_INFO {
            ulMinKeySize: min,
            ulMaxKeySize: max,
            flags,
        };
        // SAFETY: the caller passes a writable CK_MECHANISM_INFO.
        unsafe { store(out, mi) }
    })
}

pub unsafe extern "C" fn C_InitToken(
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    guard(|| {
        let m = module::get()?;
        // SAFETY: the caller passes pin_len readable bytes.
        let pin = unsafe { bytes(pin, pin_len) }?;
        // SAFETY: the label is a 32-byte blank-padded field per the standard.
        let label = unsafe { bytes(label, 32) }?;
        let label = String::from_utf8_lossy(label).trim_end_matches([' ', '\0']).to_string();
        m.init_token(slot, pin, &label)
    })
}

pub unsafe extern "C" fn C_WaitForSlotEvent(_flags: CK_FLAGS, _slot: *mut CK_SLOT_ID, _r: *mut c_void) -> CK_RV {
    guard(|| {
        module::get()?;
        Err(CKR_FUNCTION_NOT_SUPPORTED)
    })
}
