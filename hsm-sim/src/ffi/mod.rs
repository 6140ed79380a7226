//! The PKCS#11 C boundary. Only `C_GetFunctionList`, `C_GetInterfaceList`
//! and `C_GetInterface` are exported; everything else is reached through
//! the function list. All `unsafe` in the crate lives under this module.
#![allow(non_snake_case)]

mod crypto;
mod general;
mod keys;
mod mech;
mod object;
mod ptr;
mod session;
mod unsupported;

use crypto::*;
use cryptoki_sys::*;
use general::*;
use keys::*;
use object::*;
use ptr::{guard, list, load, store};
use session::*;
use std::ffi::c_void;
use unsupported::*;

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: VERSION,
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};

const INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// The single interface: "PKCS 11" with the v2.40 function list.
struct Interface(CK_INTERFACE);

// SAFETY: the pointers inside refer to immutable statics (the name and the
// function list), so sharing them between threads is sound.
unsafe impl Sync for Interface {}

static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut c_void,
    flags: 0,
});

/// Returns the function list.
///
/// # Safety
/// `out` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(out: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes a writable pointer slot; callers never
        // write through the returned pointer.
        unsafe { store(out, &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST) }
    })
}

/// PKCS#11 3.0 discovery: lists the one interface.
///
/// # Safety
/// `count` must be readable/writable; `list_out` null or holding `*count`
/// entries.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(list_out: *mut CK_INTERFACE, count: *mut CK_ULONG) -> CK_RV {
    // SAFETY: forwarded caller guarantees.
    guard(|| unsafe { list(list_out, count, &[INTERFACE.0]) })
}

/// PKCS#11 3.0 discovery: returns the "PKCS 11" interface (v2.40 list).
///
/// # Safety
/// `name` null or a NUL-terminated string; `version` null or readable;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    out: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard(|| {
        if !name.is_null() {
            // SAFETY: the caller passes a NUL-terminated name.
            let n = unsafe { std::ffi::CStr::from_ptr(name as *const std::ffi::c_char) };
            if n.to_bytes_with_nul() != INTERFACE_NAME {
                return Err(CKR_ARGUMENTS_BAD);
            }
        }
        if !version.is_null() {
            // SAFETY: non-null, readable per the caller.
            let v = unsafe { load(version) }?;
            if (v.major, v.minor) != (VERSION.major, VERSION.minor) {
                return Err(CKR_ARGUMENTS_BAD);
            }
        }
        if flags & !INTERFACE.0.flags != 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: `out` is writable per the caller; the interface is static.
        unsafe { store(out, &INTERFACE.0 as *const CK_INTERFACE as *mut CK_INTERFACE) }
    })
}
