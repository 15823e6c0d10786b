//! What one delivery attempt ended with, and when to try again.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use jiff::Timestamp;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// A `Retry-After` longer than this is cut to it: a buggy or hostile receiver must not park
/// a lane (and every conversation hashed to it) for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What one attempt ended with.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 2xx.
    Delivered,
    /// Worth trying again (timeout, connection error, 5xx, 408, 409, 429).
    Retry {
        /// Short class for logs: `timeout`, `connect`, `status 503`, ….
        class: String,
        /// Human-readable detail.
        error: String,
        /// What the receiver asked for with `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (other statuses, unsignable request).
    Permanent {
        /// Short class for logs.
        class: String,
        /// Human-readable detail.
        error: String,
    },
    /// No event can succeed until the operator acts (a destination's revoked token):
    /// dead-lettered like `Permanent`, and the subscription disabled at once.
    Disable {
        /// Short class for logs.
        class: String,
        /// Human-readable detail.
        error: String,
    },
    /// The target takes the event only from `at` (a destination's hold): waited for,
    /// not counted as a failed attempt.
    NotBefore {
        /// When to try again.
        at: Timestamp,
    },
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`; capped.
pub(crate) fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(value)
            .ok()?;
        // A date in the past means "now".
        Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The wait before the next attempt: the scheduled delay with ±20 % jitter, or what the
/// receiver asked for if that is longer.
pub(crate) fn next_delay(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    let jittered = jitter(scheduled);
    retry_after.map_or(jittered, |asked| asked.max(jittered))
}

/// The longest wait of [`until_stopped`].
const MAX_STOPPED_WAIT: Duration = Duration::from_secs(30);

/// The waits of a loop that retries until delivery stops (a dead letter, events the
/// outbox refused): from `first`, doubling with jitter, at most 30 s, without end.
pub(crate) fn until_stopped(first: Duration) -> impl Iterator<Item = Duration> {
    let delays = ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(MAX_STOPPED_WAIT)
        .without_max_times()
        .with_jitter()
        .build();
    delays.chain(std::iter::repeat(MAX_STOPPED_WAIT))
}

/// `base` ±20 %, so instances do not retry in lockstep.
pub(crate) fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(value).expect("valid header"),
        );
        headers
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().expect("valid");
        assert_eq!(retry_after(&headers("0"), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&headers(" 120 "), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&headers("Tue, 24 Nov 2026 10:01:30 GMT"), now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&headers("Tue, 24 Nov 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers("99999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn delay_has_bounded_jitter_and_honours_retry_after() {
        let base = Duration::from_secs(100);
        for _ in 0..200 {
            let delay = next_delay(base, None);
            assert!(
                delay >= Duration::from_secs(80) && delay <= Duration::from_secs(120),
                "{delay:?}"
            );
        }
        assert_eq!(
            next_delay(base, Some(Duration::from_secs(500))),
            Duration::from_secs(500)
        );
        assert!(next_delay(base, Some(Duration::ZERO)) >= Duration::from_secs(80));
    }
}
