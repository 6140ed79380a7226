//! Bad RSA key parameters get a CKR_* error promptly: no hang in key
//! generation, no panic when parsing a private key.
mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
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

/// Private RSA keys whose modulus or private exponent is zero, one or
/// longer than 4096 bits (no primes given, so the rsa crate would have to
/// recover them).
#[test]
fn malformed_rsa_private_keys_are_refused() {
    let s = init_token(1, "rsa-create");
    let big = |bytes: usize| {
        let mut v = vec![0xff; bytes];
        v[bytes - 1] = 0xfd;
        v
    };
    let cases: [(Vec<u8>, Vec<u8>); 6] = [
        (vec![], vec![]),
        (vec![0], vec![0]),
        (vec![1], vec![1]),
        (big(256), vec![]),
        (big(513), big(513)),
        (big(1 << 14), big(1 << 14)),
    ];
    for (n, d) in cases {
        let what = format!("modulus of {} bytes, private exponent of {} bytes", n.len(), d.len());
        let sess = user_session(s);
        let r = within(Duration::from_secs(20), move || {
            sess.create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(n),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::PrivateExponent(d),
            ])
        });
        assert_eq!(rv(r), RvError::AttributeValueInvalid, "{what}");
    }
}
