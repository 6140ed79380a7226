//! The symmetric ciphertext blob: self-describing and versioned, so Decrypt needs no KeyId.
//!
//! ```text
//! version 2 (written): version | key id (16, UUID bytes) | material id (4, u32be) | nonce (16) | ciphertext | tag (16)
//!   the message key is HKDF-SHA256-Expand(material, "kms blob v2" || header || nonce), used once
//! version 1 (read only): version | key id | material id | nonce (12) | ciphertext | tag
//!   AES-256-GCM under the material itself, the nonce as IV
//! AAD = the 21 header bytes || canonical(encryption context)
//! ```

use crate::error::{KmsError, Result};
use crate::keys::names;

/// The version new blobs get: a key derived per message from a random 128-bit nonce.
pub const VERSION: u8 = 2;
/// Blobs from before per-message keys: still decrypted, never written.
pub const VERSION_1: u8 = 1;
pub const HEADER_LEN: usize = 1 + 16 + 4;
pub const NONCE_LEN: usize = 16;
pub const NONCE_LEN_V1: usize = 12;
pub const TAG_LEN: usize = 16;
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// AWS KMS accepts ciphertext blobs of 1 to 6144 bytes.
pub const MAX_BLOB: usize = 6144;

/// The parts of a parsed blob, borrowed from it.
#[derive(Debug)]
pub struct Blob<'a> {
    pub version: u8,
    pub key_id: String,
    pub material_id: u32,
    pub header: &'a [u8],
    /// NONCE_LEN bytes (version 2) or NONCE_LEN_V1 (version 1).
    pub nonce: &'a [u8],
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8; TAG_LEN],
}

pub fn header(key_id: &str, material_id: u32) -> Result<[u8; HEADER_LEN]> {
    let uuid = uuid::Uuid::parse_str(key_id).map_err(|_| KmsError::internal("key id in the store is not a UUID"))?;
    let mut h = [0u8; HEADER_LEN];
    h[0] = VERSION;
    h[1..17].copy_from_slice(uuid.as_bytes());
    h[17..21].copy_from_slice(&material_id.to_be_bytes());
    Ok(h)
}

/// Splits a blob into its parts. Any structural problem is InvalidCiphertextException.
pub fn parse(blob: &[u8]) -> Result<Blob<'_>> {
    names::length("ciphertextBlob", blob.len(), 1, MAX_BLOB)?;
    let invalid =
        || KmsError::InvalidCiphertext("The ciphertext is not a valid ciphertext blob of this service".into());
    let nonce_len = match blob[0] {
        VERSION => NONCE_LEN,
        VERSION_1 => NONCE_LEN_V1,
        _ => return Err(invalid()),
    };
    if blob.len() < HEADER_LEN + nonce_len + TAG_LEN {
        return Err(invalid());
    }
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (nonce, rest) = rest.split_at(nonce_len);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let key_id = uuid::Uuid::from_slice(&header[1..17]).map_err(|_| invalid())?;
    Ok(Blob {
        version: blob[0],
        key_id: key_id.hyphenated().to_string(),
        material_id: u32::from_be_bytes(header[17..21].try_into().map_err(|_| invalid())?),
        header,
        nonce,
        ciphertext,
        tag: tag.try_into().map_err(|_| invalid())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn header_round_trips() {
        let h = header(ID, 7).unwrap();
        let mut blob = h.to_vec();
        blob.extend_from_slice(&[1u8; NONCE_LEN]);
        blob.extend_from_slice(b"abc");
        blob.extend_from_slice(&[2u8; TAG_LEN]);
        let p = parse(&blob).unwrap();
        assert_eq!(p.key_id, ID);
        assert_eq!(p.material_id, 7);
        assert_eq!(p.ciphertext, b"abc");
        assert_eq!(p.tag, &[2u8; TAG_LEN]);
        assert_eq!((p.version, p.nonce.len()), (VERSION, NONCE_LEN));
        // A version 1 blob has a 12-byte nonce.
        blob[0] = VERSION_1;
        let p = parse(&blob).unwrap();
        assert_eq!(
            (p.version, p.nonce.len(), p.ciphertext.len()),
            (VERSION_1, NONCE_LEN_V1, 7)
        );
    }

    #[test]
    fn refuses_short_and_foreign_blobs() {
        assert!(matches!(parse(&[]), Err(KmsError::Validation(_))));
        assert!(matches!(
            parse(&[VERSION; OVERHEAD - 1]),
            Err(KmsError::InvalidCiphertext(_))
        ));
        assert!(matches!(
            parse(&[VERSION_1; HEADER_LEN + NONCE_LEN_V1 + TAG_LEN - 1]),
            Err(KmsError::InvalidCiphertext(_))
        ));
        let mut blob = header(ID, 1).unwrap().to_vec();
        blob.resize(OVERHEAD + 4, 0);
        blob[0] = 9;
        assert!(matches!(parse(&blob), Err(KmsError::InvalidCiphertext(_))));
        assert!(matches!(parse(&vec![1u8; MAX_BLOB + 1]), Err(KmsError::Validation(_))));
        // Long enough for version 1's header but not version 2's.
        let mut short = header(ID, 1).unwrap().to_vec();
        short.resize(HEADER_LEN + NONCE_LEN_V1 + TAG_LEN, 0);
        assert!(matches!(parse(&short), Err(KmsError::InvalidCiphertext(_))));
        short[0] = VERSION_1;
        assert!(parse(&short).is_ok());
    }
}
