//! Refuses a policy document in which one JSON object names a key twice. A JSON parser keeps
//! one of the two (serde_json the last) and drops the other without a word, so
//! `{"Effect": "Deny", "Effect": "Allow"}`, or two `StringEquals` blocks in one Condition, would
//! mean something other than what the author may have read in it. New policies are checked;
//! stored ones, accepted before this check, keep their meaning (the last of the two).

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

use super::document::{malformed, show};
use crate::error::Result;

/// MalformedPolicyDocumentException naming the first key that an object repeats, and where.
pub fn refuse_duplicate_keys(text: &str) -> Result<()> {
    serde_json::from_str::<NoDuplicates>(text)
        .map(|_| ())
        .map_err(|e| malformed("Policy", e))
}

/// Any JSON value whose objects, at every depth, name each key once.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NoDuplicates)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(A::Error::custom(format!(
                    "the key {} appears twice in one object",
                    show(&key)
                )));
            }
            seen.insert(key);
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E: Error>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E: Error>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E: Error>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E: Error>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E: Error>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E: Error>(self) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
}
