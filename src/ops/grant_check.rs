//! A grant as authorization checks it, and how its encryption-context constraints match a
//! request: keys case-insensitively, values case-sensitively (as AWS).
//!
//! Authorization may check every grant a caller holds on a key (up to 50,000) on each request no
//! policy allows. So a grant's operations and constraints are prepared once, when it is loaded
//! into the cache (`CheckedGrant`), and the request's context once per request
//! (`ConstraintContext`). Most grants are then told apart by a few integer compares within the
//! grant itself: no allocation, and no pointer to follow.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::LazyLock;

use crate::keys::context::EncryptionContext;
use crate::store::GrantRecord;

/// The hasher of constraint pairs, seeded once per process so that grants and requests hash
/// alike. A collision only costs a full comparison: each use compares the pairs themselves after.
static PAIR_HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// A grant prepared for authorization. What a scan of thousands of grants reads first (the
/// operations and the constraints' filters) is kept in these 32 bytes; the record and the
/// lowercased pairs behind a pointer, read only for a grant that passes the filters.
pub(super) struct CheckedGrant {
    /// Bits of the operations' indexes in the list `new` was given.
    operations: u32,
    has_equals: bool,
    has_subset: bool,
    /// A request whose context's fingerprint differs fails EncryptionContextEquals.
    equals_fingerprint: u64,
    /// A request whose context lacks one of these bits fails EncryptionContextSubset.
    subset_bits: u64,
    prepared: Box<Prepared>,
}

struct Prepared {
    record: GrantRecord,
    equals: Option<Equals>,
    subset: Option<Subset>,
}

impl CheckedGrant {
    /// `all_operations` lists every grant operation (at most 32); a stored name outside it
    /// permits nothing.
    pub fn new(record: GrantRecord, all_operations: &[&str]) -> CheckedGrant {
        let operations = record
            .operations
            .iter()
            .filter_map(|o| operation_bit(all_operations, o))
            .fold(0, |bits, bit| bits | bit);
        let equals = record.context_equals.as_ref().map(Equals::of);
        let subset = record.context_subset.as_ref().map(Subset::of);
        CheckedGrant {
            operations,
            has_equals: equals.is_some(),
            has_subset: subset.is_some(),
            equals_fingerprint: equals.as_ref().map_or(0, |e| e.fingerprint),
            subset_bits: subset.as_ref().map_or(0, |s| s.bits),
            prepared: Box::new(Prepared { record, equals, subset }),
        }
    }

    pub fn record(&self) -> &GrantRecord {
        &self.prepared.record
    }

    /// Whether the grant includes the operation whose bit `operation_bit` gave.
    pub fn includes(&self, operation: u32) -> bool {
        self.operations & operation != 0
    }

    /// Whether the request's context meets the grant's constraints (true when it has none).
    pub fn constraints_hold(&self, request: &ConstraintContext<'_>) -> bool {
        if !self.has_equals && !self.has_subset {
            return true;
        }
        // A request context with two keys differing only in case meets no constraint: which of
        // them a constraint means is ambiguous, and either answer could let through a pair the
        // grant never allowed.
        let Some(context) = request.lowered() else {
            return false;
        };
        if (self.has_equals && self.equals_fingerprint != context.fingerprint)
            || (self.has_subset && self.subset_bits & !context.bits != 0)
        {
            return false;
        }
        let p = &self.prepared;
        p.equals.as_ref().is_none_or(|e| e.holds(context)) && p.subset.as_ref().is_none_or(|s| s.holds(context))
    }
}

/// The bit of `operation` among `all_operations`, or None when it is not a grant operation.
pub(super) fn operation_bit(all_operations: &[&str], operation: &str) -> Option<u32> {
    let index = all_operations.iter().position(|o| *o == operation)?;
    (index < 32).then(|| 1 << index)
}

/// EncryptionContextEquals: the request's context, keys lowercased, is exactly these pairs.
struct Equals {
    /// Sorted by key, one pair per key. None when a grant stored before keys differing only in
    /// case were refused has two such keys with different values: no request meets it.
    pairs: Option<Vec<(String, String)>>,
    fingerprint: u64,
}

impl Equals {
    fn of(pairs: &BTreeMap<String, String>) -> Equals {
        let mut lowered = lowered_pairs(pairs);
        lowered.dedup();
        let one_value_per_key = lowered.windows(2).all(|w| w[0].0 != w[1].0);
        Equals {
            fingerprint: fingerprint(lowered.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            pairs: one_value_per_key.then_some(lowered),
        }
    }

    fn holds(&self, context: &LoweredContext<'_>) -> bool {
        let Some(pairs) = &self.pairs else { return false };
        pairs.len() == context.pairs.len()
            && pairs
                .iter()
                .zip(&context.pairs)
                .all(|((k, v), (ck, cv))| k == ck && v == *cv)
    }
}

/// EncryptionContextSubset: each of these pairs (keys lowercased) is in the request's context.
struct Subset {
    pairs: Vec<(String, String)>,
    /// The pairs' bits (`pair_bits`): a request lacking one of them lacks a pair.
    bits: u64,
}

impl Subset {
    fn of(pairs: &BTreeMap<String, String>) -> Subset {
        let pairs = lowered_pairs(pairs);
        Subset {
            bits: pairs.iter().fold(0, |bits, (k, v)| bits | pair_bits(k, v)),
            pairs,
        }
    }

    fn holds(&self, context: &LoweredContext<'_>) -> bool {
        self.pairs
            .iter()
            .all(|(k, v)| context.pairs.get(k.as_str()).is_some_and(|cv| *cv == v))
    }
}

/// The pairs with keys lowercased, sorted.
fn lowered_pairs(pairs: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut lowered: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect();
    lowered.sort();
    lowered
}

/// Two of 64 bits for a pair (a Bloom filter's), for a first test of inclusion: a pair not in a
/// context of 8 pairs passes it about one time in 16, not in a context of 1 pair one in 1000.
fn pair_bits(key: &str, value: &str) -> u64 {
    let h = PAIR_HASHER.hash_one((key, value));
    1 << (h & 63) | 1 << ((h >> 6) & 63)
}

/// A hash of pairs in key order, for a first test of equality.
fn fingerprint<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = PAIR_HASHER.build_hasher();
    for (k, v) in pairs {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// The request's encryption context with keys lowercased, as constraints match it: made once per
/// request, when the first grant with constraints is checked, not once per grant (a key may have
/// 50,000 grants and a context 4,000 pairs).
pub(super) struct ConstraintContext<'a> {
    context: Option<&'a EncryptionContext>,
    lowered: std::cell::OnceCell<Option<LoweredContext<'a>>>,
}

struct LoweredContext<'a> {
    pairs: BTreeMap<String, &'a String>,
    fingerprint: u64,
    bits: u64,
}

impl<'a> ConstraintContext<'a> {
    pub fn new(context: Option<&'a EncryptionContext>) -> Self {
        ConstraintContext {
            context,
            lowered: std::cell::OnceCell::new(),
        }
    }

    /// None when two keys differ only in case.
    fn lowered(&self) -> Option<&LoweredContext<'a>> {
        self.lowered
            .get_or_init(|| {
                let pairs = lowercased(self.context.into_iter().flat_map(EncryptionContext::pairs))?;
                Some(LoweredContext {
                    fingerprint: fingerprint(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                    bits: pairs.iter().fold(0, |bits, (k, v)| bits | pair_bits(k, v)),
                    pairs,
                })
            })
            .as_ref()
    }
}

/// The pairs with lowercased keys, or None when two keys differ only in case.
pub(super) fn lowercased<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Option<BTreeMap<String, &'a String>> {
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if out.insert(k.to_lowercase(), v).is_some() {
            return None;
        }
    }
    Some(out)
}

/// A grant record with these operations and constraints, for tests.
#[cfg(test)]
pub(super) fn grant_for_test(
    operations: &[&str],
    equals: Option<BTreeMap<String, String>>,
    subset: Option<BTreeMap<String, String>>,
) -> GrantRecord {
    GrantRecord {
        grant_id: "g".into(),
        key_id: "k".into(),
        name: None,
        creation_date: 0,
        grantee_principal: "p".into(),
        retiring_principal: None,
        issuing_account: "a".into(),
        operations: operations.iter().map(|o| o.to_string()).collect(),
        context_equals: equals,
        context_subset: subset,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn grant(equals: Option<BTreeMap<String, String>>, subset: Option<BTreeMap<String, String>>) -> CheckedGrant {
        let record = grant_for_test(&["Decrypt", "Unknown"], equals, subset);
        CheckedGrant::new(record, &["Encrypt", "Decrypt"])
    }

    /// The rule as written before the filters: every constraint pair's lowercased key in the
    /// request with its value, and for Equals the same set of lowercased keys.
    fn by_the_rule(
        equals: Option<&BTreeMap<String, String>>,
        subset: Option<&BTreeMap<String, String>>,
        context: &BTreeMap<String, String>,
    ) -> bool {
        if equals.is_none() && subset.is_none() {
            return true;
        }
        let Some(context) = lowercased(context.iter()) else {
            return false;
        };
        let contains_all =
            |pairs: &BTreeMap<String, String>| pairs.iter().all(|(k, v)| context.get(&k.to_lowercase()) == Some(&v));
        let same_keys = |pairs: &BTreeMap<String, String>| {
            let keys: BTreeSet<String> = pairs.keys().map(|k| k.to_lowercase()).collect();
            keys.len() == context.len() && keys.iter().all(|k| context.contains_key(k))
        };
        equals.is_none_or(|e| same_keys(e) && contains_all(e)) && subset.is_none_or(contains_all)
    }

    /// Every map of up to `n` pairs over keys that collide in case and two values.
    fn maps(n: usize) -> Vec<BTreeMap<String, String>> {
        let pairs: Vec<(String, String)> = ["k", "K", "j"]
            .iter()
            .flat_map(|k| ["1", "2"].map(|v| (k.to_string(), v.to_string())))
            .collect();
        let mut out = vec![BTreeMap::new()];
        for _ in 0..n {
            let grown: Vec<BTreeMap<String, String>> = out
                .iter()
                .flat_map(|m| {
                    pairs.iter().map(move |(k, v)| {
                        let mut m = m.clone();
                        m.insert(k.clone(), v.clone());
                        m
                    })
                })
                .collect();
            out.extend(grown);
        }
        out.sort();
        out.dedup();
        out
    }

    /// The filters only ever turn a request away early: the prepared grant decides as the rule.
    #[test]
    fn prepared_grants_decide_as_the_rule() {
        let all = maps(3);
        let mut held = 0;
        for context in &all {
            let ctx = EncryptionContext::new("c", context.clone()).unwrap();
            let request = ConstraintContext::new(Some(&ctx));
            for constraint in &all {
                for (e, s) in [
                    (Some(constraint), None),
                    (None, Some(constraint)),
                    (Some(constraint), Some(constraint)),
                ] {
                    let expected = by_the_rule(e, s, context);
                    let got = grant(e.cloned(), s.cloned()).constraints_hold(&request);
                    assert_eq!(got, expected, "equals {e:?} subset {s:?} context {context:?}");
                    held += usize::from(got);
                }
            }
        }
        assert!(held > 100, "the cases must include grants that hold: {held}");
    }

    #[test]
    fn no_constraints_hold_for_any_context() {
        let ctx = EncryptionContext::new("c", [("A".to_string(), "1".to_string()), ("a".into(), "2".into())]).unwrap();
        assert!(grant(None, None).constraints_hold(&ConstraintContext::new(Some(&ctx))));
        assert!(grant(None, None).constraints_hold(&ConstraintContext::new(None)));
        let s: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(!grant(None, Some(s)).constraints_hold(&ConstraintContext::new(None)));
    }

    #[test]
    fn operations_are_bits_of_the_list() {
        let ops = ["Encrypt", "Decrypt"];
        let g = grant(None, None);
        assert!(g.includes(operation_bit(&ops, "Decrypt").unwrap()));
        assert!(!g.includes(operation_bit(&ops, "Encrypt").unwrap()));
        assert_eq!(operation_bit(&ops, "Unknown"), None);
        assert_eq!(g.record().operations.len(), 2);
    }
}
