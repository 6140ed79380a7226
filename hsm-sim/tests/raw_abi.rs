//! The C ABI directly: every function-list entry is set, C_GetInterface
//! works, the output-length convention, and CKM_RSA_AES_KEY_WRAP (which
//! cryptoki has no variant for).
mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki_sys::*;
use std::ptr::null_mut;

#[test]
fn function_list_and_interface() {
    let f = functions();
    let n = (std::mem::size_of::<CK_FUNCTION_LIST>() - 8) / 8;
    // SAFETY: after the 8-byte version come `n` nullable function pointers.
    let ptrs =
        unsafe { std::slice::from_raw_parts((f as *const CK_FUNCTION_LIST as *const u8).add(8) as *const usize, n) };
    assert_eq!(n, 68);
    assert!(ptrs.iter().all(|p| *p != 0), "a function-list entry is NULL");
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    let mut info = CK_MECHANISM_INFO::default();
    // SAFETY: valid arguments.
    let rv = unsafe { f.C_GetMechanismInfo.unwrap()(0, CKM_RSA_AES_KEY_WRAP, &mut info) };
    assert_eq!(rv, CKR_OK);
    assert_eq!(info.flags, CKF_WRAP | CKF_UNWRAP);
    // SAFETY: valid arguments.
    let rv = unsafe { f.C_DeriveKey.unwrap()(0, null_mut(), 0, null_mut(), 0, null_mut()) };
    assert_eq!(rv, CKR_FUNCTION_NOT_SUPPORTED);
}

/// AES-GCM parameters for a 96-bit IV in `iv`, no AAD, a 128-bit tag.
fn gcm_params(iv: &mut [u8; 12]) -> CK_GCM_PARAMS {
    CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: null_mut(),
        ulAADLen: 0,
        ulTagBits: 128,
    }
}

/// CKM_AES_GCM with `params` (which must outlive the calls that use the mechanism).
fn gcm_mechanism(params: &mut CK_GCM_PARAMS) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: params as *mut _ as *mut _,
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    }
}

/// A mechanism that takes no parameter.
fn no_parameters(mechanism: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// A new AES-256 session key (it also serves HMAC).
fn aes_256_key(sess: &cryptoki::session::Session) -> CK_OBJECT_HANDLE {
    sess.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(32.into())])
        .unwrap()
        .handle()
}

#[test]
fn length_convention() {
    let f = functions();
    let sess = user_session(init_token(0, "raw"));
    let key = sess
        .generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into())])
        .unwrap();
    let h = sess.handle();
    let mut iv = [0u8; 12];
    let mut params = gcm_params(&mut iv);
    let mut mech = gcm_mechanism(&mut params);
    let mut data = [1u8; 32];
    let mut out = [0u8; 64];
    let mut len: CK_ULONG = 0;
    // SAFETY (all calls below): pointers refer to live locals of the stated sizes.
    unsafe {
        let encrypt = f.C_Encrypt.unwrap();
        assert_eq!(f.C_EncryptInit.unwrap()(h, &mut mech, key.handle()), CKR_OK);
        assert_eq!(encrypt(h, data.as_mut_ptr(), 32, null_mut(), &mut len), CKR_OK);
        assert_eq!(len, 48, "NULL buffer returns the size");
        len = 10;
        assert_eq!(
            encrypt(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut len),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(len, 48, "short buffer returns the size");
        len = 64;
        assert_eq!(encrypt(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut len), CKR_OK);
        assert_eq!(len, 48);
        assert_eq!(
            encrypt(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut len),
            CKR_OPERATION_NOT_INITIALIZED,
            "success ends the operation"
        );
        // C_GetAttributeValue: NULL pValue gives the length; sensitive gives
        // CK_UNAVAILABLE_INFORMATION.
        let mut attrs = [
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: null_mut(),
                ulValueLen: 0,
            },
        ];
        let rv = f.C_GetAttributeValue.unwrap()(h, key.handle(), attrs.as_mut_ptr(), 2);
        assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE);
        assert_eq!(attrs[0].ulValueLen, 0);
        assert_eq!(attrs[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    }
}

#[test]
fn rsa_aes_key_wrap() {
    let f = functions();
    let sess = user_session(init_token(1, "rsa-aes"));
    let (pubk, privk) = sess
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::ModulusBits(2048.into()), Attribute::Wrap(true)],
            &[Attribute::Unwrap(true)],
        )
        .unwrap();
    let target = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![0x11; 32]),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
        ])
        .unwrap();
    let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: null_mut(),
        ulSourceDataLen: 0,
    };
    let mut params = CK_RSA_AES_KEY_WRAP_PARAMS {
        ulAESKeyBits: 256,
        pOAEPParams: &mut oaep,
    };
    let mut mech = CK_MECHANISM {
        mechanism: CKM_RSA_AES_KEY_WRAP,
        pParameter: &mut params as *mut _ as *mut _,
        ulParameterLen: std::mem::size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>() as CK_ULONG,
    };
    let h = sess.handle();
    let mut wrapped = vec![0u8; 512];
    let mut len = wrapped.len() as CK_ULONG;
    let mut class = CKO_SECRET_KEY;
    let mut kt = CKK_AES;
    let mut yes: CK_BBOOL = CK_TRUE;
    let mut no: CK_BBOOL = CK_FALSE;
    let mut tmpl = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class as *mut _ as *mut _,
            ulValueLen: 8,
        },
        CK_ATTRIBUTE {
            type_: CKA_KEY_TYPE,
            pValue: &mut kt as *mut _ as *mut _,
            ulValueLen: 8,
        },
        CK_ATTRIBUTE {
            type_: CKA_EXTRACTABLE,
            pValue: &mut yes as *mut _ as *mut _,
            ulValueLen: 1,
        },
        CK_ATTRIBUTE {
            type_: CKA_SENSITIVE,
            pValue: &mut no as *mut _ as *mut _,
            ulValueLen: 1,
        },
    ];
    let mut new_key: CK_OBJECT_HANDLE = 0;
    // SAFETY: pointers refer to live locals of the stated sizes.
    unsafe {
        let rv = f.C_WrapKey.unwrap()(
            h,
            &mut mech,
            pubk.handle(),
            target.handle(),
            wrapped.as_mut_ptr(),
            &mut len,
        );
        assert_eq!(rv, CKR_OK);
        assert_eq!(len, 256 + 40, "RSA block + KWP of 32 bytes");
        let rv = f.C_UnwrapKey.unwrap()(
            h,
            &mut mech,
            privk.handle(),
            wrapped.as_mut_ptr(),
            len,
            tmpl.as_mut_ptr(),
            4,
            &mut new_key,
        );
        assert_eq!(rv, CKR_OK);
        let mut value = [0u8; 32];
        let mut attr = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: value.as_mut_ptr() as *mut _,
            ulValueLen: 32,
        }];
        // The unwrapped key (non-sensitive here) has the original value.
        assert_eq!(f.C_GetAttributeValue.unwrap()(h, new_key, attr.as_mut_ptr(), 1), CKR_OK);
        assert_eq!(value, [0x11; 32]);
        // A corrupted blob is rejected.
        wrapped[0] ^= 1;
        let rv = f.C_UnwrapKey.unwrap()(
            h,
            &mut mech,
            privk.handle(),
            wrapped.as_mut_ptr(),
            len,
            tmpl.as_mut_ptr(),
            4,
            &mut new_key,
        );
        assert_eq!(rv, CKR_WRAPPED_KEY_INVALID);
    }
}

/// Mechanism parameter lengths are the caller's numbers: absurd ones are
/// refused before anything is copied (no allocation of that size, which
/// would abort the process), and the session stays usable.
#[test]
fn parameter_lengths_are_bounded() {
    const HUGE: CK_ULONG = 1 << 40;
    let f = functions();
    let sess = user_session(init_token(2, "param-bounds"));
    let aes = sess
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Extractable(true)],
        )
        .unwrap();
    let (pubk, _) = sess
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::ModulusBits(2048.into()), Attribute::Wrap(true)],
            &[Attribute::Unwrap(true)],
        )
        .unwrap();
    let target = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![0x22; 32]),
            Attribute::Extractable(true),
        ])
        .unwrap();
    let h = sess.handle();
    let mut iv = [7u8; 12];
    let mut aad = vec![1u8; (1 << 20) + 1];
    let gcm = |iv: &mut [u8; 12], iv_len, aad: &mut [u8], aad_len, tag_bits| CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: iv_len,
        ulIvBits: iv_len.wrapping_mul(8),
        pAAD: aad.as_mut_ptr(),
        ulAADLen: aad_len,
        ulTagBits: tag_bits,
    };
    let mut label = *b"abc";
    let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: label.as_mut_ptr() as *mut _,
        ulSourceDataLen: HUGE,
    };
    let mut wrap_iv = [0xa6u8; 8];
    let mut data = [0u8; 32];
    let mut out = [0u8; 512];
    let mut len: CK_ULONG;
    // SAFETY (all calls below): pointers refer to live locals; the lengths
    // that exceed them are the point of the test and must be refused before
    // any byte is read.
    unsafe {
        let mech = |m: CK_MECHANISM_TYPE, p: *mut std::ffi::c_void, n: usize| CK_MECHANISM {
            mechanism: m,
            pParameter: p,
            ulParameterLen: n as CK_ULONG,
        };
        let encrypt_init = f.C_EncryptInit.unwrap();
        for (iv_len, aad_len, tag_bits) in [
            (HUGE, 3, 128),
            (CK_ULONG::MAX, 3, 128),
            (13, 3, 128),
            (12, HUGE, 128),
            (12, CK_ULONG::MAX, 128),
            (12, (1 << 20) + 1, 128),
            (12, 3, HUGE),
        ] {
            let mut p = gcm(&mut iv, iv_len, &mut aad, aad_len, tag_bits);
            let mut m = mech(CKM_AES_GCM, &mut p as *mut _ as *mut _, std::mem::size_of_val(&p));
            let rv = encrypt_init(h, &mut m, aes.handle());
            assert_eq!(
                rv, CKR_MECHANISM_PARAM_INVALID,
                "ulIvLen {iv_len} ulAADLen {aad_len} ulTagBits {tag_bits}"
            );
        }
        // The largest AAD accepted (1 MiB) works.
        let mut p = gcm(&mut iv, 12, &mut aad, 1 << 20, 128);
        let mut m = mech(CKM_AES_GCM, &mut p as *mut _ as *mut _, std::mem::size_of_val(&p));
        assert_eq!(encrypt_init(h, &mut m, aes.handle()), CKR_OK);
        len = out.len() as CK_ULONG;
        let rv = f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut len);
        assert_eq!((rv, len), (CKR_OK, 48));

        // OAEP source data, directly and inside CKM_RSA_AES_KEY_WRAP.
        let mut m = mech(
            CKM_RSA_PKCS_OAEP,
            &mut oaep as *mut _ as *mut _,
            std::mem::size_of_val(&oaep),
        );
        assert_eq!(encrypt_init(h, &mut m, pubk.handle()), CKR_MECHANISM_PARAM_INVALID);
        let mut rsa_aes = CK_RSA_AES_KEY_WRAP_PARAMS {
            ulAESKeyBits: 256,
            pOAEPParams: &mut oaep,
        };
        let wrap = f.C_WrapKey.unwrap();
        let mut m = mech(
            CKM_RSA_AES_KEY_WRAP,
            &mut rsa_aes as *mut _ as *mut _,
            std::mem::size_of_val(&rsa_aes),
        );
        len = out.len() as CK_ULONG;
        let rv = wrap(h, &mut m, pubk.handle(), target.handle(), out.as_mut_ptr(), &mut len);
        assert_eq!(rv, CKR_MECHANISM_PARAM_INVALID);
        oaep.ulSourceDataLen = 3;
        let mut m = mech(
            CKM_RSA_PKCS_OAEP,
            &mut oaep as *mut _ as *mut _,
            std::mem::size_of_val(&oaep),
        );
        assert_eq!(encrypt_init(h, &mut m, pubk.handle()), CKR_OK);
        len = out.len() as CK_ULONG;
        let rv = f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut len);
        assert_eq!((rv, len), (CKR_OK, 256));

        // A raw parameter (the AES key-wrap IV).
        let mut m = CK_MECHANISM {
            mechanism: CKM_AES_KEY_WRAP,
            pParameter: wrap_iv.as_mut_ptr() as *mut _,
            ulParameterLen: HUGE,
        };
        len = out.len() as CK_ULONG;
        let rv = wrap(h, &mut m, aes.handle(), target.handle(), out.as_mut_ptr(), &mut len);
        assert_eq!(rv, CKR_MECHANISM_PARAM_INVALID);
        m.ulParameterLen = 8;
        len = out.len() as CK_ULONG;
        let rv = wrap(h, &mut m, aes.handle(), target.handle(), out.as_mut_ptr(), &mut len);
        assert_eq!((rv, len), (CKR_OK, 40));

        // A data length no buffer can have.
        let mut sha = mech(CKM_SHA256, null_mut(), 0);
        assert_eq!(f.C_DigestInit.unwrap()(h, &mut sha), CKR_OK);
        let rv = f.C_DigestUpdate.unwrap()(h, data.as_mut_ptr(), CK_ULONG::MAX);
        assert_eq!(rv, CKR_ARGUMENTS_BAD);
    }
}

/// An argument error found before the call reaches the token (a NULL
/// buffer with a length, a NULL length pointer) ends the operation like any
/// other error but CKR_BUFFER_TOO_SMALL: the next Init finds none active.
#[test]
fn a_rejected_argument_ends_the_operation() {
    let f = functions();
    let sess = user_session(init_token(3, "arguments-bad"));
    let key = aes_256_key(&sess);
    let h = sess.handle();
    let mut iv = [0u8; 12];
    let mut params = gcm_params(&mut iv);
    let mut gcm = gcm_mechanism(&mut params);
    let mut hmac = no_parameters(CKM_SHA256_HMAC);
    let mut sha = no_parameters(CKM_SHA256);
    let mut data = [1u8; 32];
    let mut out = [0u8; 64];
    let mut len: CK_ULONG = 64;
    let (d, o, l) = (data.as_mut_ptr(), out.as_mut_ptr(), &mut len as *mut CK_ULONG);
    let nul = null_mut::<u8>();
    let gcm: *mut CK_MECHANISM = &mut gcm;
    let hmac: *mut CK_MECHANISM = &mut hmac;
    let sha: *mut CK_MECHANISM = &mut sha;
    // SAFETY (all calls below): pointers are live locals of the stated
    // sizes, or NULL where the module must refuse them.
    unsafe {
        let enc_init = || f.C_EncryptInit.unwrap()(h, gcm, key);
        let dec_init = || f.C_DecryptInit.unwrap()(h, gcm, key);
        let sign_init = || f.C_SignInit.unwrap()(h, hmac, key);
        let verify_init = || f.C_VerifyInit.unwrap()(h, hmac, key);
        let digest_init = || f.C_DigestInit.unwrap()(h, sha);
        let check = |name: &str, init: &dyn Fn() -> CK_RV, call: &dyn Fn() -> CK_RV| {
            assert_eq!(init(), CKR_OK, "{name}: Init");
            assert_eq!(call(), CKR_ARGUMENTS_BAD, "{name}");
            assert_eq!(init(), CKR_OK, "{name}: the operation is still active");
            // The same error ends this one too, for the next case.
            assert_eq!(call(), CKR_ARGUMENTS_BAD, "{name}");
        };
        check("C_Encrypt", &enc_init, &|| f.C_Encrypt.unwrap()(h, nul, 5, o, l));
        check("C_Encrypt len", &enc_init, &|| {
            f.C_Encrypt.unwrap()(h, d, 32, o, null_mut())
        });
        check("C_EncryptUpdate", &enc_init, &|| {
            f.C_EncryptUpdate.unwrap()(h, nul, 5, o, l)
        });
        check("C_EncryptFinal", &enc_init, &|| {
            f.C_EncryptFinal.unwrap()(h, o, null_mut())
        });
        check("C_Decrypt", &dec_init, &|| f.C_Decrypt.unwrap()(h, nul, 5, o, l));
        check("C_DecryptUpdate", &dec_init, &|| {
            f.C_DecryptUpdate.unwrap()(h, nul, 5, o, l)
        });
        check("C_DecryptFinal", &dec_init, &|| {
            f.C_DecryptFinal.unwrap()(h, o, null_mut())
        });
        check("C_Sign", &sign_init, &|| f.C_Sign.unwrap()(h, nul, 5, o, l));
        check("C_SignUpdate", &sign_init, &|| f.C_SignUpdate.unwrap()(h, nul, 5));
        check("C_SignFinal", &sign_init, &|| f.C_SignFinal.unwrap()(h, o, null_mut()));
        check("C_Verify", &verify_init, &|| f.C_Verify.unwrap()(h, d, 32, nul, 32));
        check("C_VerifyUpdate", &verify_init, &|| f.C_VerifyUpdate.unwrap()(h, nul, 5));
        check("C_VerifyFinal", &verify_init, &|| f.C_VerifyFinal.unwrap()(h, nul, 32));
        check("C_Digest", &digest_init, &|| f.C_Digest.unwrap()(h, nul, 5, o, l));
        check("C_DigestUpdate", &digest_init, &|| f.C_DigestUpdate.unwrap()(h, nul, 5));
        check("C_DigestFinal", &digest_init, &|| {
            f.C_DigestFinal.unwrap()(h, o, null_mut())
        });
    }
}

/// After an Update call the operation is multi-part: the single-part call
/// is refused with CKR_OPERATION_ACTIVE rather than answering for the
/// buffered input and its own together, and (an error) it ends the
/// operation. Without an Update, the single-part call works.
#[test]
fn a_single_part_call_cannot_end_a_multi_part_operation() {
    let f = functions();
    let sess = user_session(init_token(5, "single-after-update"));
    let key = aes_256_key(&sess);
    let h = sess.handle();
    let mut iv = [0u8; 12];
    let mut params = gcm_params(&mut iv);
    let mut gcm = gcm_mechanism(&mut params);
    let mut hmac = no_parameters(CKM_SHA256_HMAC);
    let mut sha = no_parameters(CKM_SHA256);
    let mut data = [1u8; 32];
    let mut out = [0u8; 64];
    let mut len: CK_ULONG = 64;
    let (d, o, l) = (data.as_mut_ptr(), out.as_mut_ptr(), &mut len as *mut CK_ULONG);
    let gcm: *mut CK_MECHANISM = &mut gcm;
    let hmac: *mut CK_MECHANISM = &mut hmac;
    let sha: *mut CK_MECHANISM = &mut sha;
    // SAFETY (all calls below): pointers are live locals of the stated sizes.
    unsafe {
        let check = |name: &str, init: &dyn Fn() -> CK_RV, update: &dyn Fn() -> CK_RV, single: &dyn Fn() -> CK_RV| {
            assert_eq!(init(), CKR_OK, "{name}: Init");
            assert_eq!(update(), CKR_OK, "{name}: Update");
            assert_eq!(single(), CKR_OPERATION_ACTIVE, "{name} after an Update");
            assert_eq!(init(), CKR_OK, "{name}: the refused call ended the operation");
            assert_eq!(single(), CKR_OK, "{name} with no Update");
        };
        *l = 64;
        check(
            "C_Encrypt",
            &|| f.C_EncryptInit.unwrap()(h, gcm, key),
            &|| f.C_EncryptUpdate.unwrap()(h, d, 16, o, l),
            &|| {
                *l = 64;
                f.C_Encrypt.unwrap()(h, d, 16, o, l)
            },
        );
        // A ciphertext to decrypt: 16 bytes and the tag.
        *l = 64;
        assert_eq!(f.C_EncryptInit.unwrap()(h, gcm, key), CKR_OK);
        assert_eq!(f.C_Encrypt.unwrap()(h, d, 16, o, l), CKR_OK);
        let mut sealed = [0u8; 32];
        sealed.copy_from_slice(&out[..32]);
        let mut plain = [0u8; 64];
        let mut plain_len: CK_ULONG = 64;
        let (s, p, pl) = (sealed.as_mut_ptr(), plain.as_mut_ptr(), &mut plain_len as *mut CK_ULONG);
        check(
            "C_Decrypt",
            &|| f.C_DecryptInit.unwrap()(h, gcm, key),
            &|| f.C_DecryptUpdate.unwrap()(h, s, 16, p, pl),
            &|| {
                *pl = 64;
                f.C_Decrypt.unwrap()(h, s, 32, p, pl)
            },
        );
        check(
            "C_Sign",
            &|| f.C_SignInit.unwrap()(h, hmac, key),
            &|| f.C_SignUpdate.unwrap()(h, d, 16),
            &|| {
                *l = 64;
                f.C_Sign.unwrap()(h, d, 16, o, l)
            },
        );
        check(
            "C_Digest",
            &|| f.C_DigestInit.unwrap()(h, sha),
            &|| f.C_DigestUpdate.unwrap()(h, d, 16),
            &|| {
                *l = 64;
                f.C_Digest.unwrap()(h, d, 16, o, l)
            },
        );
        // C_Verify: a valid HMAC of the 32 bytes, refused after an Update all the same.
        assert_eq!(f.C_SignInit.unwrap()(h, hmac, key), CKR_OK);
        *l = 64;
        assert_eq!(f.C_Sign.unwrap()(h, d, 32, o, l), CKR_OK);
        check(
            "C_Verify",
            &|| f.C_VerifyInit.unwrap()(h, hmac, key),
            &|| f.C_VerifyUpdate.unwrap()(h, d, 16),
            &|| f.C_Verify.unwrap()(h, d, 32, o, 32),
        );
    }
}

/// Arrays from the caller become slices only when their length fits an
/// object (at most isize::MAX bytes) and their pointer is aligned; anything
/// else is CKR_ARGUMENTS_BAD, before any of it is read or written.
#[test]
fn caller_arrays_are_bounded_and_aligned() {
    let f = functions();
    let sess = user_session(init_token(4, "array-bounds"));
    let key = sess
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(16.into()), Attribute::Label(b"bounds".to_vec())],
        )
        .unwrap()
        .handle();
    let h = sess.handle();
    let mut buf = [0u64; 8];
    let bytes = buf.as_mut_ptr() as *mut u8;
    let too_many_attrs = (isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>() + 1) as CK_ULONG;
    let mut label = CK_ATTRIBUTE {
        type_: CKA_LABEL,
        pValue: null_mut(),
        ulValueLen: 0,
    };
    // SAFETY (all calls below): pointers are live locals at least as large as
    // the module may touch; the lengths are lies the module must refuse.
    unsafe {
        let random = f.C_GenerateRandom.unwrap();
        assert_eq!(random(h, bytes, CK_ULONG::MAX), CKR_ARGUMENTS_BAD);
        assert_eq!(random(h, bytes, isize::MAX as CK_ULONG + 1), CKR_ARGUMENTS_BAD);
        assert_eq!(random(h, bytes, 64), CKR_OK);
        let get = f.C_GetAttributeValue.unwrap();
        assert_eq!(get(h, key, &mut label, too_many_attrs), CKR_ARGUMENTS_BAD);
        // A CK_ATTRIBUTE array one byte off its alignment.
        let odd = bytes.add(1) as *mut CK_ATTRIBUTE;
        assert_eq!(get(h, key, odd, 1), CKR_ARGUMENTS_BAD);
        assert_eq!(get(h, key, &mut label, 1), CKR_OK);
        assert_eq!(label.ulValueLen, 6);
        // A misaligned handle array is refused without losing the results.
        let mut class = CKO_SECRET_KEY;
        let mut template = CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class as *mut _ as *mut _,
            ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
        };
        assert_eq!(f.C_FindObjectsInit.unwrap()(h, &mut template, 1), CKR_OK);
        let mut count: CK_ULONG = 0;
        let find = f.C_FindObjects.unwrap();
        assert_eq!(
            find(h, bytes.add(1) as *mut CK_OBJECT_HANDLE, 2, &mut count),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(find(h, buf.as_mut_ptr(), 2, &mut count), CKR_OK);
        assert_eq!((count, buf[0]), (1, key));
        assert_eq!(f.C_FindObjectsFinal.unwrap()(h), CKR_OK);
        // The same for a list written by the length convention.
        let mut list = [0 as CK_MECHANISM_TYPE; 65];
        let mut n: CK_ULONG = 64;
        let mechs = (list.as_mut_ptr() as *mut u8).add(1) as *mut CK_MECHANISM_TYPE;
        assert_eq!(f.C_GetMechanismList.unwrap()(0, mechs, &mut n), CKR_ARGUMENTS_BAD);
    }
}
