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

/// CloudHSM's answer when throttled: the HSM is busy, not gone. The failing session is dropped and
/// the call retried after a pause, but the other sessions are kept; dropping them all would have
/// every call in flight open (and on software tokens, copy the root key into) a new session while
/// the HSM is already overloaded.
pub fn is_throttling(e: &Error) -> bool {
    matches!(e, Error::Pkcs11(RvError::FunctionFailed, _))
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

/// C_Login refused the configured PIN: a credential failure, never retried. Every wrong login counts
/// toward locking the HSM user (CloudHSM locks a crypto user after 5, for every application using
/// it), so the session pool latches the first refusal and logs in no more (`SessionPool::login`).
pub fn is_pin_refused(e: &Error) -> bool {
    matches!(e, Error::Pkcs11(rv, Function::Login) if pin_rv_name(*rv).is_some())
}

/// The PKCS#11 name of a return code that refuses a PIN (None: not one of them).
pub fn pin_rv_name(rv: RvError) -> Option<&'static str> {
    Some(match rv {
        RvError::PinIncorrect => "CKR_PIN_INCORRECT",
        RvError::PinLocked => "CKR_PIN_LOCKED",
        RvError::PinExpired => "CKR_PIN_EXPIRED",
        RvError::PinInvalid => "CKR_PIN_INVALID",
        RvError::PinLenRange => "CKR_PIN_LEN_RANGE",
        _ => return None,
    })
}

/// The answer while the HSM refuses the configured PIN: like a missing device, nothing that needs
/// a new session can be done until an operator fixes the PIN (the message names the return code,
/// never the PIN).
pub fn pin_refused(e: &Error) -> KmsError {
    let rv = match e {
        Error::Pkcs11(rv, _) => pin_rv_name(*rv),
        _ => None,
    };
    KmsError::KeyUnavailable(format!(
        "The HSM refused the configured PIN ({}); kms will not log in with it again. An operator must \
         fix the PIN and restart kms (see the server log)",
        rv.unwrap_or("C_Login failed")
    ))
}

/// A failure that is not the device's: a bug, a misconfiguration or tampered stored material.
pub fn rejected(what: &str, e: &Error) -> KmsError {
    KmsError::Internal(format!("HSM refused to {what} ({})", short(e)))
}

/// The root key is gone from the token (or is there more than once) since the server started:
/// nothing can be wrapped or unwrapped until an operator restores it. KeyUnavailableException, as
/// for a root key that is there but unusable: the same HSM condition, for the operator to fix.
pub fn root_missing() -> KmsError {
    KmsError::KeyUnavailable(
        "The root key is no longer on the HSM token, or is there more than once (see the server log)".to_string(),
    )
}

/// The function and return code as PKCS#11 names them (`C_Decrypt: CKR_DEVICE_ERROR`); never
/// data. cryptoki's own `Display` writes the specification's prose, up to a paragraph: in a
/// message or a log line, operators look for the names.
pub fn short(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, func) => format!("C_{func:?}: {}", ckr_name(*rv)),
        other => other.to_string(),
    }
}

/// The return code alone (`CKR_DEVICE_ERROR`), for a message that names the function itself.
pub fn code_name(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, _) => ckr_name(*rv),
        other => other.to_string(),
    }
}

/// `CKR_DEVICE_ERROR` for `RvError::DeviceError`: cryptoki's variants are the PKCS#11 names in
/// camel case (all 92 of 0.12). Vendor-defined and unknown codes are written in hex.
pub fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) | RvError::UnknownErrorCode(code) => format!("CKR 0x{code:08x}"),
        named => {
            let mut name = String::from("CKR");
            for c in format!("{named:?}").chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_function_and_return_code_in_a_few_words() {
        let e = Error::Pkcs11(RvError::FunctionFailed, Function::Decrypt);
        assert_eq!(
            unavailable(&e).to_string(),
            "The HSM that holds the root key is unavailable (C_Decrypt: CKR_FUNCTION_FAILED)"
        );
        let e = Error::Pkcs11(RvError::EncryptedDataInvalid, Function::Decrypt);
        assert_eq!(
            rejected("unwrap key material", &e).to_string(),
            "HSM refused to unwrap key material (C_Decrypt: CKR_ENCRYPTED_DATA_INVALID)"
        );
        assert_eq!(ckr_name(RvError::SlotIdInvalid), "CKR_SLOT_ID_INVALID");
        assert_eq!(short(&e), "C_Decrypt: CKR_ENCRYPTED_DATA_INVALID");
        assert_eq!(code_name(&e), "CKR_ENCRYPTED_DATA_INVALID");
        assert_eq!(ckr_name(RvError::VendorDefined(0x8000_0042)), "CKR 0x80000042");
        for rv in [RvError::PinIncorrect, RvError::PinLenRange] {
            assert_eq!(Some(ckr_name(rv).as_str()), pin_rv_name(rv));
        }
    }

    #[test]
    fn a_refused_pin_is_a_credential_failure_not_a_device_one() {
        for rv in [
            RvError::PinIncorrect,
            RvError::PinLocked,
            RvError::PinExpired,
            RvError::PinInvalid,
            RvError::PinLenRange,
        ] {
            let e = Error::Pkcs11(rv, Function::Login);
            assert!(is_pin_refused(&e), "{rv:?}");
            assert!(!is_retryable(&e), "{rv:?}");
            let answer = pin_refused(&e);
            assert_eq!(answer.name(), "KeyUnavailableException");
            assert!(answer.to_string().contains(pin_rv_name(rv).unwrap()), "{answer}");
        }
        // Logged in already is success, not a refusal; and only C_Login's answer is one.
        assert!(!is_pin_refused(&Error::Pkcs11(
            RvError::UserAlreadyLoggedIn,
            Function::Login
        )));
        assert!(!is_pin_refused(&Error::Pkcs11(RvError::PinIncorrect, Function::SetPIN)));
        assert!(!is_pin_refused(&Error::Pkcs11(RvError::DeviceError, Function::Login)));
    }
}
