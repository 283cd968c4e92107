//! Durations on the command line and wall-clock times in the output (UTC), through
//! `humantime`, which works on std's `Duration` and `SystemTime` as the rest of the CLI does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The duration forms, as `happen --help` lists them.
pub(crate) const HELP: &str = "\
Durations (--timeout, --for, --wait, --quiet, --idle): a number and a unit, as in `500ms`,
`10s`, `1.5s`, `2m`, `1h`, `1d`; several together, as in `1m30s` or `2h 5min`; or a plain
number of seconds, as in `1.5`.";

/// The forms a duration flag takes, for error messages.
const FORMS: &str = "write e.g. `500ms`, `10s`, `1.5s`, `1m30s` or a number of seconds (`1.5`)";

/// Parses a duration flag: a number and a unit (`500ms`, `10s`, `1.5s`, `2m`, `1h`, `1d`),
/// several of them (`1m30s`, `2h 5min`), or a plain number of seconds (`1.5`, `10`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // humantime wants a unit; a bare number of seconds was accepted before it came in
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("`{s}` is not a number of seconds; {FORMS}"))?;
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}; {FORMS}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration: {e}; {FORMS}"))
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The last microsecond of 9999-12-31 (UTC), the latest time RFC 3339 can write.
const LAST_US: u64 = 253_402_300_800_000_000 - 1;

/// A time in microseconds since the epoch (a `--record` file may hold any number: later
/// than RFC 3339 can write is shown as its last microsecond).
fn system_time(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.min(LAST_US))
}

/// `17:29:03.123` (UTC) of a time in microseconds since the epoch.
pub(crate) fn clock(us: u64) -> String {
    // `2026-11-29T17:29:03.123Z`: the part between `T` and `Z`
    let full = humantime::format_rfc3339_millis(system_time(us)).to_string();
    let start = full.find('T').map_or(0, |t| t + 1);
    full[start..].trim_end_matches('Z').to_owned()
}

/// `2026-11-29T17:29:03.123456Z` of a time in microseconds since the epoch.
pub(crate) fn rfc3339(us: u64) -> String {
    humantime::format_rfc3339_micros(system_time(us)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Result<Duration, String> {
        Ok(Duration::from_secs_f64(s))
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), secs(0.5));
        assert_eq!(parse_duration("10s"), secs(10.0));
        assert_eq!(parse_duration("1.5s"), secs(1.5));
        assert_eq!(parse_duration("2m"), secs(120.0));
        assert_eq!(parse_duration("1h"), secs(3600.0));
        assert_eq!(parse_duration("1m30s"), secs(90.0));
        assert_eq!(parse_duration("2h 5min"), secs(7500.0));
        assert_eq!(parse_duration("1d"), secs(86_400.0));
        assert_eq!(parse_duration(" 250ms "), secs(0.25));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("1.5"), secs(1.5));
        assert_eq!(parse_duration("10"), secs(10.0));
        assert_eq!(parse_duration(".5"), secs(0.5));
    }

    #[test]
    fn the_flags_defaults_parse() {
        for d in ["10s", "1s", "250ms", "2s"] {
            assert!(parse_duration(d).is_ok(), "{d}");
        }
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        for (bad, says) in [
            ("ten", "`ten` is not a duration"),
            ("5x", "unknown time unit \"x\""),
            ("5 parsecs", "unknown time unit \"parsecs\""),
            ("-1s", "`-1s` is not a duration"),
            ("1.2.3", "`1.2.3` is not a number of seconds"),
            ("", "value was empty"),
            ("1s5", "time unit needed"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(says), "`{bad}`: {e}");
            assert!(e.contains("`500ms`"), "`{bad}`: {e}");
        }
        let e = parse_duration("99999999999999999999999").unwrap_err();
        assert!(e.contains("`99999999999999999999999`: "), "{e}");
    }

    #[test]
    fn times_are_utc_rfc3339_with_microseconds() {
        // 2026-11-29T17:29:03.123456Z
        let us = 1_795_973_343_123_456;
        assert_eq!(rfc3339(us), "2026-11-29T17:29:03.123456Z");
        assert_eq!(clock(us), "17:29:03.123");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(clock(0), "00:00:00.000");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(clock(u64::MAX), "23:59:59.999");
    }

    #[test]
    fn times_parse_back() {
        for us in [0, 951_782_400_000_000, 1_795_973_343_123_456, now_us()] {
            let back = humantime::parse_rfc3339(&rfc3339(us)).expect("our own output parses");
            let back_us = back.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
            assert_eq!(back_us, us);
        }
        assert!(humantime::parse_rfc3339("2026-11-29 17:29").is_err());
    }
}
