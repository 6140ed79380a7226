//! Pagination as AWS does it: Limit, an opaque Marker, Truncated.

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

const MARKER_PREFIX: &str = "m1.";

/// Markers are opaque to clients: the sort key of the last item returned, hex-encoded.
pub fn encode_marker(last: &str) -> String {
    let mut s = String::with_capacity(MARKER_PREFIX.len() + last.len() * 2);
    s.push_str(MARKER_PREFIX);
    for b in last.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn decode_marker(marker: Option<&str>) -> Result<Option<String>> {
    let Some(m) = marker else { return Ok(None) };
    let invalid = || KmsError::InvalidMarker(format!("Marker '{m}' is not one this service returned"));
    let hex = m.strip_prefix(MARKER_PREFIX).ok_or_else(invalid)?;
    let bytes = crate::config::hex_decode(hex).ok_or_else(invalid)?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

/// Builds a page from up to `limit + 1` fetched items.
pub fn page<T>(mut items: Vec<T>, limit: usize, sort_key: impl Fn(&T) -> &str) -> Page<T> {
    let truncated = items.len() > limit;
    items.truncate(limit);
    let next_marker = if truncated {
        items.last().map(|i| encode_marker(sort_key(i)))
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
        let m = encode_marker("alias/x");
        assert_eq!(decode_marker(Some(&m)).unwrap().as_deref(), Some("alias/x"));
        assert_eq!(decode_marker(None).unwrap(), None);
        assert!(matches!(decode_marker(Some("nope")), Err(KmsError::InvalidMarker(_))));
        assert!(matches!(decode_marker(Some("m1.zz")), Err(KmsError::InvalidMarker(_))));
    }

    #[test]
    fn limits_and_pages() {
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert!(limit(Some(0), 100, 1000).is_err());
        assert!(limit(Some(1001), 100, 1000).is_err());
        let p = page(vec!["a", "b", "c"], 2, |s| s);
        assert_eq!(p.items, vec!["a", "b"]);
        assert!(p.truncated);
        assert_eq!(decode_marker(p.next_marker.as_deref()).unwrap().as_deref(), Some("b"));
        assert!(!page(vec!["a"], 2, |s| s).truncated);
    }
}
