//! A record's time: RFC 3339 in UTC with milliseconds, as `humantime::format_rfc3339_millis`
//! writes it. The date and time of day change once a second, so each thread formats them once a
//! second and a record only adds its milliseconds (formatting it all took ~600 of a
//! GenerateDataKey's ~87k instructions).

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z: humantime can't write a later time (its `Display` fails, and
/// `to_string` would panic), so later ones are written as this second.
pub const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// `at` as `2026-11-23T21:15:21.123Z`; a clock past year 9999 gives the last second of that year.
pub fn rfc3339_millis(at: SystemTime) -> String {
    thread_local! {
        /// The second last formatted, and its text up to the seconds ("2026-11-23T21:15:21").
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = match since.as_secs() {
        secs @ ..=LAST_RFC3339_SECOND => (secs, since.subsec_millis()),
        _ => (LAST_RFC3339_SECOND, 999),
    };
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            let mut whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
            whole.pop(); // the 'Z'
            *text = whole;
            *second = secs;
        }
        let mut out = String::with_capacity(text.len() + 5);
        out.push_str(text);
        out.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            out.push(char::from(b'0' + digit as u8));
        }
        out.push('Z');
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same text as humantime's, across second, minute, day and year boundaries, and for
    /// instants out of order (the cache is one second per thread), up to the last minutes of year
    /// 9999 (past it humantime writes nothing).
    #[test]
    fn a_clock_past_year_9999_gives_its_last_millisecond_not_a_panic() {
        for secs in [LAST_RFC3339_SECOND + 1, u64::MAX / 2] {
            assert_eq!(
                rfc3339_millis(UNIX_EPOCH + Duration::from_secs(secs)),
                "9999-12-31T23:59:59.999Z"
            );
        }
    }

    #[test]
    fn written_as_humantime_writes_it() {
        let starts = [
            0u64,
            59,
            86_399,
            951_782_399,
            1_703_980_799,
            1_795_000_000,
            253_402_300_000,
        ];
        for start in starts {
            for ms in [0u64, 1, 9, 10, 99, 100, 999, 1000, 1001, 1999, 2000, 61_123, 500] {
                let at = UNIX_EPOCH + Duration::from_millis(start * 1000 + ms);
                assert_eq!(
                    rfc3339_millis(at),
                    humantime::format_rfc3339_millis(at).to_string(),
                    "{start} s + {ms} ms"
                );
            }
        }
    }
}
