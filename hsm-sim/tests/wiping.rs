//! Key material and plaintext live in buffers that are wiped when dropped.
//! Wiping cannot be observed from outside, so this checks the types: each
//! line stops compiling if a buffer becomes a plain Vec again, or if the
//! AES crates lose their `zeroize` feature.
use cryptoki_sys::*;
use hsm_sim::attrs::{Attrs, Template};
use hsm_sim::mechanisms::aes::AesKey;
use hsm_sim::mechanisms::{ec, rsa};
use hsm_sim::session::Out;
use zeroize::ZeroizeOnDrop;

fn wiped<T: ZeroizeOnDrop>(_: &T) {}

fn wiped_type<T: ZeroizeOnDrop>() {}

/// `Out::Data` carries decrypted data to the caller's buffer.
fn out_data_is_wiped(o: &Out) {
    if let Out::Data(v) = o {
        wiped(v);
    }
}

#[test]
fn attribute_values_and_templates_are_wiped() {
    let mut a = Attrs::default();
    a.set(CKA_VALUE, vec![7u8; 32]);
    wiped(&a.0[&CKA_VALUE]);
    let t: Template = vec![(CKA_VALUE, vec![7u8; 32].into())];
    wiped(&t[0].1);
    let (_, private) = ec::generate(ec::Curve::P256);
    let (_, d) = private.iter().find(|(t, _)| *t == CKA_VALUE).unwrap();
    wiped(d);
    let (_, private) = rsa::generate(2048, None).unwrap();
    let (_, d) = private.iter().find(|(t, _)| *t == CKA_PRIVATE_EXPONENT).unwrap();
    wiped(d);
}

#[test]
fn cipher_outputs_and_key_schedules_are_wiped() {
    let k = AesKey::new(&[1; 32]).unwrap();
    let ct = k.gcm_seal(&[0; 12], b"", b"plaintext").unwrap();
    wiped(&ct);
    let pt = k.gcm_open(&[0; 12], b"", &ct).unwrap();
    wiped(&pt);
    assert_eq!(&pt[..], b"plaintext");
    out_data_is_wiped(&Out::Data(pt));
    // AES-GCM (every key size) and AES key wrap run on the aes crate's key schedules.
    wiped_type::<aes_gcm::aes::Aes128>();
    wiped_type::<aes_gcm::aes::Aes192>();
    wiped_type::<aes_gcm::aes::Aes256>();
}
