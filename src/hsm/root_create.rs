//! Creating the root key on a fresh token, so that exactly one root key comes of it.
//!
//! Two servers started at once on a fresh token (a cluster's first deployment) can both find no
//! root key and both create one under the same CKA_ID. Each would then seal its keys under its own
//! root key, and neither could start again afterwards: the lookup by CKA_ID is ambiguous, and which
//! key to delete depends on which server's store it protects.
//!
//! So a server looks again right after creating the key, before anything is sealed under it. If
//! another key appeared meanwhile, it destroys its own, still unused, and waits a random pause
//! before it looks again, as Ethernet does after a collision. A key another server made is adopted
//! only once it has been seen alone twice, a pause apart: its creator looks right after creating it
//! and, had it seen a collision, would have destroyed it within that pause.

use std::time::Duration;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ring::rand::{SecureRandom, SystemRandom};

use super::errors;
use super::pool::{find_root, RootLookup};
use super::RootKey;

/// Looks before giving up: with random pauses of 100-400 ms, two servers collide again only when
/// their pauses end within the few milliseconds a creation takes.
const ATTEMPTS: usize = 20;

/// The root key under `id`, created here unless another server's appears and stays alone first.
/// Call only when the token held no key under `id`.
pub fn create_sole_root(session: &Session, id: &[u8], read_only: bool) -> Result<(ObjectHandle, RootKey), String> {
    let lookup_failed = |e: Error| format!("root key lookup failed: {}", errors::short(&e));
    // A key another server created, seen alone once since the last collision.
    let mut seen_alone: Option<ObjectHandle> = None;
    for _ in 0..ATTEMPTS {
        match find_root(session, id).map_err(lookup_failed)? {
            RootLookup::None => {
                let created = create_root(session, id, read_only)
                    .map_err(|e| format!("cannot create the root key: {}", errors::short(&e)))?;
                match find_root(session, id).map_err(lookup_failed)? {
                    RootLookup::One(h) if h == created => return Ok((created, RootKey::Created)),
                    _ => {
                        tracing::warn!(
                            "another process created a root key under the same CKA_ID at the same moment: \
                             destroying the one made here, unused, and looking again"
                        );
                        destroy_unused(session, created)?;
                    }
                }
                seen_alone = None;
            }
            RootLookup::One(h) if seen_alone == Some(h) => return Ok((h, RootKey::Found)),
            RootLookup::One(h) => seen_alone = Some(h),
            // Others are still settling a collision of their own.
            RootLookup::Many(_) => seen_alone = None,
        }
        std::thread::sleep(random_pause());
    }
    Err(format!(
        "no single root key settled on the token after {ATTEMPTS} looks: other processes keep creating \
         and destroying keys under the same CKA_ID; start one server alone first"
    ))
}

/// Destroys a root key this process created and never used. Another process that saw the same
/// collision destroys only its own, so this one is still there unless the token lost it.
fn destroy_unused(session: &Session, created: ObjectHandle) -> Result<(), String> {
    match session.destroy_object(created) {
        Ok(()) | Err(Error::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(()),
        Err(e) => Err(format!(
            "cannot destroy the root key created here after another process created one too: {}; \
             the token now holds several keys under the root key's CKA_ID and one must be deleted by hand",
            errors::short(&e)
        )),
    }
}

/// 100-400 ms, so two colliding servers pause for different lengths and the next look of one falls
/// after the other's creation.
fn random_pause() -> Duration {
    let mut bytes = [0u8; 2];
    // Should the system RNG fail, a fixed pause still works; only the tie-break gets slower.
    let _ = SystemRandom::new().fill(&mut bytes);
    Duration::from_millis(100 + u64::from(u16::from_le_bytes(bytes)) % 300)
}

/// An AES-256 token key that never leaves the HSM: sensitive, not extractable, encrypt/decrypt only.
/// `read_only`: also CKA_MODIFIABLE false, so its usage can't be changed either. Not on tokens whose
/// sessions copy the root key (`root_session_copy`): SoftHSM2 refuses to copy a non-modifiable object
/// even though PKCS#11 lets a copy change CKA_TOKEN, and unwraps would lose their session copies. An
/// HSM that refuses the attribute in a template gets the key without it, with a warning.
fn create_root(session: &Session, id: &[u8], read_only: bool) -> Result<ObjectHandle, Error> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        // Token defaults (TRUE on SoftHSM2) would make it an HMAC key too.
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(b"kms-root".to_vec()),
    ];
    if !read_only {
        return session.generate_key(&Mechanism::AesKeyGen, &template);
    }
    template.push(Attribute::Modifiable(false));
    match session.generate_key(&Mechanism::AesKeyGen, &template) {
        Err(Error::Pkcs11(
            rv @ (RvError::AttributeTypeInvalid | RvError::AttributeValueInvalid | RvError::TemplateInconsistent),
            _,
        )) => {
            tracing::warn!(%rv, "the HSM refused CKA_MODIFIABLE false in the root key's template: creating it without");
            template.pop();
            session.generate_key(&Mechanism::AesKeyGen, &template)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_fall_between_100_and_400_ms_and_differ() {
        let pauses: Vec<Duration> = (0..64).map(|_| random_pause()).collect();
        assert!(pauses
            .iter()
            .all(|p| (Duration::from_millis(100)..Duration::from_millis(400)).contains(p)));
        assert!(
            pauses.iter().any(|p| *p != pauses[0]),
            "two servers must not pause alike"
        );
    }
}
