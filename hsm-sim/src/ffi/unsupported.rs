//! Entry points the module does not implement: they exist so that every
//! function-list slot is non-null, and answer CKR_FUNCTION_NOT_SUPPORTED
//! (or the code the standard prescribes).
use super::ptr::guard;
use crate::module;
use cryptoki_sys::*;

macro_rules! unsupported {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) => $rv:expr;)*) => {
        $(
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                $(let _ = $arg;)*
                guard(|| {
                    module::get()?;
                    Err($rv)
                })
            }
        )*
    };
}

unsupported! {
    C_GetOperationState(h: CK_SESSION_HANDLE, s: *mut u8, n: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SetOperationState(h: CK_SESSION_HANDLE, s: *mut u8, n: CK_ULONG, e: CK_OBJECT_HANDLE, a: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DigestKey(h: CK_SESSION_HANDLE, k: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SignRecoverInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SignRecover(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_VerifyRecoverInit(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_VerifyRecover(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DigestEncryptUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DecryptDigestUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_SignEncryptUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DecryptVerifyUpdate(h: CK_SESSION_HANDLE, d: *mut u8, n: CK_ULONG, o: *mut u8, on: *mut CK_ULONG) => CKR_FUNCTION_NOT_SUPPORTED;
    C_DeriveKey(h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE, t: *mut CK_ATTRIBUTE, n: CK_ULONG, o: *mut CK_OBJECT_HANDLE) => CKR_FUNCTION_NOT_SUPPORTED;
    C_GetFunctionStatus(h: CK_SESSION_HANDLE) => CKR_FUNCTION_NOT_PARALLEL;
    C_CancelFunction(h: CK_SESSION_HANDLE) => CKR_FUNCTION_NOT_PARALLEL;
}
