//! One condition key's value in a request context. Most are strings; the caller's ARN and account
//! are read from the context's caller instead of being copied; the current time is kept as epoch
//! seconds and rendered as text only if an operator other than Date* / Numeric* reads it.

use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// What a request context holds for one condition key.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    One(String),
    /// A multi-valued key; an empty set counts as missing.
    Many(Vec<String>),
    /// A single-valued key the request gave more than once (encryption context keys differing
    /// only in case name one condition key): it has one of these values, and which is unknown.
    OneOf(Vec<String>),
    /// `aws:PrincipalArn` when it is the caller's own ARN.
    CallerArn,
    /// `aws:PrincipalAccount` / `kms:CallerAccount`: the caller's account.
    CallerAccount,
    /// `aws:CurrentTime` / `aws:EpochTime`.
    Time(Stamp),
}

impl Value {
    /// A set of strings with `s` added; a set of one is kept as [`Value::One`], without a vector.
    pub(crate) fn with(set: Option<Value>, s: String) -> Value {
        match set {
            Some(Value::One(first)) => Value::Many(vec![first, s]),
            Some(Value::Many(mut all)) => {
                all.push(s);
                Value::Many(all)
            }
            _ => Value::One(s),
        }
    }

    /// `prev`, a single-valued key's value, with another value `s` the request also gave it.
    pub(crate) fn one_of(prev: Value, s: String) -> Value {
        match prev {
            Value::One(first) => Value::OneOf(vec![first, s]),
            Value::OneOf(mut all) => {
                all.push(s);
                Value::OneOf(all)
            }
            _ => Value::One(s),
        }
    }
}

/// A timestamp condition key: whole seconds since the Unix epoch, and the text form the key
/// carries (ISO 8601 for `aws:CurrentTime`, epoch seconds for `aws:EpochTime`).
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    secs: u64,
    form: TimeForm,
    /// Rendered on first use by an operator that compares text.
    text: OnceLock<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeForm {
    /// `2024-01-31T12:00:00Z`.
    Iso8601,
    /// `1706702400`.
    EpochSeconds,
}

/// 10000-01-01T00:00:00Z: ISO 8601 text with a four-digit year ends here.
const YEAR_10000: u64 = 253_402_300_800;

impl Stamp {
    /// `t` to the second (a time before the epoch counts as the epoch).
    pub(crate) fn new(t: SystemTime, form: TimeForm) -> Stamp {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Stamp {
            secs,
            form,
            text: OnceLock::new(),
        }
    }

    /// What a Date* operator reads: epoch milliseconds, exactly what parsing the text form gives
    /// (`None` where the text would not parse as a date).
    pub(crate) fn millis(&self) -> Option<i64> {
        let secs = i64::try_from(self.secs).ok()?;
        match self.form {
            TimeForm::Iso8601 if self.secs < YEAR_10000 => Some(secs * 1000),
            TimeForm::Iso8601 => None,
            // As for any date given in epoch seconds (see condition::time).
            TimeForm::EpochSeconds if secs <= 1_000_000_000_000 => Some(secs * 1000),
            TimeForm::EpochSeconds => None,
        }
    }

    /// What a Numeric* operator reads: the epoch seconds; ISO 8601 text is not a number.
    pub(crate) fn number(&self) -> Option<f64> {
        match self.form {
            TimeForm::Iso8601 => None,
            TimeForm::EpochSeconds => Some(self.secs as f64),
        }
    }

    /// The text form, rendered once.
    pub(crate) fn text(&self) -> &String {
        self.text.get_or_init(|| {
            let mut s = String::with_capacity(20);
            let _ = match self.form {
                // humantime refuses years past 9999: such a clock gives empty text, which
                // matches no string.
                TimeForm::Iso8601 => write!(
                    s,
                    "{}",
                    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(self.secs))
                ),
                TimeForm::EpochSeconds => write!(s, "{}", self.secs),
            };
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::condition::time::parse_date;

    #[test]
    fn typed_forms_read_as_their_text_would() {
        for secs in [
            0,
            1,
            59,
            951_782_400,
            1_704_067_199,
            1_704_067_200,
            4_102_444_800,
            YEAR_10000 - 1,
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let iso = Stamp::new(t, TimeForm::Iso8601);
            assert_eq!(iso.text(), &humantime::format_rfc3339_seconds(t).to_string());
            assert_eq!(iso.millis(), parse_date(iso.text()), "{secs}");
            assert_eq!(iso.number(), None);
            let epoch = Stamp::new(t, TimeForm::EpochSeconds);
            assert_eq!(epoch.text(), &secs.to_string());
            assert_eq!(epoch.millis(), parse_date(epoch.text()), "{secs}");
            assert_eq!(epoch.number(), epoch.text().parse::<f64>().ok());
        }
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(YEAR_10000);
        assert_eq!(Stamp::new(far, TimeForm::Iso8601).millis(), None);
        assert_eq!(Stamp::new(far, TimeForm::Iso8601).text(), "");
    }
}
