//! HMAC-SHA-2 (ring).
use crate::Rv;
use cryptoki_sys::*;
use ring::hmac;

pub fn algorithm(m: CK_MECHANISM_TYPE) -> Option<hmac::Algorithm> {
    match m {
        CKM_SHA256_HMAC => Some(hmac::HMAC_SHA256),
        CKM_SHA384_HMAC => Some(hmac::HMAC_SHA384),
        CKM_SHA512_HMAC => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

/// HMAC keys may be generic secrets or AES keys, as on SoftHSM2.
pub fn key_type_ok(kt: CK_KEY_TYPE) -> Rv<()> {
    match kt {
        CKK_GENERIC_SECRET | CKK_SHA256_HMAC | CKK_SHA384_HMAC | CKK_SHA512_HMAC | CKK_AES => Ok(()),
        _ => Err(CKR_KEY_TYPE_INCONSISTENT),
    }
}
