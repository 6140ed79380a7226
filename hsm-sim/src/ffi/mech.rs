//! Copies a CK_MECHANISM and its parameter structure into Rust types.
use super::ptr::{bytes, load};
use crate::mechanisms::{aes, Mechanism, OaepParams, Param};
use crate::Rv;
use cryptoki_sys::*;
use std::mem::size_of;

/// Longest variable-length parameter buffer accepted (GCM AAD, OAEP source
/// data, raw parameters such as a key-wrap IV). Lengths come from the
/// caller, so they are checked before anything is copied.
pub const MAX_PARAM_LEN: usize = 1 << 20;

/// # Safety
/// `p` must be null or point to a readable CK_MECHANISM whose parameter
/// is readable for `ulParameterLen` bytes.
pub unsafe fn mechanism(p: *const CK_MECHANISM) -> Rv<Mechanism> {
    // SAFETY: forwarded caller guarantee.
    let m = unsafe { load(p) }?;
    let raw = m.pParameter as *const u8;
    let param = match m.mechanism {
        CKM_AES_GCM => {
            // SAFETY: the size matches CK_GCM_PARAMS, as checked first.
            let g: CK_GCM_PARAMS = unsafe { param_struct(&m) }?;
            Param::Gcm {
                // SAFETY: the parameter's pointers describe caller buffers.
                iv: unsafe { param_bytes(g.pIv, g.ulIvLen, aes::IV_LEN) }?,
                // SAFETY: as above.
                aad: unsafe { param_bytes(g.pAAD, g.ulAADLen, MAX_PARAM_LEN) }?,
                tag_bits: g.ulTagBits,
            }
        }
        CKM_RSA_PKCS_OAEP => {
            // SAFETY: size checked inside.
            let o: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param_struct(&m) }?;
            // SAFETY: the caller's OAEP parameters are readable.
            Param::Oaep(unsafe { oaep(&o) }?)
        }
        CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS | CKM_SHA384_RSA_PKCS_PSS | CKM_SHA512_RSA_PKCS_PSS => {
            // SAFETY: size checked inside.
            let p: CK_RSA_PKCS_PSS_PARAMS = unsafe { param_struct(&m) }?;
            Param::Pss {
                hash: p.hashAlg,
                mgf: p.mgf,
                salt_len: p.sLen,
            }
        }
        CKM_RSA_AES_KEY_WRAP => {
            // SAFETY: size checked inside.
            let w: CK_RSA_AES_KEY_WRAP_PARAMS = unsafe { param_struct(&m) }?;
            // SAFETY: pOAEPParams points to the caller's OAEP parameters.
            let o: CK_RSA_PKCS_OAEP_PARAMS = unsafe { load(w.pOAEPParams) }?;
            Param::RsaAesWrap {
                aes_bits: w.ulAESKeyBits,
                // SAFETY: as above.
                oaep: unsafe { oaep(&o) }?,
            }
        }
        _ if raw.is_null() || m.ulParameterLen == 0 => Param::None,
        // SAFETY: the caller guarantees ulParameterLen readable bytes.
        _ => Param::Bytes(unsafe { param_bytes(raw, m.ulParameterLen, MAX_PARAM_LEN) }?),
    };
    Ok(Mechanism {
        mech: m.mechanism,
        param,
    })
}

/// # Safety
/// The mechanism's parameter pointer must be readable for its length.
unsafe fn param_struct<T: Copy>(m: &CK_MECHANISM) -> Rv<T> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != size_of::<T>() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-null and exactly size_of::<T>() bytes long.
    unsafe { load(m.pParameter as *const T) }
}

/// Copies a parameter buffer of at most `max` bytes; a longer one is
/// CKR_MECHANISM_PARAM_INVALID without being read.
///
/// # Safety
/// `p` must be null or hold `len` readable bytes.
unsafe fn param_bytes(p: *const u8, len: CK_ULONG, max: usize) -> Rv<Vec<u8>> {
    if usize::try_from(len).map_or(true, |n| n > max) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: forwarded caller guarantee.
    Ok(unsafe { bytes(p, len) }?.to_vec())
}

/// # Safety
/// `pSourceData` must hold `ulSourceDataLen` readable bytes.
unsafe fn oaep(o: &CK_RSA_PKCS_OAEP_PARAMS) -> Rv<OaepParams> {
    let label = if o.source == CKZ_DATA_SPECIFIED {
        // SAFETY: forwarded caller guarantee.
        unsafe { param_bytes(o.pSourceData as *const u8, o.ulSourceDataLen, MAX_PARAM_LEN) }?
    } else {
        Vec::new()
    };
    Ok(OaepParams {
        hash: o.hashAlg,
        mgf: o.mgf,
        label,
    })
}
