//! Pagination as AWS does it: Limit, an opaque Marker, Truncated.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{KmsError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
    pub truncated: bool,
}

/// Checks `limit` against 1..=max and applies the default.
pub fn limit(value: Option<i32>, default: usize, max: usize) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(KmsError::validation(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: \
             Member must have value between 1 and {max}"
        ))),
    }
}

/// Markers: the prefix, the listing's tag, a dot, the last sort key in base64url. Version 2
/// markers held the key in hex, which made one for a tag key of 128 four-byte characters longer
/// than the 1024 characters a Marker may have; they are still read.
const MARKER_PREFIX: &str = "m3.";
const HEX_MARKER_PREFIX: &str = "m2.";

/// AWS's constraints on a Marker: 1 to 1024 characters, each in U+0020..U+00FF.
const MAX_MARKER_CHARS: usize = 1024;

/// A Marker that breaks AWS's constraints is a ValidationException, as in AWS; one that keeps
/// them but is not a marker this listing returned is an InvalidMarkerException.
fn check_marker_syntax(m: &str) -> Result<()> {
    let broken = if m.is_empty() {
        "Member must have length greater than or equal to 1"
    } else if m.chars().nth(MAX_MARKER_CHARS).is_some() {
        "Member must have length less than or equal to 1024"
    } else if m.chars().any(|c| !('\u{20}'..='\u{ff}').contains(&c)) {
        "Member must satisfy regular expression pattern: [\\u0020-\\u00FF]*"
    } else {
        return Ok(());
    };
    Err(KmsError::validation(format!(
        "1 validation error detected: Value '{}' at 'marker' failed to satisfy constraint: {broken}",
        crate::error::quoted(m)
    )))
}

/// Which listing a marker belongs to: the operation and every request field but Limit and
/// Marker, hashed. A marker carries its listing's tag, so one from another operation, key or
/// filter is refused (InvalidMarkerException) instead of silently starting some other page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing([u8; 4]);

impl Listing {
    pub fn new(operation: &str, fields: &[Option<&str>]) -> Listing {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in std::iter::once(Some(operation)).chain(fields.iter().copied()) {
            // Length-prefixed, with absent told apart from empty: no two field lists hash alike.
            match part {
                Some(p) => {
                    ctx.update(&(p.len() as u64).to_be_bytes());
                    ctx.update(p.as_bytes());
                }
                None => ctx.update(&u64::MAX.to_be_bytes()),
            }
        }
        let digest = ctx.finish();
        let mut tag = [0; 4];
        tag.copy_from_slice(&digest.as_ref()[..4]);
        Listing(tag)
    }

    fn tag(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Markers are opaque to clients: the listing's tag and the sort key of the last item returned.
pub fn encode_marker(listing: &Listing, last: &str) -> String {
    let mut s = String::with_capacity(MARKER_PREFIX.len() + 9 + last.len().div_ceil(3) * 4);
    s.push_str(MARKER_PREFIX);
    s.push_str(&listing.tag());
    s.push('.');
    URL_SAFE_NO_PAD.encode_string(last, &mut s);
    s
}

/// The sort key to start after, from a marker this listing returned.
pub fn decode_marker(listing: &Listing, marker: Option<&str>) -> Result<Option<String>> {
    let Some(m) = marker else { return Ok(None) };
    check_marker_syntax(m)?;
    let invalid = || {
        KmsError::InvalidMarker(format!(
            "Marker '{}' is not one this listing returned",
            crate::error::quoted(m)
        ))
    };
    let (encoded, hex) = match (m.strip_prefix(MARKER_PREFIX), m.strip_prefix(HEX_MARKER_PREFIX)) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Err(invalid()),
    };
    let (tag, last) = encoded.split_once('.').ok_or_else(invalid)?;
    if tag != listing.tag() || last.is_empty() {
        return Err(invalid());
    }
    let bytes = if hex {
        crate::config::hex_decode(last)
    } else {
        URL_SAFE_NO_PAD.decode(last).ok()
    };
    String::from_utf8(bytes.ok_or_else(invalid)?)
        .map(Some)
        .map_err(|_| invalid())
}

/// Builds a page from up to `limit + 1` fetched items.
pub fn page<T>(mut items: Vec<T>, limit: usize, listing: &Listing, sort_key: impl Fn(&T) -> &str) -> Page<T> {
    let truncated = items.len() > limit;
    items.truncate(limit);
    let next_marker = if truncated {
        items.last().map(|i| encode_marker(listing, sort_key(i)))
    } else {
        None
    };
    Page {
        items,
        next_marker,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_garbage_is_refused() {
        let l = Listing::new("ListAliases", &[None]);
        let m = encode_marker(&l, "alias/x");
        assert_eq!(decode_marker(&l, Some(&m)).unwrap().as_deref(), Some("alias/x"));
        assert_eq!(decode_marker(&l, None).unwrap(), None);
        let tag = l.tag();
        let hex_marker = format!("m2.{tag}.616c6961732f78");
        assert_eq!(
            decode_marker(&l, Some(&hex_marker)).unwrap().as_deref(),
            Some("alias/x"),
            "a marker of the previous version is still read"
        );
        for garbage in [
            "nope".to_string(),
            "m3.".into(),
            format!("m3.{tag}"),
            format!("m3.{tag}."),
            format!("m3.{tag}.*a"),
            format!("m3.{tag}.YWJ"), // not base64 (a 4n+3 length whose last character carries spare bits)
            format!("m3.{tag}._w"),  // 0xff: not UTF-8
            format!("m2.{tag}.zz"),  // not hex
            format!("m2.{tag}.ff"),  // not UTF-8
            "m1.616263".into(),      // a first-version marker
            "é".repeat(MAX_MARKER_CHARS), // the most a Marker may be
        ] {
            assert!(
                matches!(decode_marker(&l, Some(&garbage)), Err(KmsError::InvalidMarker(_))),
                "{garbage}"
            );
        }
    }

    /// AWS's constraints on the Marker field are checked first: ValidationException.
    #[test]
    fn markers_outside_the_field_constraints_are_validation_errors() {
        let l = Listing::new("ListKeys", &[]);
        for (marker, says) in [
            (String::new(), "greater than or equal to 1"),
            ("é".repeat(MAX_MARKER_CHARS + 1), "less than or equal to 1024"),
            ("m3.\u{1F511}".into(), "regular expression pattern"),
            ("m3.\t".into(), "regular expression pattern"),
        ] {
            match decode_marker(&l, Some(&marker)) {
                Err(e @ KmsError::Validation(_)) => assert!(e.to_string().contains(says), "{e}"),
                other => panic!("{marker:?}: {other:?}"),
            }
        }
    }

    /// The longest sort key (a tag key of 128 four-byte characters) makes a marker a client can
    /// send back.
    #[test]
    fn the_longest_sort_key_makes_a_valid_marker() {
        let l = Listing::new("ListResourceTags", &[Some("key")]);
        let last = "\u{10FFFF}".repeat(128);
        let m = encode_marker(&l, &last);
        assert!(m.len() <= MAX_MARKER_CHARS, "{}", m.len());
        assert_eq!(decode_marker(&l, Some(&m)).unwrap(), Some(last));
    }

    #[test]
    fn a_marker_from_another_listing_is_refused() {
        let keys = Listing::new("ListKeys", &[]);
        let m = encode_marker(&keys, "3f00");
        let others = [
            Listing::new("ListAliases", &[None]),
            Listing::new("ListResourceTags", &[Some("key-a")]),
            Listing::new("ListGrants", &[Some("key-a"), None, None]),
        ];
        for other in others {
            assert!(matches!(
                decode_marker(&other, Some(&m)),
                Err(KmsError::InvalidMarker(_))
            ));
        }
        // The same operation on another key, or with another filter.
        let tags_a = Listing::new("ListResourceTags", &[Some("key-a")]);
        let tags_b = Listing::new("ListResourceTags", &[Some("key-b")]);
        let m = encode_marker(&tags_a, "team");
        assert!(decode_marker(&tags_b, Some(&m)).is_err());
        assert_ne!(
            Listing::new("ListGrants", &[Some("k"), None, Some("")]),
            Listing::new("ListGrants", &[Some("k"), Some(""), None]),
            "absent and empty differ"
        );
    }

    #[test]
    fn limits_and_pages() {
        let l = Listing::new("ListKeys", &[]);
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert!(limit(Some(0), 100, 1000).is_err());
        assert!(limit(Some(1001), 100, 1000).is_err());
        let p = page(vec!["a", "b", "c"], 2, &l, |s| s);
        assert_eq!(p.items, vec!["a", "b"]);
        assert!(p.truncated);
        assert_eq!(
            decode_marker(&l, p.next_marker.as_deref()).unwrap().as_deref(),
            Some("b")
        );
        assert!(!page(vec!["a"], 2, &l, |s| s).truncated);
    }
}
