//! Per-session state: flags, the find cursor and the active operations.
use crate::ops::{CipherOp, DigestOp, MultiPart, SignOp};
use crate::Rv;
use cryptoki_sys::*;
use zeroize::Zeroizing;

pub struct Session {
    pub handle: CK_SESSION_HANDLE,
    pub slot: usize,
    pub rw: bool,
    /// Set by C_CloseSession under the session's lock: a call that found
    /// the session before it was closed must not act for it afterwards.
    pub closed: bool,
    pub find: Option<Vec<CK_OBJECT_HANDLE>>,
    pub encrypt: Option<CipherOp>,
    pub decrypt: Option<CipherOp>,
    pub sign: Option<SignOp>,
    pub verify: Option<SignOp>,
    pub digest: Option<DigestOp>,
}

impl Session {
    pub fn new(handle: CK_SESSION_HANDLE, slot: usize, rw: bool) -> Session {
        Session {
            handle,
            slot,
            rw,
            closed: false,
            find: None,
            encrypt: None,
            decrypt: None,
            sign: None,
            verify: None,
            digest: None,
        }
    }
}

/// Outcome of an output-producing call under the PKCS#11 length
/// convention (section 5.2 of the base specification).
pub enum Out {
    /// Caller passed no buffer: this many bytes suffice.
    Len(usize),
    /// Buffer too small: this many bytes are needed.
    TooSmall(usize),
    /// The output; it may be plaintext, so it is wiped once copied out.
    Data(Zeroizing<Vec<u8>>),
}

/// Checks that a single-part call (C_Encrypt, C_Sign, C_Verify, C_Digest)
/// may end the operation in `slot`: not after an Update call made it
/// multi-part (PKCS#11 2.40, 5.8: "C_Encrypt cannot be used to terminate a
/// multi-part operation"). Refused, the call ends it, as any error does.
pub fn single_part<T: MultiPart>(slot: &mut Option<T>) -> Rv<()> {
    if slot.as_ref().is_some_and(MultiPart::updated) {
        *slot = None;
        return Err(CKR_OPERATION_ACTIVE);
    }
    Ok(())
}

/// Runs the final step of an operation: a length query or too-small buffer
/// keeps the operation active; success or any error ends it.
pub fn produce<T, V: Into<Zeroizing<Vec<u8>>>>(
    slot: &mut Option<T>,
    capacity: Option<usize>,
    hint: impl FnOnce(&T) -> usize,
    run: impl FnOnce(&mut T) -> Rv<V>,
) -> Rv<Out> {
    let op = slot.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    let Some(cap) = capacity else {
        return Ok(Out::Len(hint(op)));
    };
    match run(op).map(Into::into) {
        Err(e) => {
            *slot = None;
            Err(e)
        }
        Ok(v) if v.len() > cap => Ok(Out::TooSmall(v.len())),
        Ok(v) => {
            *slot = None;
            Ok(Out::Data(v))
        }
    }
}
