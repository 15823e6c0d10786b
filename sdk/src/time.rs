//! RFC 3339 timestamps, as providers send them, to and from contract timestamps
//! (milliseconds since the Unix epoch, UTC).

/// Parses an RFC 3339 timestamp with an offset (`2026-11-24T10:00:00Z`,
/// `2026-11-24T11:00:00.250+01:00`) into milliseconds since the Unix epoch.
/// `None` if it is not one.
pub fn parse_rfc3339(value: &str) -> Option<i64> {
    value.trim().parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC
/// (`2026-11-24T10:00:00Z`, with a fraction only when there is one).
/// `None` if the instant is outside the years -9999..=9999.
pub fn format_rfc3339(millis: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(millis).ok().map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_514_400_000; // 2026-11-24T10:00:00Z

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-11-24T10:00:00Z"), Some(T));
        assert_eq!(parse_rfc3339("2026-11-24T11:00:00.250+01:00"), Some(T + 250));
        assert_eq!(parse_rfc3339("2026-11-24 10:00:00"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_rfc3339(T).as_deref(), Some("2026-11-24T10:00:00Z"));
        assert_eq!(format_rfc3339(T + 5).as_deref(), Some("2026-11-24T10:00:00.005Z"));
        assert_eq!(format_rfc3339(i64::MAX), None);
    }
}
