//! Dates for the Date* operators: ISO 8601 (`2024-01-31`, `2024-01-31T12:00:00Z`,
//! `2024-01-31T12:00:00.250+02:00`, `2024-01-31T12:00Z`) or epoch seconds (`1706702400`).
//! Every date becomes milliseconds since the Unix epoch, UTC.

/// Parses a policy or request date into epoch milliseconds, or `None` if it is not a date.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Epoch seconds. Bounded so the millisecond value cannot overflow.
        let secs: i64 = s.parse().ok()?;
        if secs.unsigned_abs() > 1_000_000_000_000 {
            return None;
        }
        return Some(secs * 1000);
    }
    parse_iso8601(s)
}

fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // Date part: YYYY-MM-DD.
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = num(&b[0..4])?;
    let month = num(&b[5..7])?;
    let day = num(&b[8..10])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    let rest = &b[10..];
    if rest.is_empty() {
        return Some(ms);
    }
    if rest[0] != b'T' && rest[0] != b't' && rest[0] != b' ' {
        return None;
    }
    let rest = &rest[1..];
    // Time part: hh:mm[:ss[.fff]]
    if rest.len() < 5 || rest[2] != b':' {
        return None;
    }
    let hour = num(&rest[0..2])?;
    let minute = num(&rest[3..5])?;
    let mut pos = 5;
    let mut second = 0;
    let mut millis = 0;
    if rest.get(pos) == Some(&b':') {
        second = num(rest.get(pos + 1..pos + 3)?)?;
        pos += 3;
        if rest.get(pos) == Some(&b'.') || rest.get(pos) == Some(&b',') {
            pos += 1;
            let start = pos;
            while pos < rest.len() && rest[pos].is_ascii_digit() {
                pos += 1;
            }
            let frac = &rest[start..pos];
            if frac.is_empty() {
                return None;
            }
            // Milliseconds from the first three digits; finer digits are truncated.
            let mut m = 0;
            for i in 0..3 {
                m = m * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            millis = m;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    // Zone: none (UTC), Z, +hh:mm, -hh:mm, +hhmm, +hh.
    let zone = &rest[pos..];
    let offset_min = match zone {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [h1, h2] => (num(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    Some(ms - offset_min * 60_000)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_and_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date("2020-03-01T00:00:00Z"), Some(1_583_020_800_000));
        assert_eq!(parse_date("1583020800"), Some(1_583_020_800_000));
        assert_eq!(parse_date("2020-03-01T02:00:00+02:00"), Some(1_583_020_800_000));
        assert_eq!(parse_date("2020-02-29T23:00:00-0100"), Some(1_583_020_800_000));
        assert_eq!(parse_date("2020-03-01T00:00:00.250Z"), Some(1_583_020_800_250));
        assert_eq!(parse_date("2020-03-01T00:00Z"), Some(1_583_020_800_000));
        assert_eq!(parse_date("2019-02-29"), None);
        assert_eq!(parse_date("2020-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2020-03-01T25:00:00Z"), None);
        assert_eq!(parse_date("2020-03-01X"), None);
        assert_eq!(parse_date(""), None);
    }
}
