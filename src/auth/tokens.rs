//! Bearer tokens for service accounts. The config holds SHA-256 digests only; a presented token is
//! hashed and compared against every entry in constant time.

use std::sync::Arc;

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use super::{principal_account, TokenConfig};
use crate::config::hex_decode;

pub struct TokenTable {
    entries: Vec<([u8; 32], Arc<str>)>,
}

/// Hex SHA-256 of a token, the form the config takes (`kms` doesn't need the token itself).
pub fn token_digest(token: &str) -> String {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TokenTable {
    pub fn new(configs: &[TokenConfig]) -> Result<TokenTable, String> {
        let mut entries = Vec::new();
        for (i, t) in configs.iter().enumerate() {
            let bytes = hex_decode(&t.sha256)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| format!("auth.tokens[{i}].sha256 must be 64 hex characters (a SHA-256 digest)"))?;
            principal_account(&t.principal).map_err(|e| format!("auth.tokens[{i}].principal: {e}"))?;
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&bytes);
            // `printf %s "$TOKEN" | sha256sum` with TOKEN unset gives this digest: taken as it is,
            // it would make an empty bearer token a credential.
            if digest.as_slice() == ring::digest::digest(&SHA256, b"").as_ref() {
                return Err(format!(
                    "auth.tokens[{i}].sha256 is the digest of an empty token (was the token unset when it was hashed?)"
                ));
            }
            // One token, two principals: which one it authenticates as would be up to the order.
            if let Some(j) = entries.iter().position(|(d, _)| *d == digest) {
                return Err(format!("auth.tokens[{j}] and auth.tokens[{i}] have the same sha256"));
            }
            entries.push((digest, Arc::from(t.principal.as_str())));
        }
        Ok(TokenTable { entries })
    }

    pub fn principal_for(&self, token: &str) -> Option<&Arc<str>> {
        let presented = digest(&SHA256, token.as_bytes());
        let mut found = None;
        // Every entry is compared, so timing does not tell which (or whether one) matched.
        for (d, principal) in &self.entries {
            if bool::from(d.as_slice().ct_eq(presented.as_ref())) {
                found = Some(principal);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_token_twice_is_refused() {
        let entry = |token: &str, user: &str| TokenConfig {
            sha256: token_digest(token),
            principal: format!("arn:aws:iam::111122223333:user/{user}"),
        };
        assert!(TokenTable::new(&[entry("a", "x"), entry("b", "y")]).is_ok());
        let mut upper = entry("a", "y");
        upper.sha256 = upper.sha256.to_uppercase(); // the same digest, spelled otherwise
        for dup in [entry("a", "y"), entry("a", "x"), upper] {
            let err = TokenTable::new(&[entry("a", "x"), entry("b", "z"), dup]).err().unwrap();
            assert_eq!(err, "auth.tokens[0] and auth.tokens[2] have the same sha256");
        }
    }

    /// `printf %s "$TOKEN" | sha256sum` with TOKEN unset: refused, or "Bearer " would be a credential.
    #[test]
    fn the_digest_of_an_empty_token_is_refused() {
        let empty = TokenConfig {
            sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            principal: "arn:aws:iam::111122223333:user/x".into(),
        };
        let err = TokenTable::new(&[empty]).err().unwrap();
        assert!(
            err.contains("auth.tokens[0].sha256 is the digest of an empty token"),
            "{err}"
        );
    }
}
