//! Parsing the `KeyId` parameter: a key id, key ARN, alias name or alias ARN.

use crate::error::{KmsError, Result};

/// What a `KeyId` parameter names, before it is resolved against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Key(String),
    Alias(String),
}

/// Which forms an operation accepts, as in AWS KMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Key id, key ARN, alias name, alias ARN (DescribeKey, Encrypt, GenerateDataKey, ...).
    KeyOrAlias,
    /// Key id or key ARN only (EnableKey, TagResource, ScheduleKeyDeletion, ...).
    KeyOnly,
}

/// The region and account whose ARNs this server answers for.
#[derive(Debug, Clone)]
pub struct ArnScope {
    pub partition: String,
    pub region: String,
    pub account: String,
    /// `arn:<partition>:kms:<region>:<account>:key/`: a key's ARN is built several times per
    /// request, and one copy of this beats assembling eight pieces.
    key_arn_prefix: String,
}

impl ArnScope {
    pub fn new(partition: &str, region: &str, account: &str) -> ArnScope {
        ArnScope {
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            key_arn_prefix: format!("arn:{partition}:kms:{region}:{account}:key/"),
        }
    }

    /// `arn:<partition>:kms:<region>:<account>:key/<key_id>`.
    pub fn key_arn(&self, key_id: &str) -> String {
        let mut arn = String::with_capacity(self.key_arn_prefix.len() + key_id.len());
        arn.push_str(&self.key_arn_prefix);
        arn.push_str(key_id);
        arn
    }

    pub fn alias_arn(&self, alias: &str) -> String {
        format!("arn:{}:kms:{}:{}:{alias}", self.partition, self.region, self.account)
    }

    /// The key id that a key id or key ARN names; any other input as given. A listing's Marker is
    /// bound to this, so that it belongs to the key rather than to the form that named it: one
    /// got by key id also serves the next page asked for by the key's ARN.
    pub fn listed_key<'a>(&self, input: &'a str) -> std::borrow::Cow<'a, str> {
        match self.parse("keyId", input, Accept::KeyOnly) {
            Ok(KeyRef::Key(id)) => std::borrow::Cow::Owned(id),
            _ => std::borrow::Cow::Borrowed(input),
        }
    }

    /// Parses a `KeyId` parameter. Malformed ids and ARNs of other accounts or regions are
    /// NotFoundException, as AWS answers them.
    pub fn parse(&self, field: &str, input: &str, accept: Accept) -> Result<KeyRef> {
        check_key_id_length(field, input)?;
        let parsed = if let Some(resource) = input.strip_prefix("arn:") {
            self.parse_arn(input, resource)?
        } else if input.starts_with("alias/") {
            KeyRef::Alias(input.to_string())
        } else if is_key_id(input) {
            KeyRef::Key(input.to_string())
        } else {
            return Err(KmsError::NotFound(format!("Invalid keyId '{input}'")));
        };
        if accept == Accept::KeyOnly {
            if let KeyRef::Alias(_) = parsed {
                return Err(KmsError::NotFound(format!(
                    "Invalid keyId '{input}': this operation takes a key ID or key ARN, not an alias"
                )));
            }
        }
        Ok(parsed)
    }

    fn parse_arn(&self, input: &str, rest: &str) -> Result<KeyRef> {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let invalid = || KmsError::NotFound(format!("Invalid keyId '{input}': not a KMS key or alias ARN"));
        let [partition, service, region, account, resource] = parts[..] else {
            return Err(invalid());
        };
        if service != "kms" {
            return Err(invalid());
        }
        if partition != self.partition || region != self.region || account != self.account {
            return Err(KmsError::NotFound(format!(
                "Key '{input}' does not exist: this server holds keys of {}:{}:{}",
                self.partition, self.region, self.account
            )));
        }
        if let Some(id) = resource.strip_prefix("key/") {
            if is_key_id(id) {
                return Ok(KeyRef::Key(id.to_string()));
            }
        } else if resource.starts_with("alias/") {
            return Ok(KeyRef::Alias(resource.to_string()));
        }
        Err(invalid())
    }
}

/// A key id is a lowercase hyphenated UUID.
pub fn is_key_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok() && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// A `KeyId` parameter's length constraint (1 to 2048 characters, a ValidationException): checked
/// by `parse`, and up front where an operation looks something else up first, since AWS checks
/// every parameter's constraints before any lookup.
pub fn check_key_id_length(field: &str, input: &str) -> Result<()> {
    if input.is_empty() {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must have length greater than or equal to 1"
        )));
    }
    // AWS counts characters, not bytes (the byte count is the cheap first test).
    if input.len() > 2048 && input.chars().count() > 2048 {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must have length less than or equal to 2048"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> ArnScope {
        ArnScope::new("aws", "us-east-1", "111122223333")
    }
    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    /// Listings bind their Markers to the key, whichever form named it.
    #[test]
    fn a_listed_key_is_its_id() {
        let s = scope();
        assert_eq!(s.listed_key(ID), ID);
        assert_eq!(s.listed_key(&s.key_arn(ID)), ID);
        for other in ["alias/x", "arn:aws:kms:eu-west-1:111122223333:key/x", "not a key"] {
            assert_eq!(s.listed_key(other), other);
        }
    }

    #[test]
    fn accepts_the_four_forms() {
        let s = scope();
        assert_eq!(
            s.parse("keyId", ID, Accept::KeyOrAlias).unwrap(),
            KeyRef::Key(ID.into())
        );
        let arn = s.key_arn(ID);
        assert_eq!(
            arn,
            format!("arn:{}:kms:{}:{}:key/{ID}", s.partition, s.region, s.account)
        );
        assert_eq!(s.parse("keyId", &arn, Accept::KeyOnly).unwrap(), KeyRef::Key(ID.into()));
        assert_eq!(
            s.parse("keyId", "alias/a", Accept::KeyOrAlias).unwrap(),
            KeyRef::Alias("alias/a".into())
        );
        let alias_arn = s.alias_arn("alias/a");
        assert_eq!(
            s.parse("keyId", &alias_arn, Accept::KeyOrAlias).unwrap(),
            KeyRef::Alias("alias/a".into())
        );
    }

    #[test]
    fn the_length_limit_counts_characters() {
        let s = scope();
        // 2206 bytes, 1106 characters: within AWS's 2048, so a name to look up, not a bad value.
        let accented = format!("alias/{}", "\u{e9}".repeat(1100));
        assert_eq!(
            s.parse("keyId", &accented, Accept::KeyOrAlias).unwrap(),
            KeyRef::Alias(accented.clone())
        );
        let long = format!("alias/{}", "\u{e9}".repeat(2043));
        assert!(matches!(
            s.parse("keyId", &long, Accept::KeyOrAlias),
            Err(KmsError::Validation(_))
        ));
    }

    #[test]
    fn refuses_bad_forms() {
        let s = scope();
        assert!(matches!(
            s.parse("keyId", "", Accept::KeyOrAlias),
            Err(KmsError::Validation(_))
        ));
        assert!(matches!(
            s.parse("keyId", "nope", Accept::KeyOrAlias),
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            s.parse("keyId", "alias/a", Accept::KeyOnly),
            Err(KmsError::NotFound(_))
        ));
        let other_account = format!("arn:aws:kms:us-east-1:999999999999:key/{ID}");
        assert!(matches!(
            s.parse("keyId", &other_account, Accept::KeyOnly),
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            s.parse("keyId", "arn:aws:s3:::bucket", Accept::KeyOnly),
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            s.parse("keyId", &ID.to_uppercase(), Accept::KeyOnly),
            Err(KmsError::NotFound(_))
        ));
    }
}
