//! Validation of names and free-text fields with the AWS KMS limits and messages.

use super::Tag;
use crate::error::{KmsError, Result};

pub const MAX_DESCRIPTION: usize = 8192;
pub const MAX_TAGS_PER_KEY: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
pub const MAX_ALIAS: usize = 256;
/// AWS's "Aliases per KMS key" quota.
pub const MAX_ALIASES_PER_KEY: usize = 50;

fn too_long(field: &str, max: usize) -> KmsError {
    KmsError::validation(format!(
        "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
         Member must have length less than or equal to {max}"
    ))
}

/// ValidationException unless `min <= len <= max`, worded as AWS words it.
pub fn length(field: &str, len: usize, min: usize, max: usize) -> Result<()> {
    if len < min || len > max {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must have length between {min} and {max}, got {len}"
        )));
    }
    Ok(())
}

pub fn description(s: &str) -> Result<()> {
    if s.chars().count() > MAX_DESCRIPTION {
        return Err(too_long("description", MAX_DESCRIPTION));
    }
    Ok(())
}

/// Alias names: `alias/` then letters, digits, `/`, `_`, `-`; at most 256 characters; `alias/aws/`
/// is reserved for AWS managed keys.
pub fn alias_name(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(KmsError::validation(
            "1 validation error detected: Value at 'aliasName' failed to satisfy constraint: \
             Member must have length greater than or equal to 1",
        ));
    }
    if s.len() > MAX_ALIAS {
        return Err(too_long("aliasName", MAX_ALIAS));
    }
    let Some(rest) = s.strip_prefix("alias/") else {
        return Err(KmsError::validation(format!(
            "Alias name '{s}' must begin with 'alias/'"
        )));
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b)) {
        return Err(KmsError::validation(format!(
            "Alias name '{s}' must be 'alias/' followed by one or more of a-z, A-Z, 0-9, '/', '_' and '-'"
        )));
    }
    if s.starts_with("alias/aws/") {
        return Err(KmsError::InvalidAliasName(format!(
            "Alias name '{s}' is reserved: names beginning with 'alias/aws/' belong to AWS managed keys"
        )));
    }
    Ok(())
}

/// Tag keys 1-128 characters and values 0-256 (ValidationException: the parameters' constraints,
/// checked first, as AWS does); then at most 50 tags, no `aws:` key, no key twice (TagException).
pub fn tags(tags: &[Tag]) -> Result<()> {
    tag_lengths(tags)?;
    tag_rules(tags)
}

/// At most 50 tags, no `aws:` key, no key twice (TagException): the part of `tags` that is the
/// service's rules, for an operation that checked `tag_lengths` among its other constraints.
pub fn tag_rules(tags: &[Tag]) -> Result<()> {
    if tags.len() > MAX_TAGS_PER_KEY {
        return Err(KmsError::Tag(format!(
            "Too many tags: {} given, a key can have at most {MAX_TAGS_PER_KEY}",
            tags.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(tags.len());
    for t in tags {
        not_reserved(&t.key)?;
        if !seen.insert(t.key.as_str()) {
            return Err(KmsError::Tag(format!("Duplicate tag key '{}' in the request", t.key)));
        }
    }
    Ok(())
}

/// Tag keys 1-128 characters and values 0-256 (ValidationException), the part of `tags` that is the
/// parameters' constraints.
pub fn tag_lengths(tags: &[Tag]) -> Result<()> {
    for t in tags {
        tag_key_length(&t.key)?;
        if t.value.chars().count() > MAX_TAG_VALUE {
            return Err(KmsError::validation(format!(
                "Tag value of tag key '{}' is longer than {MAX_TAG_VALUE} characters",
                t.key
            )));
        }
    }
    Ok(())
}

/// The most tag keys one UntagResource may name. AWS sets no count, but a key has at most
/// [`MAX_TAGS_PER_KEY`] tags; past this a request can only cost, since each name is matched against
/// every `aws:TagKeys` value of the policies in play (~170,000 names fit in a request).
pub const MAX_UNTAG_KEYS: usize = 1000;

/// UntagResource's TagKeys: at most [`MAX_UNTAG_KEYS`] (checked first: the checks after are linear
/// in them), each 1-128 characters, then none with the reserved `aws:` prefix.
pub fn untag_keys(keys: &[String]) -> Result<()> {
    if keys.len() > MAX_UNTAG_KEYS {
        return Err(KmsError::validation(format!(
            "Too many tag keys: {} given; UntagResource takes at most {MAX_UNTAG_KEYS} (a key has at most \
             {MAX_TAGS_PER_KEY} tags)",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|k| tag_key_length(k))?;
    keys.iter().try_for_each(|k| not_reserved(k))
}

fn tag_key_length(k: &str) -> Result<()> {
    let n = k.chars().count();
    if n == 0 || n > MAX_TAG_KEY {
        return Err(KmsError::validation(format!(
            "Tag key must be 1 to {MAX_TAG_KEY} characters long, got {n}"
        )));
    }
    Ok(())
}

fn not_reserved(k: &str) -> Result<()> {
    // Reserved in any case: AWS:, Aws:, ...
    if k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
        return Err(KmsError::Tag(format!(
            "Tag key '{k}' is reserved: the 'aws:' prefix belongs to AWS"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rules() {
        assert!(alias_name("alias/my-key_1/x").is_ok());
        assert!(matches!(alias_name(""), Err(KmsError::Validation(_))));
        assert!(matches!(alias_name("alias/"), Err(KmsError::Validation(_))));
        assert!(matches!(alias_name("my-key"), Err(KmsError::Validation(_))));
        assert!(matches!(alias_name("alias/a b"), Err(KmsError::Validation(_))));
        assert!(matches!(alias_name("alias/aws/s3"), Err(KmsError::InvalidAliasName(_))));
        assert!(matches!(
            alias_name(&format!("alias/{}", "a".repeat(251))),
            Err(KmsError::Validation(_))
        ));
        assert!(alias_name(&format!("alias/{}", "a".repeat(250))).is_ok());
    }

    #[test]
    fn tag_rules() {
        let t = |k: &str, v: &str| Tag {
            key: k.into(),
            value: v.into(),
        };
        assert!(tags(&[t("a", ""), t(&"k".repeat(128), &"v".repeat(256))]).is_ok());
        assert!(tags(&[t("", "v")]).is_err());
        assert!(tags(&[t(&"k".repeat(129), "v")]).is_err());
        assert!(tags(&[t("k", &"v".repeat(257))]).is_err());
        assert!(tags(&[t("a", "1"), t("a", "2")]).is_err());
        assert!(tags(&[t("aws:x", "1")]).is_err());
        let many: Vec<Tag> = (0..51).map(|i| t(&format!("k{i}"), "v")).collect();
        assert!(tags(&many).is_err());
    }

    #[test]
    fn tag_count_is_checked_before_duplicate_and_reserved_keys() {
        let tag = |k: String| Tag {
            key: k,
            value: "v".into(),
        };
        // 51 tags whose first two collide: the count is reported, not the duplicate.
        let mut many: Vec<Tag> = (0..51).map(|i| tag(format!("k{i}"))).collect();
        many[1].key = "k0".into();
        assert!(matches!(tags(&many), Err(KmsError::Tag(m)) if m.starts_with("Too many tags: 51")));
        // A request-sized list (hundreds of thousands) is refused by its length alone.
        let huge: Vec<Tag> = (0..300_000).map(|i| tag(format!("{i:x}"))).collect();
        assert!(matches!(tags(&huge), Err(KmsError::Tag(m)) if m.starts_with("Too many tags: 300000")));
        // Duplicates within the limit are still found.
        assert!(matches!(tags(&many[..50]), Err(KmsError::Tag(m)) if m.contains("Duplicate tag key 'k0'")));
    }
}
