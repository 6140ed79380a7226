//! Identity policies: IAM-style policies attached to principals (users, roles) directly or through
//! groups, from a TOML file that is reloaded on SIGHUP. Readers take an `Arc` snapshot without a
//! lock (arc-swap); a reload that fails keeps the previous policies.
//!
//! ```toml
//! [policies]
//! kms-user = '''{"Version": "2012-10-17", "Statement": [...]}'''
//! [groups.ops]
//! policies = ["kms-user"]
//! [principals."arn:aws:iam::111122223333:user/alice"]
//! policies = ["kms-user"]
//! groups = ["ops"]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::principal_account;
use crate::policy::Policy;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    policies: HashMap<String, String>,
    #[serde(default)]
    groups: HashMap<String, Group>,
    #[serde(default)]
    principals: HashMap<String, Attachments>,
}

/// A group has policies only: IAM groups don't nest, and a `groups` list here, were it
/// accepted and not followed, would drop the Deny policies of the groups it names.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    #[serde(default)]
    policies: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attachments {
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// Compiled policies per principal ARN.
#[derive(Default)]
pub struct IdentityPolicies {
    by_principal: HashMap<String, Vec<Arc<Policy>>>,
}

impl IdentityPolicies {
    pub fn load(path: &Path) -> Result<IdentityPolicies, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut compiled = HashMap::new();
        for (name, doc) in &file.policies {
            let policy = Policy::parse_identity_policy(name, doc).map_err(|e| format!("policy {name:?}: {e}"))?;
            compiled.insert(name.clone(), Arc::new(policy));
        }
        let lookup = |name: &String, whose: &str| {
            compiled
                .get(name)
                .cloned()
                .ok_or_else(|| format!("{whose} names unknown policy {name:?}"))
        };
        let mut by_principal = HashMap::new();
        for (arn, a) in &file.principals {
            principal_account(arn)?;
            let mut list = Vec::new();
            for name in &a.policies {
                list.push(lookup(name, arn)?);
            }
            for g in &a.groups {
                let group = file
                    .groups
                    .get(g)
                    .ok_or_else(|| format!("{arn} is in unknown group {g:?}"))?;
                for name in &group.policies {
                    list.push(lookup(name, g)?);
                }
            }
            by_principal.insert(arn.clone(), list);
        }
        Ok(IdentityPolicies { by_principal })
    }

    pub fn for_principal(&self, arn: &str) -> &[Arc<Policy>] {
        self.by_principal.get(arn).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The current identity policies and where they come from.
pub struct IdentityStore {
    path: Option<PathBuf>,
    current: ArcSwap<IdentityPolicies>,
}

impl IdentityStore {
    pub fn open(path: Option<PathBuf>) -> Result<IdentityStore, String> {
        let current = match &path {
            Some(p) => IdentityPolicies::load(p)?,
            None => IdentityPolicies::default(),
        };
        Ok(IdentityStore {
            path,
            current: ArcSwap::from_pointee(current),
        })
    }

    pub fn snapshot(&self) -> Arc<IdentityPolicies> {
        self.current.load_full()
    }

    /// Re-reads the file; on error the old policies stay in force.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        self.current.store(Arc::new(IdentityPolicies::load(path)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_reload_keep_old_policies_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.toml");
        let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;
        let text = format!(
            "[policies]\nenc = '{doc}'\n[groups.ops]\npolicies = [\"enc\"]\n\
             [principals.\"arn:aws:iam::111122223333:user/a\"]\ngroups = [\"ops\"]\n"
        );
        std::fs::write(&path, text).unwrap();
        let store = IdentityStore::open(Some(path.clone())).unwrap();
        assert_eq!(
            store.snapshot().for_principal("arn:aws:iam::111122223333:user/a").len(),
            1
        );
        assert!(store
            .snapshot()
            .for_principal("arn:aws:iam::111122223333:user/b")
            .is_empty());
        std::fs::write(&path, "[policies]\nbad = '{'\n").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(
            store.snapshot().for_principal("arn:aws:iam::111122223333:user/a").len(),
            1
        );
    }

    /// A group inside a group is refused: it was read and not followed, so a Deny policy of the
    /// inner group never reached the principal.
    #[test]
    fn nested_groups_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.toml");
        let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#;
        let text = format!(
            "[policies]\ndeny = '{deny}'\n[groups.restricted]\npolicies = [\"deny\"]\n\
             [groups.devs]\ngroups = [\"restricted\"]\n\
             [principals.\"arn:aws:iam::111122223333:user/a\"]\ngroups = [\"devs\"]\n"
        );
        std::fs::write(&path, text).unwrap();
        let err = IdentityPolicies::load(&path)
            .err()
            .expect("a nested group was accepted");
        assert!(err.contains("groups"), "{err}");
    }
}
