//! Where a request context keeps its condition keys, by lowercased name: with the keys the
//! policies read (sorted), one slot per key; otherwise a vector sorted by name. Both are found by
//! binary search. A name given in any case is folded while it is compared, so setting or
//! reading a key allocates nothing (except for a non-ASCII name, which is lowercased first).

use std::cmp::Ordering;
use std::sync::Arc;

use super::value::Value;
use crate::policy::condition::keys;

/// A condition key name as a caller gives it, in any case: `prefix` followed by `rest` (the
/// prefix is `kms:EncryptionContext:` for an encryption context entry, so that its name need
/// not be built).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name<'a> {
    prefix: &'static str,
    rest: &'a str,
}

impl<'a> Name<'a> {
    pub(crate) fn plain(key: &'a str) -> Name<'a> {
        Name { prefix: "", rest: key }
    }

    /// `kms:EncryptionContext:<context_key>`.
    pub(crate) fn encryption_context(context_key: &'a str) -> Name<'a> {
        Name {
            prefix: keys::ENCRYPTION_CONTEXT_PREFIX,
            rest: context_key,
        }
    }

    /// The stored form (see [`keys::normalize`]).
    fn lowercased(&self) -> String {
        if self.prefix.is_empty() {
            keys::normalize(self.rest)
        } else {
            keys::normalize(&format!("{}{}", self.prefix, self.rest))
        }
    }

    /// Orders a stored (lowercased) name against this one, lowercased as it is compared. Only for
    /// ASCII names, whose lowercase form is the ASCII one.
    fn cmp_stored(&self, stored: &str) -> Ordering {
        let mut stored = stored.as_bytes();
        for part in [self.prefix.as_bytes(), self.rest.as_bytes()] {
            for (i, b) in part.iter().enumerate() {
                let Some(s) = stored.get(i) else { return Ordering::Less };
                let b = b.to_ascii_lowercase();
                if *s != b {
                    return s.cmp(&b);
                }
            }
            stored = &stored[part.len()..];
        }
        if stored.is_empty() {
            Ordering::Equal
        } else {
            Ordering::Greater
        }
    }

    /// Where this name is among sorted lowercased names (a policy's condition keys: a 32 KB policy
    /// can name thousands, and each of a request's 4,000 context pairs is looked up).
    fn position(&self, names: &[String]) -> Option<usize> {
        self.search(names, String::as_str).ok()
    }

    /// Where this name is (`Ok`) or would go (`Err`) among sorted lowercased names.
    fn search<T>(&self, sorted: &[T], name: impl Fn(&T) -> &str) -> Result<usize, usize> {
        if self.rest.is_ascii() {
            sorted.binary_search_by(|t| self.cmp_stored(name(t)))
        } else {
            let lc = self.lowercased();
            sorted.binary_search_by(|t| name(t).cmp(lc.as_str()))
        }
    }
}

/// The condition keys of one request context.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// Only these keys are kept (sorted, lowercased: a policy's condition keys); one slot each.
    Only {
        names: Arc<[String]>,
        slots: Vec<Option<Value>>,
    },
    /// Any key, as (lowercased name, value), sorted by name.
    All(Vec<(String, Value)>),
}

impl Store {
    pub(crate) fn new(only: Option<Arc<[String]>>) -> Store {
        match only {
            Some(names) => Store::Only {
                slots: std::iter::repeat_with(|| None).take(names.len()).collect(),
                names,
            },
            None => Store::All(Vec::new()),
        }
    }

    /// Whether a key of this name is kept.
    pub(crate) fn keeps(&self, name: Name<'_>) -> bool {
        match self {
            Store::Only { names, .. } => name.position(names).is_some(),
            Store::All(_) => true,
        }
    }

    /// Whether any `kms:EncryptionContext...` key is kept.
    pub(crate) fn keeps_encryption_context(&self) -> bool {
        match self {
            // Both kms:encryptioncontext:<k> and kms:encryptioncontextkeys.
            Store::Only { names, .. } => names.iter().any(|n| n.starts_with("kms:encryptioncontext")),
            Store::All(_) => true,
        }
    }

    /// Sets `name` to `value()` if the key is kept; `value` is not called otherwise.
    pub(crate) fn set(&mut self, name: Name<'_>, value: impl FnOnce() -> Value) {
        self.update(name, |_| value());
    }

    /// Sets `name` to `value(its value so far)` if the key is kept; `value` is not called otherwise.
    pub(crate) fn update(&mut self, name: Name<'_>, value: impl FnOnce(Option<Value>) -> Value) {
        match self {
            Store::Only { names, slots } => {
                if let Some(i) = name.position(names) {
                    slots[i] = Some(value(slots[i].take()));
                }
            }
            Store::All(entries) => match name.search(entries, |(n, _)| n) {
                Ok(i) => {
                    let prev = std::mem::replace(&mut entries[i].1, Value::Many(Vec::new()));
                    entries[i].1 = value(Some(prev));
                }
                Err(i) => entries.insert(i, (name.lowercased(), value(None))),
            },
        }
    }

    pub(crate) fn remove(&mut self, name: Name<'_>) {
        match self {
            Store::Only { names, slots } => {
                if let Some(i) = name.position(names) {
                    slots[i] = None;
                }
            }
            Store::All(entries) => {
                if let Ok(i) = name.search(entries, |(n, _)| n) {
                    entries.remove(i);
                }
            }
        }
    }

    /// The value of `name`, in any case.
    pub(crate) fn get(&self, name: Name<'_>) -> Option<&Value> {
        match self {
            Store::Only { names, slots } => slots[name.position(names)?].as_ref(),
            Store::All(entries) => Some(&entries[name.search(entries, |(n, _)| n).ok()?].1),
        }
    }

    /// The value of `name_lc`, already lowercased (a policy's condition key).
    pub(crate) fn get_lc(&self, name_lc: &str) -> Option<&Value> {
        match self {
            Store::Only { names, slots } => slots[names.binary_search_by(|n| n.as_str().cmp(name_lc)).ok()?].as_ref(),
            Store::All(entries) => {
                let i = entries.binary_search_by(|(n, _)| n.as_str().cmp(name_lc)).ok()?;
                Some(&entries[i].1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Value {
        Value::One(s.to_string())
    }

    fn text(v: Option<&Value>) -> Option<&str> {
        match v {
            Some(Value::One(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn any_case_in_any_store() {
        let names: Arc<[String]> = [
            "aws:sourceip",
            "kms:encryptioncontext:dept",
            "kms:encryptioncontext:é",
            "kms:viaservice",
        ]
        .map(String::from)
        .into();
        for mut store in [Store::new(Some(names)), Store::new(None)] {
            store.set(Name::plain("AWS:SourceIp"), || one("10.0.0.1"));
            store.set(Name::encryption_context("DEPT"), || one("IT"));
            store.set(Name::encryption_context("É"), || one("accent"));
            assert_eq!(text(store.get_lc("aws:sourceip")), Some("10.0.0.1"));
            assert_eq!(text(store.get(Name::plain("kms:EncryptionContext:Dept"))), Some("IT"));
            assert_eq!(text(store.get_lc("kms:encryptioncontext:é")), Some("accent"));
            assert!(store.get_lc("kms:viaservice").is_none());
            store.set(Name::plain("aws:sourceip"), || one("10.0.0.2"));
            assert_eq!(text(store.get(Name::plain("aws:SOURCEIP"))), Some("10.0.0.2"));
            store.remove(Name::plain("Aws:SourceIP"));
            assert!(store.get_lc("aws:sourceip").is_none());
        }
    }

    #[test]
    fn only_the_listed_keys_are_kept() {
        let mut store = Store::new(Some(["kms:calleraccount".to_string()].into()));
        assert!(store.keeps(Name::plain("kms:CallerAccount")));
        assert!(!store.keeps(Name::plain("kms:KeySpec")));
        assert!(!store.keeps_encryption_context());
        store.set(Name::plain("kms:KeySpec"), || unreachable!("not kept, not built"));
        assert!(store.get(Name::plain("kms:KeySpec")).is_none());
        let mut all = Store::new(None);
        for k in ["kms:b", "KMS:A", "kms:c", "kms:a"] {
            all.set(Name::plain(k), || one(k));
        }
        let Store::All(entries) = &all else { unreachable!() };
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["kms:a", "kms:b", "kms:c"]);
    }

    /// Among many kept keys (a policy can name thousands), each is found in any case, context keys
    /// and non-ASCII ones included, and no other key is.
    #[test]
    fn each_of_many_kept_keys_is_found_in_any_case() {
        let mut names: Vec<String> = (0..500).map(|i| format!("kms:encryptioncontext:k{i}")).collect();
        names.extend(["aws:sourceip", "kms:encryptioncontext:été", "kms:viaservice"].map(String::from));
        names.sort();
        let mut store = Store::new(Some(names.into()));
        for i in (0..500).step_by(7) {
            let k = format!("K{i}");
            assert!(store.keeps(Name::encryption_context(&k)), "{k}");
            store.set(Name::encryption_context(&k), || one(&k));
            assert_eq!(
                text(store.get(Name::encryption_context(&format!("k{i}")))),
                Some(k.as_str())
            );
            assert_eq!(
                text(store.get_lc(&format!("kms:encryptioncontext:k{i}"))),
                Some(k.as_str())
            );
        }
        assert!(store.keeps(Name::encryption_context("ÉTÉ")));
        assert!(store.keeps(Name::plain("AWS:SourceIp")));
        assert!(store.keeps(Name::plain("kms:ViaService")));
        for absent in ["k500", "k", "k1x", "", "étés"] {
            assert!(!store.keeps(Name::encryption_context(absent)), "{absent}");
        }
        assert!(!store.keeps(Name::plain("aws:sourceipx")));
        assert!(store.get(Name::encryption_context("k1")).is_none(), "kept but not set");
    }
}
