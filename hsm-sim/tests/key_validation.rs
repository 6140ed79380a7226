//! Bad RSA key parameters get a CKR_* error promptly: no hang in key
//! generation, no panic when parsing a private key.
mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use std::sync::mpsc;
use std::time::Duration;

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Runs `f` on another thread; a call that is still running after
/// `limit` fails the test instead of hanging it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the call did not return in time")
}

#[test]
fn rsa_generation_refuses_unusable_exponents() {
    let s = init_token(0, "rsa-exp");
    // Even, zero, empty, one and too large (2^33 + 1) exponents.
    let bad: [&[u8]; 6] = [&[2], &[0], &[], &[1], &[1, 0, 0], &[2, 0, 0, 0, 1]];
    for e in bad {
        let sess = user_session(s);
        let r = within(Duration::from_secs(20), move || {
            sess.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::ModulusBits(2048.into()),
                    Attribute::PublicExponent(e.to_vec()),
                ],
                &[],
            )
        });
        assert_eq!(rv(r), RvError::AttributeValueInvalid, "exponent {e:?}");
    }
}
