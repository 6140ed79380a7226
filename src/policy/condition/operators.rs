//! Condition operators: the name grammar (`[ForAnyValue:|ForAllValues:]<Base>[IfExists]`), the
//! policy values each one takes (compiled once), and the comparison of one request value.

use std::net::IpAddr;

use super::ip::{parse_request_ip, Cidr};
use super::time::parse_date;
use crate::policy::context::Stamp;
use crate::policy::pattern::Pattern;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Cmp::Eq => request == policy,
            Cmp::Lt => request < policy,
            Cmp::Le => request <= policy,
            Cmp::Gt => request > policy,
            Cmp::Ge => request >= policy,
        }
    }
}

/// The positive comparison an operator makes; `Not...` operators negate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    String,
    StringIgnoreCase,
    StringLike,
    Arn,
    Numeric(Cmp),
    Date(Cmp),
    Bool,
    Ip,
    Binary,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Operator {
    pub family: Family,
    pub negated: bool,
    pub if_exists: bool,
    pub set: SetQualifier,
}

/// The operator names this engine knows, with the family and negation each stands for.
const BASES: &[(&str, Family, bool)] = &[
    ("StringEquals", Family::String, false),
    ("StringNotEquals", Family::String, true),
    ("StringEqualsIgnoreCase", Family::StringIgnoreCase, false),
    ("StringNotEqualsIgnoreCase", Family::StringIgnoreCase, true),
    ("StringLike", Family::StringLike, false),
    ("StringNotLike", Family::StringLike, true),
    ("ArnEquals", Family::Arn, false),
    ("ArnLike", Family::Arn, false),
    ("ArnNotEquals", Family::Arn, true),
    ("ArnNotLike", Family::Arn, true),
    ("NumericEquals", Family::Numeric(Cmp::Eq), false),
    ("NumericNotEquals", Family::Numeric(Cmp::Eq), true),
    ("NumericLessThan", Family::Numeric(Cmp::Lt), false),
    ("NumericLessThanEquals", Family::Numeric(Cmp::Le), false),
    ("NumericGreaterThan", Family::Numeric(Cmp::Gt), false),
    ("NumericGreaterThanEquals", Family::Numeric(Cmp::Ge), false),
    ("DateEquals", Family::Date(Cmp::Eq), false),
    ("DateNotEquals", Family::Date(Cmp::Eq), true),
    ("DateLessThan", Family::Date(Cmp::Lt), false),
    ("DateLessThanEquals", Family::Date(Cmp::Le), false),
    ("DateGreaterThan", Family::Date(Cmp::Gt), false),
    ("DateGreaterThanEquals", Family::Date(Cmp::Ge), false),
    ("Bool", Family::Bool, false),
    ("IpAddress", Family::Ip, false),
    ("NotIpAddress", Family::Ip, true),
    ("BinaryEquals", Family::Binary, false),
    ("Null", Family::Null, false),
];

/// Why an operator name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OperatorError {
    Unknown,
    NullWithQualifier,
}

impl Operator {
    /// Parses an operator name. Names compare case-insensitively.
    pub(crate) fn parse(name: &str) -> Result<Operator, OperatorError> {
        let (set, rest) = if let Some(r) = strip_prefix_ci(name, "ForAnyValue:") {
            (SetQualifier::ForAnyValue, r)
        } else if let Some(r) = strip_prefix_ci(name, "ForAllValues:") {
            (SetQualifier::ForAllValues, r)
        } else {
            (SetQualifier::None, name)
        };
        let lookup = |base: &str| BASES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(base));
        let (entry, if_exists) = match lookup(rest) {
            Some(e) => (e, false),
            None => match strip_suffix_ci(rest, "IfExists").and_then(lookup) {
                Some(e) => (e, true),
                None => return Err(OperatorError::Unknown),
            },
        };
        let (_, family, negated) = *entry;
        if family == Family::Null && (if_exists || set != SetQualifier::None) {
            return Err(OperatorError::NullWithQualifier);
        }
        Ok(Operator {
            family,
            negated,
            if_exists,
            set,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

/// An ARN pattern for the Arn* operators: each of the six colon-separated parts matched on its
/// own, with wildcards. A value that is not a six-part ARN (e.g. `*`) matches the whole string.
#[derive(Debug, Clone)]
pub(crate) enum ArnPattern {
    Parts(Vec<Pattern>),
    Whole(Pattern),
}

impl ArnPattern {
    fn compile(s: &str) -> ArnPattern {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        if parts.len() == 6 && parts[0] == "arn" {
            ArnPattern::Parts(parts.into_iter().map(Pattern::compile).collect())
        } else {
            ArnPattern::Whole(Pattern::compile(s))
        }
    }

    fn matches(&self, request: &str) -> bool {
        match self {
            ArnPattern::Whole(p) => p.matches(request),
            ArnPattern::Parts(parts) => {
                // The request's six parts, split by hand: str::splitn costs more than the
                // matching on ARNs this short.
                let mut rest = request;
                for (i, pattern) in parts.iter().enumerate() {
                    let part = if i + 1 == parts.len() {
                        rest
                    } else {
                        let Some(colon) = rest.bytes().position(|b| b == b':') else {
                            return false;
                        };
                        let part = &rest[..colon];
                        rest = &rest[colon + 1..];
                        part
                    };
                    if !pattern.matches(part) {
                        return false;
                    }
                }
                true
            }
        }
    }
}

/// A condition's policy values, compiled for its operator's family.
#[derive(Debug, Clone)]
pub(crate) enum Values {
    Exact(Vec<String>),
    /// Lowercased once; request values are folded at comparison.
    IgnoreCase(Vec<String>),
    Like(Vec<Pattern>),
    Arn(Vec<ArnPattern>),
    Numeric(Vec<f64>),
    Date(Vec<i64>),
    Bool(Vec<bool>),
    Ip(Vec<Cidr>),
    Null(Vec<bool>),
}

/// Lists of string values longer than this are searched (sorted at compile time) rather than
/// scanned: a policy may list thousands of values and a request carry thousands of context keys,
/// and each pair compared would cost a request that many string comparisons.
const SCAN_AT_MOST: usize = 16;

/// String values sorted and without repeats, for `Values::any_matches`' binary search.
fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort_unstable();
    values.dedup();
    values
}

/// What is wrong with one policy value of a typed operator.
pub(crate) fn expected(family: Family) -> &'static str {
    match family {
        Family::Numeric(_) => "a number",
        Family::Date(_) => "an ISO 8601 date or epoch seconds",
        Family::Bool | Family::Null => "\"true\" or \"false\"",
        Family::Ip => "an IPv4 or IPv6 address or CIDR block",
        _ => "a string",
    }
}

impl Values {
    /// Compiles the policy's values (already stringified) for `family`. `Err(i)` names the index
    /// of the first value that is not of the family's type.
    pub(crate) fn compile(family: Family, raw: &[String]) -> Result<Values, usize> {
        fn each<T>(raw: &[String], f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, usize> {
            raw.iter().enumerate().map(|(i, s)| f(s).ok_or(i)).collect()
        }
        let parse_bool = |s: &str| {
            if s.eq_ignore_ascii_case("true") {
                Some(true)
            } else if s.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        };
        Ok(match family {
            Family::String | Family::Binary => Values::Exact(sorted(raw.to_vec())),
            Family::StringIgnoreCase => Values::IgnoreCase(sorted(raw.iter().map(|s| s.to_lowercase()).collect())),
            Family::StringLike => Values::Like(raw.iter().map(|s| Pattern::compile(s)).collect()),
            Family::Arn => Values::Arn(raw.iter().map(|s| ArnPattern::compile(s)).collect()),
            Family::Numeric(_) => Values::Numeric(each(raw, parse_number)?),
            Family::Date(_) => Values::Date(each(raw, parse_date)?),
            Family::Bool => Values::Bool(each(raw, parse_bool)?),
            Family::Ip => Values::Ip(each(raw, |s| Cidr::parse(s.trim()))?),
            Family::Null => Values::Null(each(raw, parse_bool)?),
        })
    }

    /// Whether one request value matches any of the policy values under the positive form of
    /// the operator (values are ORed). A request value that is not of the operator's type
    /// matches nothing.
    pub(crate) fn any_matches(&self, family: Family, request: &str) -> bool {
        match self {
            Values::Exact(vs) if vs.len() > SCAN_AT_MOST => vs.binary_search_by(|v| v.as_str().cmp(request)).is_ok(),
            Values::Exact(vs) => vs.iter().any(|v| v == request),
            // The policy's values are lowercased already: an ASCII request value need only be
            // compared ignoring ASCII case.
            Values::IgnoreCase(vs) if request.is_ascii() && vs.len() <= SCAN_AT_MOST => {
                vs.iter().any(|v| v.eq_ignore_ascii_case(request))
            }
            Values::IgnoreCase(vs) => {
                let folded = if request.is_ascii() {
                    request.to_ascii_lowercase()
                } else {
                    request.to_lowercase()
                };
                vs.binary_search(&folded).is_ok()
            }
            Values::Like(ps) => ps.iter().any(|p| p.matches(request)),
            Values::Arn(ps) => ps.iter().any(|p| p.matches(request)),
            Values::Numeric(ns) => number_matches(family, ns, parse_number(request)),
            Values::Date(ds) => date_matches(family, ds, parse_date(request)),
            Values::Bool(bs) => {
                let r = if request.eq_ignore_ascii_case("true") {
                    true
                } else if request.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return false;
                };
                bs.contains(&r)
            }
            Values::Ip(cs) => {
                let Some(ip): Option<IpAddr> = parse_request_ip(request) else {
                    return false;
                };
                cs.iter().any(|c| c.contains(&ip))
            }
            // Null is decided on presence alone, never per value.
            Values::Null(_) => false,
        }
    }

    /// [`Values::any_matches`] for a time kept as a number: Date* and Numeric* operators compare
    /// it as one, the others read its text.
    pub(crate) fn time_matches(&self, family: Family, t: &Stamp) -> bool {
        match self {
            Values::Numeric(ns) => number_matches(family, ns, t.number()),
            Values::Date(ds) => date_matches(family, ds, t.millis()),
            _ => self.any_matches(family, t.text()),
        }
    }
}

fn number_matches(family: Family, policy: &[f64], request: Option<f64>) -> bool {
    let Family::Numeric(cmp) = family else { return false };
    request.is_some_and(|r| policy.iter().any(|n| cmp.holds(r, *n)))
}

fn date_matches(family: Family, policy: &[i64], request: Option<i64>) -> bool {
    let Family::Date(cmp) = family else { return false };
    request.is_some_and(|r| policy.iter().any(|d| cmp.holds(r, *d)))
}

fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    // Only plain decimal notation: no "inf", "NaN", hex.
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long lists are searched, short ones scanned: both answer as a comparison with each value
    /// would, whatever the values' order, repeats or case.
    #[test]
    fn long_and_short_value_lists_match_the_same() {
        for n in [3, SCAN_AT_MOST + 1, 500] {
            let mut raw: Vec<String> = (0..n).rev().map(|i| format!("Value-{i}")).collect();
            raw.push("Value-0".into());
            raw.push("ÉTÉ".into());
            raw.push("\u{212a}elvin".into()); // the Kelvin sign lowercases to an ASCII k
            let exact = Values::compile(Family::String, &raw).unwrap();
            let ignore = Values::compile(Family::StringIgnoreCase, &raw).unwrap();
            for (request, equal, ignoring_case) in [
                ("Value-0", true, true),
                (format!("Value-{}", n - 1).as_str(), true, true),
                ("value-0", false, true),
                ("VALUE-0", false, true),
                (format!("Value-{n}").as_str(), false, false),
                ("ÉTÉ", true, true),
                ("été", false, true),
                ("ete", false, false),
                ("kelvin", false, true),
                ("Value", false, false),
                ("", false, false),
            ] {
                assert_eq!(
                    exact.any_matches(Family::String, request),
                    equal,
                    "{n} values, {request}"
                );
                assert_eq!(
                    ignore.any_matches(Family::StringIgnoreCase, request),
                    ignoring_case,
                    "{n} values, {request} ignoring case"
                );
            }
        }
    }

    #[test]
    fn operator_names() {
        let op = Operator::parse("ForAllValues:StringEqualsIfExists").unwrap();
        assert_eq!(op.set, SetQualifier::ForAllValues);
        assert!(op.if_exists);
        assert_eq!(op.family, Family::String);
        assert!(Operator::parse("stringnotlike").unwrap().negated);
        assert_eq!(Operator::parse("StringSorta"), Err(OperatorError::Unknown));
        assert_eq!(
            Operator::parse("ForSomeValues:StringEquals"),
            Err(OperatorError::Unknown)
        );
        assert_eq!(Operator::parse("NullIfExists"), Err(OperatorError::NullWithQualifier));
        assert_eq!(Operator::parse("IfExists"), Err(OperatorError::Unknown));
        assert_eq!(Operator::parse(""), Err(OperatorError::Unknown));
        assert_eq!(Operator::parse("é"), Err(OperatorError::Unknown));
    }

    #[test]
    fn arn_patterns_match_per_part() {
        let p = ArnPattern::compile("arn:aws:iam::111122223333:role/*");
        assert!(p.matches("arn:aws:iam::111122223333:role/admin"));
        assert!(p.matches("arn:aws:iam::111122223333:role/a:b"));
        assert!(!p.matches("arn:aws:iam::444455556666:role/admin"));
        assert!(!p.matches("arn:aws:iam::111122223333"));
        let p = ArnPattern::compile("arn:aws:kms:*:111122223333:key/*");
        assert!(p.matches("arn:aws:kms:us-east-1:111122223333:key/abc"));
        // `*` inside one part never spans a colon.
        let p = ArnPattern::compile("arn:*:111122223333:key/x:y:z");
        assert!(!p.matches("arn:aws:kms:us-east-1:111122223333:key/x"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("7"), Some(7.0));
        assert_eq!(parse_number("7.5"), Some(7.5));
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("1e999"), None);
        assert_eq!(parse_number(""), None);
    }
}
