//! Encryption context: string pairs bound to a ciphertext as additional authenticated data.

use std::collections::BTreeMap;

use crate::error::{KmsError, Result};

/// AWS KMS limits the encryption context to 8192 bytes.
pub const MAX_CONTEXT_BYTES: usize = 8192;

/// An encryption context in canonical (sorted by key bytes) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new(field: &str, pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        if map.keys().any(|k| k.is_empty()) {
            return Err(KmsError::validation(format!(
                "{field}: encryption context keys must not be empty"
            )));
        }
        Self::check_size(field, map.iter())?;
        Ok(EncryptionContext(map))
    }

    /// The 8192-byte limit on keys and values together. A request's context is checked before it
    /// is sorted: a 512 KiB request of tiny pairs would otherwise build a tree of 70,000 entries
    /// only to be refused.
    pub fn check_size<'a>(field: &str, pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Result<()> {
        let size: usize = pairs.map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_CONTEXT_BYTES {
            return Err(KmsError::validation(format!(
                "{field}: encryption context is {size} bytes, the limit is {MAX_CONTEXT_BYTES}"
            )));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// The keys, for the audit trail (values may be sensitive and are never logged).
    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Appends the canonical encoding: each pair as u32be len | key | u32be len | value, sorted by key
    /// bytes. Length prefixes make the encoding unambiguous.
    pub fn append_canonical(&self, out: &mut Vec<u8>) {
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(
            "encryptionContext",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    fn canon(c: &EncryptionContext) -> Vec<u8> {
        let mut v = Vec::new();
        c.append_canonical(&mut v);
        v
    }

    #[test]
    fn order_does_not_matter_but_content_does() {
        assert_eq!(
            canon(&ctx(&[("a", "1"), ("b", "2")])),
            canon(&ctx(&[("b", "2"), ("a", "1")]))
        );
        assert_ne!(canon(&ctx(&[("a", "1b")])), canon(&ctx(&[("a1", "b")])));
        assert_ne!(canon(&ctx(&[])), canon(&ctx(&[("a", "")])));
    }

    #[test]
    fn limits() {
        assert!(EncryptionContext::new("c", [("".to_string(), "v".to_string())]).is_err());
        assert!(EncryptionContext::new("c", [("k".to_string(), "v".repeat(8191))]).is_ok());
        assert!(EncryptionContext::new("c", [("k".to_string(), "v".repeat(8192))]).is_err());
    }
}
