//! The DryRun request parameter, and Decrypt's and ReEncrypt's DryRunModifiers.
//!
//! A dry run makes every check its real call makes (authorization, validation, key state and
//! usage, algorithms, grant tokens), then stops where the call would change something or produce
//! a secret, with DryRunOperationException: the real call would have succeeded.

use super::spec::enum_error;
use crate::error::{KmsError, Result};

/// DryRunModifiers' values (AWS's DryRunModifierType).
pub const AWS_DRY_RUN_MODIFIERS: &[&str] = &["IGNORE_CIPHERTEXT"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DryRun {
    /// The real call.
    #[default]
    Off,
    /// Every check of the real call; Decrypt and ReEncrypt decrypt the ciphertext to check it.
    On,
    /// Decrypt and ReEncrypt with IGNORE_CIPHERTEXT: the key named by KeyId (SourceKeyId) is
    /// checked and authorized, the ciphertext is not looked at.
    IgnoreCiphertext,
}

impl DryRun {
    /// DryRun as sent: absent or false is the real call.
    pub fn from_flag(dry_run: Option<bool>) -> DryRun {
        if dry_run == Some(true) {
            DryRun::On
        } else {
            DryRun::Off
        }
    }

    /// DryRun with DryRunModifiers. Each modifier must be an AWS value; as AWS documents, the
    /// modifiers apply only to a dry run and are otherwise ignored.
    pub fn with_modifiers(dry_run: Option<bool>, modifiers: &[String]) -> Result<DryRun> {
        let mut ignore_ciphertext = false;
        for (i, m) in modifiers.iter().enumerate() {
            match m.as_str() {
                "IGNORE_CIPHERTEXT" => ignore_ciphertext = true,
                other => {
                    return Err(enum_error(
                        &format!("dryRunModifiers.{}.member", i + 1),
                        other,
                        AWS_DRY_RUN_MODIFIERS,
                    ))
                }
            }
        }
        Ok(match Self::from_flag(dry_run) {
            DryRun::On if ignore_ciphertext => DryRun::IgnoreCiphertext,
            other => other,
        })
    }

    pub fn is_on(self) -> bool {
        self != DryRun::Off
    }

    /// Where a dry run ends once every check passed: Ok for the real call to go on.
    pub fn stop(self) -> Result<()> {
        if self.is_on() {
            return Err(KmsError::dry_run());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_modifiers() {
        let ignore = ["IGNORE_CIPHERTEXT".to_string()];
        assert_eq!(DryRun::from_flag(None), DryRun::Off);
        assert_eq!(DryRun::from_flag(Some(false)), DryRun::Off);
        assert_eq!(DryRun::from_flag(Some(true)), DryRun::On);
        assert_eq!(
            DryRun::with_modifiers(Some(true), &ignore).unwrap(),
            DryRun::IgnoreCiphertext
        );
        // Modifiers without DryRun change nothing, but must still be AWS values.
        assert_eq!(DryRun::with_modifiers(None, &ignore).unwrap(), DryRun::Off);
        let bad = DryRun::with_modifiers(Some(true), &["IGNORE".to_string()]).unwrap_err();
        assert!(matches!(&bad, KmsError::Validation(m) if m.contains("dryRunModifiers.1.member")));
        assert!(DryRun::Off.stop().is_ok());
        assert_eq!(DryRun::On.stop().unwrap_err().name(), "DryRunOperationException");
        assert!(DryRun::IgnoreCiphertext.stop().is_err());
    }
}
