//! Which PKCS#11 failures are worth a retry, and what the client is told when they persist.

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};

use crate::error::KmsError;

/// Device-level failures: drop the session, back off and try again. CKR_FUNCTION_FAILED is how
/// CloudHSM answers when throttled; CKR_USER_NOT_LOGGED_IN follows a token reset.
pub fn is_retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::DeviceRemoved
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SessionCount
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::FunctionFailed
                | RvError::UserNotLoggedIn
                | RvError::CantLock,
            _
        )
    )
}

/// A key or object handle the HSM no longer knows, from an operation (not a lookup): the root key
/// was destroyed or replaced on the token since the session looked it up.
pub fn is_stale_handle(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, f) if !matches!(f, Function::FindObjects)
    )
}

/// The answer once retries are spent: the key can't be used now, and no wrong result is given.
pub fn unavailable(e: &Error) -> KmsError {
    KmsError::KeyUnavailable(format!("The HSM that holds the root key is unavailable ({})", short(e)))
}

/// The root key on the token is there but not usable as one (wrong type, length, sensitivity or
/// extractability; the server log names the attribute): like a missing device, nothing can be
/// wrapped or unwrapped until an operator fixes it.
pub fn root_unusable() -> KmsError {
    KmsError::KeyUnavailable("The root key in the HSM is not usable (wrong attributes; see the server log)".to_string())
}

/// A failure that is not the device's: a bug, a misconfiguration or tampered stored material.
pub fn rejected(what: &str, e: &Error) -> KmsError {
    KmsError::Internal(format!("HSM refused to {what} ({})", short(e)))
}

/// The return value name only; never data.
fn short(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, func) => format!("{func}: {rv}"),
        other => other.to_string(),
    }
}
