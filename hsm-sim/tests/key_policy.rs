//! Key policy attributes are enforced or refused, never stored and ignored:
//! CKA_ALLOWED_MECHANISMS limits every Init, CKA_WRAP_TEMPLATE and
//! CKA_UNWRAP_TEMPLATE are refused, CKA_ALWAYS_AUTHENTICATE only as false.
mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

#[test]
fn allowed_mechanisms_limit_every_init() {
    let sess = user_session(init_token(0, "allowed-mechs"));
    let key = |allowed: Vec<MechanismType>| {
        sess.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::AllowedMechanisms(allowed),
                Attribute::Extractable(true),
            ],
        )
        .unwrap()
    };
    let gcm_only = key(vec![MechanismType::AES_GCM]);
    let anything = key(vec![]);
    let target = key(vec![]);
    assert_eq!(
        sess.get_attributes(gcm_only, &[AttributeType::AllowedMechanisms])
            .unwrap(),
        vec![Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM])]
    );
    let mut iv = [0u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    let ct = sess.encrypt(&gcm, gcm_only, b"allowed").unwrap();
    assert_eq!(sess.decrypt(&gcm, gcm_only, &ct).unwrap(), b"allowed");
    let hmac = Mechanism::Sha256Hmac;
    assert_eq!(rv(sess.sign(&hmac, gcm_only, b"x")), RvError::MechanismInvalid);
    assert_eq!(
        rv(sess.verify(&hmac, gcm_only, b"x", &[0; 32])),
        RvError::MechanismInvalid
    );
    assert_eq!(
        rv(sess.wrap_key(&Mechanism::AesKeyWrapPad, gcm_only, target)),
        RvError::MechanismInvalid
    );
    let wrapped = sess.wrap_key(&Mechanism::AesKeyWrapPad, anything, target).unwrap();
    let unwrap_template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
    ];
    assert_eq!(
        rv(sess.unwrap_key(&Mechanism::AesKeyWrapPad, gcm_only, &wrapped, &unwrap_template)),
        RvError::MechanismInvalid
    );
    // An empty list allows every mechanism.
    sess.sign(&hmac, anything, b"x").unwrap();
    sess.unwrap_key(&Mechanism::AesKeyWrapPad, anything, &wrapped, &unwrap_template)
        .unwrap();
}

#[test]
fn always_authenticate_is_refused_as_true() {
    let sess = user_session(init_token(1, "always-auth"));
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let pair = |always: bool| {
        sess.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(p256.clone())],
            &[Attribute::AlwaysAuthenticate(always)],
        )
    };
    assert_eq!(rv(pair(true)), RvError::AttributeValueInvalid);
    pair(false).unwrap();
}

/// The template attributes hold CK_ATTRIBUTE arrays, i.e. the caller's
/// pointers; cryptoki has no variant for them, so the raw ABI is used.
#[test]
fn wrap_and_unwrap_templates_are_refused() {
    use cryptoki_sys::*;
    let f = functions();
    let sess = user_session(init_token(2, "templates"));
    let h = sess.handle();
    let mut class = CKO_SECRET_KEY;
    let mut key_type = CKK_AES;
    let mut value = [0x11u8; 32];
    let mut label = *b"inner";
    let mut inner = [CK_ATTRIBUTE {
        type_: CKA_LABEL,
        pValue: label.as_mut_ptr() as *mut _,
        ulValueLen: label.len() as CK_ULONG,
    }];
    for t in [CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE] {
        let attr = |type_, p: *mut u8, len: usize| CK_ATTRIBUTE {
            type_,
            pValue: p as *mut _,
            ulValueLen: len as CK_ULONG,
        };
        let mut template = [
            attr(
                CKA_CLASS,
                &mut class as *mut _ as *mut u8,
                std::mem::size_of::<CK_ULONG>(),
            ),
            attr(
                CKA_KEY_TYPE,
                &mut key_type as *mut _ as *mut u8,
                std::mem::size_of::<CK_ULONG>(),
            ),
            attr(CKA_VALUE, value.as_mut_ptr(), value.len()),
            attr(t, inner.as_mut_ptr() as *mut u8, std::mem::size_of_val(&inner)),
        ];
        let mut out: CK_OBJECT_HANDLE = 0;
        // SAFETY: the template points to live locals of the stated sizes.
        let r = unsafe { f.C_CreateObject.unwrap()(h, template.as_mut_ptr(), 4, &mut out) };
        assert_eq!(r, CKR_ATTRIBUTE_TYPE_INVALID, "attribute {t:#x}");
    }
}

/// A copy may tighten a key's protections but never loosen them, and a copy
/// of a non-modifiable key keeps its usage. kms copies its root key (this
/// template, CKA_MODIFIABLE false) into sessions with CKA_TOKEN false only.
#[test]
fn copies_keep_protections() {
    let sess = user_session(init_token(3, "copy-protections"));
    let root = sess
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Modifiable(false),
                Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM]),
            ],
        )
        .unwrap();
    // The kms copy works and is the same key.
    let copy = sess.copy_object(root, &[Attribute::Token(false)]).unwrap();
    let mut iv = [0u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap());
    let ct = sess.encrypt(&gcm, root, b"root").unwrap();
    assert_eq!(sess.decrypt(&gcm, copy, &ct).unwrap(), b"root");
    // Unchanged values and tightening are fine.
    sess.copy_object(
        root,
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Encrypt(true),
        ],
    )
    .unwrap();
    sess.copy_object(root, &[Attribute::Destroyable(false), Attribute::Copyable(false)])
        .unwrap();
    let loosen: Vec<(&str, Attribute)> = vec![
        ("private", Attribute::Private(false)),
        ("modifiable", Attribute::Modifiable(true)),
        ("usage on a non-modifiable key", Attribute::Sign(true)),
        ("usage on a non-modifiable key", Attribute::Encrypt(false)),
        ("label on a non-modifiable key", Attribute::Label(b"x".to_vec())),
        ("allowed mechanisms", Attribute::AllowedMechanisms(vec![])),
    ];
    for (what, a) in loosen {
        let r = sess.copy_object(root, &[Attribute::Token(false), a]);
        assert_eq!(rv(r), RvError::AttributeReadOnly, "{what}");
    }
    // A modifiable key: usage may change on copy, CKA_DESTROYABLE only to false,
    // CKA_ALLOWED_MECHANISMS never (not by C_SetAttributeValue either).
    let key = sess
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(16.into()), Attribute::Destroyable(false)],
        )
        .unwrap();
    let signer = sess.copy_object(key, &[Attribute::Sign(false)]).unwrap();
    assert_eq!(
        sess.get_attributes(signer, &[AttributeType::Sign]).unwrap(),
        vec![Attribute::Sign(false)]
    );
    assert_eq!(
        rv(sess.copy_object(key, &[Attribute::Destroyable(true)])),
        RvError::AttributeReadOnly
    );
    let gcm_only = vec![MechanismType::AES_GCM];
    assert_eq!(
        rv(sess.copy_object(key, &[Attribute::AllowedMechanisms(gcm_only.clone())])),
        RvError::AttributeReadOnly
    );
    assert_eq!(
        rv(sess.update_attributes(key, &[Attribute::AllowedMechanisms(gcm_only)])),
        RvError::AttributeReadOnly
    );
}
