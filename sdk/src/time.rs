//! Timestamps as providers write them, to and from contract timestamps (milliseconds
//! since the Unix epoch, UTC).
//!
//! The calendar work is done by two small, well-kept crates that add little to a
//! component: [`humantime`] for RFC 3339 and [`httpdate`] for HTTP dates. This module only
//! adapts them to milliseconds and to RFC 3339's numeric offsets (`+01:00`), which
//! `humantime` does not read. Times before 1970 are out of range: no provider sends them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first instant `humantime` cannot format: 10000-01-01T00:00:00Z, in ms.
const YEAR_10000_MS: i64 = 253_402_300_800_000;

/// Parses an RFC 3339 timestamp (`2026-11-24T10:00:00Z`, `2026-11-24T11:00:00.250+01:00`)
/// into milliseconds since the Unix epoch; digits past milliseconds are truncated and a
/// leap second `:60` counts as `:59`. `None` if it is not one, or before 1970 in the
/// timestamp's own offset.
pub fn parse_rfc3339(value: &str) -> Option<i64> {
    let value = value.trim();
    if !value.is_ascii() {
        return None;
    }
    // `t`/`z` are allowed by RFC 3339; humantime only reads upper case.
    let value = value.to_ascii_uppercase();
    let (local, offset_minutes) = split_offset(&value)?;
    // humantime accepts a trailing `.` with no digits; RFC 3339 does not.
    if local.ends_with('.') {
        return None;
    }
    let local_ms = millis(humantime::parse_rfc3339_weak(local).ok()?)?;
    Some(local_ms - offset_minutes * 60_000)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC: `2026-11-24T10:00:00Z`,
/// with a fraction only when there is one (`…00.25Z`). `None` before 1970 or after 9999.
pub fn format_rfc3339(millis: i64) -> Option<String> {
    if !(0..YEAR_10000_MS).contains(&millis) {
        return None;
    }
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).ok()?);
    let formatted = humantime::format_rfc3339(at).to_string();
    // humantime writes nine fraction digits whenever there is a fraction.
    Some(match formatted.strip_suffix('Z') {
        Some(body) if body.contains('.') => format!("{}Z", body.trim_end_matches('0')),
        _ => formatted,
    })
}

/// Parses an HTTP date, as in `Retry-After`, into milliseconds since the Unix epoch:
/// IMF-fixdate (RFC 9110, `Tue, 24 Nov 2026 10:01:30 GMT`) and the two obsolete formats
/// recipients must still accept (RFC 850, asctime). `None` if it is not one.
pub fn parse_http_date(value: &str) -> Option<i64> {
    millis(httpdate::parse_http_date(value.trim()).ok()?)
}

/// `value` without its zone designator, and the offset in minutes east of UTC. RFC 3339
/// requires a zone: `Z` or `±HH:MM`.
fn split_offset(value: &str) -> Option<(&str, i64)> {
    if let Some(local) = value.strip_suffix('Z') {
        return Some((local, 0));
    }
    let at = value.len().checked_sub(6)?;
    let (local, zone) = value.split_at(at);
    let zone = zone.as_bytes();
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone[3] != b':' || !zone[1..3].iter().chain(&zone[4..]).all(u8::is_ascii_digit) {
        return None;
    }
    let digits = |pair: &[u8]| i64::from(pair[0] - b'0') * 10 + i64::from(pair[1] - b'0');
    let (hours, minutes) = (digits(&zone[1..3]), digits(&zone[4..6]));
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((local, sign * (hours * 60 + minutes)))
}

fn millis(at: SystemTime) -> Option<i64> {
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_514_400_000; // 2026-11-24T10:00:00Z

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-11-24T10:00:00Z"), Some(T));
        assert_eq!(parse_rfc3339(" 2026-11-24t10:00:00z "), Some(T));
        assert_eq!(parse_rfc3339("2026-11-24 10:00:00Z"), Some(T));
        assert_eq!(
            parse_rfc3339("2026-11-24T11:00:00.250+01:00"),
            Some(T + 250)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T07:30:00.1234567-02:30"),
            Some(T + 123)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.999Z"), Some(999));
        // Local time in 1970, UTC just before: still representable as a timestamp.
        assert_eq!(parse_rfc3339("1970-01-01T00:30:00+01:00"), Some(-1_800_000));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2016-12-31T23:59:59Z")
        );
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "",
            "yesterday",
            "2026-11-24 10:00:00",
            "2026-11-24T10:00:00",
            "2026-11-24T10:00:00+0100",
            "2026-11-24T10:00:00.Z",
            "2026-13-24T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:00:00+24:00",
            "2026-11-24T10:00:00Zjunk",
            "２026-11-24T10:00:00Z",
            "1969-12-31T23:59:59.999Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_rfc3339(T).as_deref(), Some("2026-11-24T10:00:00Z"));
        assert_eq!(
            format_rfc3339(T + 5).as_deref(),
            Some("2026-11-24T10:00:00.005Z")
        );
        assert_eq!(
            format_rfc3339(T + 250).as_deref(),
            Some("2026-11-24T10:00:00.25Z")
        );
        assert_eq!(format_rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            format_rfc3339(YEAR_10000_MS - 1).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(format_rfc3339(-1), None);
        assert_eq!(format_rfc3339(YEAR_10000_MS), None);
        assert_eq!(format_rfc3339(i64::MAX), None);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Tue, 24 Nov 2026 10:01:30 GMT"),
            Some(T + 90_000)
        );
        assert_eq!(
            parse_http_date("Tuesday, 24-Nov-26 10:01:30 GMT"),
            Some(T + 90_000)
        );
        assert_eq!(
            parse_http_date("Tue Nov 24 10:01:30 2026"),
            Some(T + 90_000)
        );
        assert_eq!(parse_http_date("Tue, 24 Nov 2026 10:01:30 UTC"), None);
        assert_eq!(parse_http_date("Tue, 24 Foo 2026 10:01:30 GMT"), None);
        assert_eq!(parse_http_date("120"), None);
    }

    #[test]
    fn agrees_with_jiff() {
        // Every 7919 minutes and 13 ms across 1970–2100, both directions.
        let (start, end) = (86_400_000_i64, 4_102_444_800_000_i64);
        let mut ms = start;
        while ms < end {
            let ours = format_rfc3339(ms).expect("in range");
            let theirs = jiff::Timestamp::from_millisecond(ms).expect("in range");
            assert_eq!(ours, theirs.to_string());
            assert_eq!(parse_rfc3339(&ours), Some(ms), "{ours}");
            let offset = theirs.display_with_offset(jiff::tz::offset(-5)).to_string();
            assert_eq!(parse_rfc3339(&offset), Some(ms), "{offset}");
            ms += 7919 * 60_000 + 13;
        }
    }
}
