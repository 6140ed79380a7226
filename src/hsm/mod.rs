//! The HSM boundary: the root key lives in a PKCS#11 token and wraps every key material.
//! All calls block, so they run on dedicated HSM worker threads (`workers.rs`), at most
//! `max_sessions` at once and within a timeout, with bounded retries for device errors.

pub mod embedded;
mod errors;
mod module;
mod pool;
mod quirks;
pub use quirks::VENDORS;
mod root;
mod root_attrs;
mod root_create;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::types::AuthPin;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::{hex_decode, HsmConfig};
use crate::error::{KmsError, Result};
use pool::{find_root, PooledSession, RootLookup, SessionPool};
pub use quirks::Quirks;
use workers::{JobError, Workers};

const GCM_IV_LEN: usize = 12;
const GCM_TAG_BITS: u64 = 128;

pub struct Hsm {
    pool: SessionPool,
    quirks: Quirks,
    workers: Workers,
    attempts: u32,
    rng: ring::rand::SystemRandom,
}

/// What `Hsm::open` found about the root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKey {
    Found,
    Created,
}

impl Hsm {
    /// Loads the module, finds the token by label, logs in and finds the root key by CKA_ID.
    /// Creates the root key only when `may_create` (the store holds no keys yet) and the config
    /// allows it. Errors are startup errors, for the operator.
    pub fn open(cfg: &HsmConfig, pin: AuthPin, may_create: bool) -> Result<(Hsm, RootKey), String> {
        let path = cfg.module.as_ref().ok_or("hsm.module is not set")?;
        let module = module::load(path)?;
        let quirks = Quirks::select(&cfg.vendor, &module)?;
        let slot = find_slot(&module, &cfg.token_label)?;
        let root_id = hex_decode(&cfg.root_key_id).ok_or("hsm.root_key_id is not hex")?;
        let root_check = (quirks.root_session_copy && cfg.root_check_seconds > 0)
            .then(|| Duration::from_secs(cfg.root_check_seconds));
        let pool = SessionPool::new(module, slot, pin, root_id.clone(), root_check, cfg.max_sessions);
        let session = pool.open_first().map_err(|e| match e {
            cryptoki::error::Error::Pkcs11(rv, _) if errors::is_pin_refused(&e) => format!(
                "token {:?} refused the configured PIN (C_Login returned {}): check hsm.pin_file or hsm.pin_env",
                cfg.token_label,
                errors::pin_rv_name(rv).unwrap_or("a PIN error")
            ),
            e => format!("cannot log in to token {:?}: {}", cfg.token_label, errors::short(&e)),
        })?;
        let (handle, root) = match find_root(&session, &root_id)
            .map_err(|e| format!("root key lookup failed: {}", errors::short(&e)))?
        {
            RootLookup::One(h) => (h, RootKey::Found),
            RootLookup::Many(n) => {
                return Err(format!(
                    "{n} secret keys on token {:?} have CKA_ID {}: the root key is ambiguous, refusing to start",
                    cfg.token_label, cfg.root_key_id
                ))
            }
            RootLookup::None if may_create && cfg.create_root_key.unwrap_or(quirks.software_token()) => {
                root_create::create_sole_root(&session, &root_id, !quirks.root_session_copy)?
            }
            RootLookup::None => {
                return Err(format!(
                    "no root key with CKA_ID {} on token {:?}, and it may not be created here{}",
                    cfg.root_key_id,
                    cfg.token_label,
                    if may_create && cfg.create_root_key.is_none() {
                        " (a hardware HSM's root key is created only with hsm.create_root_key = true)"
                    } else if may_create {
                        " (hsm.create_root_key = false)"
                    } else {
                        ": the store already holds keys wrapped under a root key"
                    }
                ))
            }
        };
        // Found or created (an HSM may ignore parts of a template), the key is used only if it is
        // what a root key must be.
        if let Err(defects) = root_attrs::check(&session, handle)
            .map_err(|e| format!("cannot read the root key's attributes: {}", errors::short(&e)))?
        {
            return Err(format!(
                "the root key with CKA_ID {} on token {:?} is not usable: {defects}. It must be {}; \
                 refusing to start",
                cfg.root_key_id,
                cfg.token_label,
                root_attrs::REQUIRED
            ));
        }
        // Usable, but perhaps not custodied by the HSM alone: the operator should know.
        match root_attrs::history(&session, handle) {
            Ok(notes) => {
                for note in notes {
                    tracing::warn!(
                        "the root key with CKA_ID {} on token {:?} may have been outside the HSM: {note}. \
                         Custody rests also on whoever held its value; a key generated in the HSM \
                         (sensitive, never extractable) does not have this caveat",
                        cfg.root_key_id,
                        cfg.token_label
                    );
                }
            }
            Err(e) => tracing::warn!(error = %errors::short(&e), "cannot read the root key's history attributes"),
        }
        match root_attrs::extra_uses(&session, handle) {
            Ok(notes) => {
                for note in notes {
                    tracing::warn!(
                        "the root key with CKA_ID {} on token {:?} is usable for more than kms needs: {note}. \
                         kms only encrypts and decrypts with it; set the attribute FALSE on the token",
                        cfg.root_key_id,
                        cfg.token_label
                    );
                }
            }
            Err(e) => tracing::warn!(error = %errors::short(&e), "cannot read the root key's usage attributes"),
        }
        drop(session);
        let hsm = Hsm {
            pool,
            quirks,
            workers: Workers::new(cfg.max_sessions, Duration::from_millis(cfg.timeout_ms))?,
            attempts: cfg.retry_attempts,
            rng: ring::rand::SystemRandom::new(),
        };
        Ok((hsm, root))
    }

    /// HSM calls under way whose callers still wait for them.
    pub fn calls_under_way(&self) -> usize {
        self.workers.calls_waited_for()
    }

    pub fn quirks(&self) -> Quirks {
        self.quirks
    }

    /// Runs a blocking HSM call on an HSM worker thread, at most `max_sessions` at once, within the
    /// timeout (which counts the wait for a worker too).
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Hsm) -> Result<T> + Send + 'static,
    {
        let hsm = self.clone();
        match self.workers.run(move || f(&hsm)).await {
            Ok(result) => result,
            Err(JobError::Panicked) => Err(KmsError::internal("an HSM call panicked")),
            Err(JobError::TimedOut) => Err(KmsError::DependencyTimeout(format!(
                "The HSM did not answer within {} ms",
                self.workers.timeout().as_millis()
            ))),
        }
    }

    /// Random bytes from the HSM's RNG.
    pub fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        self.with_session("generate random bytes", |s| {
            let mut out = Zeroizing::new(vec![0u8; len]);
            s.session.generate_random_slice(&mut out)?;
            Ok(out)
        })
    }

    /// Encrypts `plaintext` under the root key with AES-256-GCM inside the HSM.
    /// Returns iv (12) || ciphertext || tag (16).
    pub fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let out = self.with_session("wrap key material", |s| {
            let mut iv = [0u8; GCM_IV_LEN];
            if !self.quirks.gcm_iv_from_hsm {
                ring::rand::SecureRandom::fill(&self.rng, &mut iv).map_err(|_| {
                    cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::RandomNoRng,
                        cryptoki::context::Function::GenerateRandom,
                    )
                })?;
            }
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?;
            let sealed = s.session.encrypt(&Mechanism::AesGcm(params), s.root, plaintext)?;
            let mut out = Vec::with_capacity(GCM_IV_LEN + sealed.len());
            out.extend_from_slice(&iv);
            out.extend_from_slice(&sealed);
            Ok(out)
        })?;
        if self.quirks.gcm_iv_from_hsm {
            hsm_generated_iv(&out[..GCM_IV_LEN])?;
        }
        Ok(out)
    }

    /// `wrap`, then the result unwrapped and compared with `plaintext`. New material is stored
    /// only once it is known to come back through the path every later use takes (the unwrap
    /// key, on software tokens the session's copy of the root key): a device that returned wrong
    /// data, or an unwrap key that is not the wrapping key, would otherwise leave a key whose
    /// data is lost as soon as the cache lets go of its material.
    pub fn wrap_verified(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let wrapped = self.wrap(plaintext, aad)?;
        let back = self.unwrap(&wrapped, aad)?;
        if bool::from(back.as_slice().ct_eq(plaintext)) {
            Ok(wrapped)
        } else {
            Err(KmsError::internal(
                "the HSM's wrapped key material unwraps to different material; nothing was stored",
            ))
        }
    }

    /// Reverses `wrap`. A failed integrity check means the stored material or the root key is not
    /// what it should be: an internal error, never a guess.
    pub fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if wrapped.len() < GCM_IV_LEN + 16 {
            return Err(KmsError::internal("wrapped key material is truncated"));
        }
        let (iv, sealed) = wrapped.split_at(GCM_IV_LEN);
        self.with_session("unwrap key material", |s| {
            let mut iv: [u8; GCM_IV_LEN] = iv.try_into().expect("split at GCM_IV_LEN");
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?;
            Ok(Zeroizing::new(s.session.decrypt(
                &Mechanism::AesGcm(params),
                s.unwrap_key(),
                sealed,
            )?))
        })
    }

    /// Runs `f` on a pooled session; device errors drop the session and retry with backoff.
    fn with_session<T>(
        &self,
        what: &str,
        f: impl Fn(&PooledSession) -> std::result::Result<T, cryptoki::error::Error>,
    ) -> Result<T> {
        let mut delay = Duration::from_millis(20);
        let mut attempt = 1;
        let mut looked_up_again = false;
        // No retry starts once the caller has stopped waiting: the workers' timeout after it
        // submitted the call (time in the queue counts), or from now outside a worker job.
        let deadline = workers::deadline().unwrap_or_else(|| std::time::Instant::now() + self.workers.timeout());
        loop {
            let outcome = self.pool.take().and_then(|s| f(&s).map(|v| (v, s)));
            match outcome {
                Ok((v, s)) => {
                    self.pool.put(s);
                    return Ok(v);
                }
                Err(e) if pool::is_unusable(&e) => return Err(errors::root_unusable()),
                Err(e) if pool::is_missing(&e) => return Err(errors::root_missing()),
                // The HSM refused the PIN (logged once by the pool, which won't try it again):
                // retrying can't help, and every attempt would count toward locking the HSM user.
                Err(e) if errors::is_pin_refused(&e) => return Err(errors::pin_refused(&e)),
                // The root key's handle went stale: the key was destroyed or replaced on the token.
                // Every pooled session holds that handle, so all are dropped, and a new session
                // looks the key up again (once: a key that is really gone is then refused).
                Err(e) if errors::is_stale_handle(&e) && !looked_up_again => {
                    tracing::warn!(error = %errors::short(&e), "the root key's handle is no longer valid: looking the key up again");
                    self.pool.clear();
                    looked_up_again = true;
                }
                Err(e) if errors::is_retryable(&e) => {
                    // The failing session was not put back (it closes as it drops); a device-wide
                    // failure drops the other sessions too.
                    if !errors::is_throttling(&e) {
                        self.pool.clear();
                    }
                    if attempt >= self.attempts || std::time::Instant::now() + delay >= deadline {
                        tracing::error!(error = %errors::short(&e), attempts = attempt, "HSM unavailable: {what}");
                        return Err(errors::unavailable(&e));
                    }
                    tracing::warn!(error = %errors::short(&e), attempt, "HSM device error, retrying: {what}");
                    std::thread::sleep(delay);
                    delay = (delay * 4).min(MAX_RETRY_DELAY);
                    attempt += 1;
                }
                Err(e) => return Err(errors::rejected(what, &e)),
            }
        }
    }
}

/// The longest pause between two attempts of an HSM call after a device error.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// With `gcm_iv_from_hsm`, the IV buffer goes to the HSM as zeros and the HSM writes the IV it
/// chose into it. Still all zeros, the HSM used the caller's IV instead (a module that is not what
/// `hsm.vendor` says): every material would be sealed under the same IV, which breaks AES-GCM, so
/// the result is never stored. A random IV is all zeros with probability 2^-96.
fn hsm_generated_iv(iv: &[u8]) -> Result<()> {
    if iv.iter().any(|b| *b != 0) {
        return Ok(());
    }
    tracing::error!(
        "the HSM did not generate an AES-GCM IV although its quirks say it does (check hsm.vendor): \
         refusing to store key material sealed under a zero IV"
    );
    Err(KmsError::internal(
        "The HSM did not generate an AES-GCM IV; the key material was not sealed",
    ))
}

fn find_slot(module: &cryptoki::context::Pkcs11, label: &str) -> Result<cryptoki::slot::Slot, String> {
    let slots = module
        .get_slots_with_initialized_token()
        .map_err(|e| format!("C_GetSlotList failed: {}", errors::code_name(&e)))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = module
            .get_token_info(slot)
            .map_err(|e| format!("C_GetTokenInfo failed: {}", errors::code_name(&e)))?;
        if info.label().trim_end() == label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no initialized token labelled {label:?} in the PKCS#11 module")),
        _ => Err(format!(
            "{} tokens are labelled {label:?}: refusing to guess",
            found.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iv_the_hsm_did_not_write_is_refused() {
        let err = hsm_generated_iv(&[0u8; GCM_IV_LEN]).unwrap_err();
        assert_eq!(err.name(), "KMSInternalException");
        for i in 0..GCM_IV_LEN {
            let mut iv = [0u8; GCM_IV_LEN];
            iv[i] = 1;
            hsm_generated_iv(&iv).expect("any nonzero byte: an IV the HSM wrote");
        }
    }
}
