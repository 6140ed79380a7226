//! Bearer tokens for service accounts. The config holds SHA-256 digests only; a presented token is
//! hashed and compared against every entry in constant time.

use ring::digest::{digest, SHA256};

use super::{principal_account, TokenConfig};
use crate::config::hex_decode;

pub struct TokenTable {
    entries: Vec<([u8; 32], String)>,
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
            entries.push((digest, t.principal.clone()));
        }
        Ok(TokenTable { entries })
    }

    pub fn principal_for(&self, token: &str) -> Option<&str> {
        let presented = digest(&SHA256, token.as_bytes());
        let mut found = None;
        // Every entry is compared, so timing does not tell which (or whether one) matched.
        for (d, principal) in &self.entries {
            if constant_time_eq(d, presented.as_ref()) {
                found = Some(principal.as_str());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
