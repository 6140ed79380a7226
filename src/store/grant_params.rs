//! A grant's parameters as one digest: what `GrantRecord::same_parameters` compares besides the
//! key and the name. Stored and indexed with the key and the name (`grants.params`), so a retried
//! named CreateGrant finds its grant in one read, however many grants share the name (up to
//! 50,000, read under the write lock before).

use std::collections::BTreeMap;

use ring::digest::{Context, SHA256};

use super::GrantRecord;

impl GrantRecord {
    pub fn parameters_digest(&self) -> [u8; 32] {
        parameters_digest(
            &self.grantee_principal,
            self.retiring_principal.as_deref(),
            &self.operations,
            self.context_equals.as_ref(),
            self.context_subset.as_ref(),
        )
    }
}

/// SHA-256 of the parameters, each field length-prefixed; operations sorted and once each (their
/// order in the request is not a parameter), constraint maps in key order.
pub fn parameters_digest(
    grantee: &str,
    retiring: Option<&str>,
    operations: &[String],
    equals: Option<&BTreeMap<String, String>>,
    subset: Option<&BTreeMap<String, String>>,
) -> [u8; 32] {
    let mut d = Context::new(&SHA256);
    let mut text = |s: &str| {
        d.update(&(s.len() as u64).to_le_bytes());
        d.update(s.as_bytes());
    };
    text(grantee);
    let mut ops: Vec<&str> = operations.iter().map(String::as_str).collect();
    ops.sort_unstable();
    ops.dedup();
    for field in [retiring.map(|r| vec![r]), Some(ops)] {
        match field {
            None => text("none"),
            Some(items) => {
                text(&items.len().to_string());
                items.into_iter().for_each(&mut text);
            }
        }
    }
    for map in [equals, subset] {
        match map {
            None => text("none"),
            Some(pairs) => {
                text(&pairs.len().to_string());
                for (k, v) in pairs {
                    text(k);
                    text(v);
                }
            }
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::decrypt_grant;

    /// Equal exactly when `same_parameters` says so (key and name aside).
    #[test]
    fn the_digest_follows_same_parameters() {
        let g = decrypt_grant("g1", "a", Some("n"));
        let mut reordered = g.clone();
        reordered.operations = vec!["Encrypt".into(), "Decrypt".into(), "Decrypt".into()];
        let mut base = g.clone();
        base.operations = vec!["Decrypt".into(), "Encrypt".into()];
        assert_eq!(base.parameters_digest(), reordered.parameters_digest());
        assert!(base.same_parameters(&reordered));
        let mut variants = vec![];
        let mut v = base.clone();
        v.grantee_principal.push('x');
        variants.push(v);
        let mut v = base.clone();
        v.retiring_principal = Some(base.grantee_principal.clone());
        variants.push(v);
        let mut v = base.clone();
        v.operations.pop();
        variants.push(v);
        let mut v = base.clone();
        v.context_equals = Some(BTreeMap::new());
        variants.push(v);
        let mut v = base.clone();
        v.context_subset = Some([("k".to_string(), "v".to_string())].into());
        variants.push(v);
        let mut v = base.clone();
        v.context_subset = Some([("kv".to_string(), String::new())].into());
        variants.push(v);
        for v in &variants {
            assert!(!base.same_parameters(v));
            assert_ne!(base.parameters_digest(), v.parameters_digest(), "{v:?}");
        }
        assert_ne!(
            variants[4].parameters_digest(),
            variants[5].parameters_digest(),
            "fields are delimited"
        );
    }
}
