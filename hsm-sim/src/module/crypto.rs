//! Cryptographic operation calls: encrypt, decrypt, sign, verify, digest,
//! random.
use super::Module;
use crate::mechanisms::Mechanism;
use crate::object::Object;
use crate::ops::{CipherOp, DigestOp, SignOp};
use crate::pin::random_bytes;
use crate::session::{produce, single_part, Out};
use crate::token::Token;
use crate::Rv;
use cryptoki_sys::*;
use std::sync::Arc;

fn key(t: &Token, h: CK_OBJECT_HANDLE) -> Rv<Arc<Object>> {
    t.read().get(h).map_err(|_| CKR_KEY_HANDLE_INVALID)
}

/// Multi-part update of a buffering cipher: a length query (no buffer)
/// consumes nothing; otherwise the data is taken and nothing is output.
fn cipher_update(op: &mut Option<CipherOp>, data: &[u8], capacity: Option<usize>) -> Rv<Out> {
    let o = op.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    if capacity.is_some() {
        if let Err(rv) = o.update(data) {
            *op = None; // an error ends the operation
            return Err(rv);
        }
        Ok(Out::Data(Default::default()))
    } else {
        Ok(Out::Len(0))
    }
}

impl Module {
    pub fn encrypt_init(&self, h: CK_SESSION_HANDLE, m: &Mechanism, k: CK_OBJECT_HANDLE, enc: bool) -> Rv<()> {
        let func = if enc { "C_EncryptInit" } else { "C_DecryptInit" };
        self.with_session(h, func, |t, s| {
            let slot = if enc { &mut s.encrypt } else { &mut s.decrypt };
            if slot.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            *slot = Some(CipherOp::init(m, &*key(t, k)?, enc)?);
            Ok(())
        })
    }

    pub fn crypt(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>, enc: bool) -> Rv<Out> {
        let func = if enc { "C_Encrypt" } else { "C_Decrypt" };
        let mut out = self.with_session(h, func, |_, s| {
            let slot = if enc { &mut s.encrypt } else { &mut s.decrypt };
            single_part(slot)?;
            produce(slot, cap, |op| op.hint(data.len()), |op| op.compute(data))
        })?;
        if let Out::Data(bytes) = &mut out {
            if let Some(first) = bytes.first_mut() {
                if self.faults.corrupts(func, || self.session_slot(h)) {
                    *first ^= 1;
                }
            }
        }
        Ok(out)
    }

    pub fn crypt_update(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>, enc: bool) -> Rv<Out> {
        let func = if enc { "C_EncryptUpdate" } else { "C_DecryptUpdate" };
        self.with_session(h, func, |_, s| {
            let slot = if enc { &mut s.encrypt } else { &mut s.decrypt };
            cipher_update(slot, data, cap)
        })
    }

    pub fn crypt_final(&self, h: CK_SESSION_HANDLE, cap: Option<usize>, enc: bool) -> Rv<Out> {
        let func = if enc { "C_EncryptFinal" } else { "C_DecryptFinal" };
        self.with_session(h, func, |_, s| {
            let slot = if enc { &mut s.encrypt } else { &mut s.decrypt };
            produce(slot, cap, |op| op.hint(0), |op| op.compute(&[]))
        })
    }

    pub fn sign_init(&self, h: CK_SESSION_HANDLE, m: &Mechanism, k: CK_OBJECT_HANDLE, sign: bool) -> Rv<()> {
        let func = if sign { "C_SignInit" } else { "C_VerifyInit" };
        self.with_session(h, func, |t, s| {
            let slot = if sign { &mut s.sign } else { &mut s.verify };
            if slot.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            *slot = Some(SignOp::init(m, &*key(t, k)?, sign)?);
            Ok(())
        })
    }

    pub fn sign(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Rv<Out> {
        self.with_session(h, "C_Sign", |_, s| {
            single_part(&mut s.sign)?;
            produce(&mut s.sign, cap, |op| op.len(), |op| op.sign(data))
        })
    }

    pub fn sign_update(&self, h: CK_SESSION_HANDLE, data: &[u8], sign: bool) -> Rv<()> {
        let func = if sign { "C_SignUpdate" } else { "C_VerifyUpdate" };
        self.with_session(h, func, |_, s| {
            let slot = if sign { &mut s.sign } else { &mut s.verify };
            let updated = slot.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?.update(data);
            if updated.is_err() {
                *slot = None; // an error ends the operation
            }
            updated
        })
    }

    pub fn sign_final(&self, h: CK_SESSION_HANDLE, cap: Option<usize>) -> Rv<Out> {
        self.with_session(h, "C_SignFinal", |_, s| {
            produce(&mut s.sign, cap, |op| op.len(), |op| op.sign(&[]))
        })
    }

    /// C_Verify (with data) or C_VerifyFinal (data = None); always ends the
    /// operation.
    pub fn verify(&self, h: CK_SESSION_HANDLE, data: Option<&[u8]>, sig: &[u8]) -> Rv<()> {
        let func = if data.is_some() { "C_Verify" } else { "C_VerifyFinal" };
        self.with_session(h, func, |_, s| {
            if data.is_some() {
                single_part(&mut s.verify)?;
            }
            let op = s.verify.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            op.verify(data.unwrap_or_default(), sig)
        })
    }

    pub fn digest_init(&self, h: CK_SESSION_HANDLE, m: &Mechanism) -> Rv<()> {
        self.with_session(h, "C_DigestInit", |_, s| {
            if s.digest.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            s.digest = Some(DigestOp::init(m)?);
            Ok(())
        })
    }

    pub fn digest(&self, h: CK_SESSION_HANDLE, data: &[u8], cap: Option<usize>) -> Rv<Out> {
        self.with_session(h, "C_Digest", |_, s| {
            single_part(&mut s.digest)?;
            produce(&mut s.digest, cap, |op| op.len(), |op| Ok(op.compute(data)))
        })
    }

    pub fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Rv<()> {
        self.with_session(h, "C_DigestUpdate", |_, s| {
            s.digest.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?.update(data);
            Ok(())
        })
    }

    pub fn digest_final(&self, h: CK_SESSION_HANDLE, cap: Option<usize>) -> Rv<Out> {
        self.with_session(h, "C_DigestFinal", |_, s| {
            produce(&mut s.digest, cap, |op| op.len(), |op| Ok(op.compute(&[])))
        })
    }

    pub fn random(&self, h: CK_SESSION_HANDLE, out: &mut [u8]) -> Rv<()> {
        self.with_session(h, "C_GenerateRandom", |_, _| random_bytes(out))
    }
}
