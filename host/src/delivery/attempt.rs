//! One HTTP attempt and what its outcome means for the next one.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::config::Subscription;
use super::envelope;

/// A `Retry-After` longer than this is cut to it: a buggy or hostile receiver must not park
/// a lane (and every conversation hashed to it) for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How much of an error response body is kept for logs and dead letters.
const ERROR_BODY_LIMIT: usize = 256;

/// How much of a success response body is read before dropping the connection.
const SUCCESS_BODY_LIMIT: usize = 64 * 1024;

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
}

/// POSTs the prepared request once, signed for this moment.
pub(crate) async fn send(
    client: &reqwest::Client,
    subscription: &Subscription,
    event_id: &str,
    prepared: &envelope::Prepared,
) -> Outcome {
    let body = &prepared.body;
    let signed =
        match envelope::sign_attempt(subscription, event_id, Timestamp::now().as_second(), body) {
            Ok(signed) => signed,
            // Validated at start, so this means a bug; retrying would fail the same way.
            Err(error) => {
                return Outcome::Permanent {
                    class: "signing".into(),
                    error: error.to_string(),
                };
            }
        };
    let mut request = client
        .post(subscription.url.clone())
        .header(CONTENT_TYPE, prepared.content_type)
        .header("webhook-id", event_id)
        .header("webhook-timestamp", signed.timestamp)
        .header("webhook-signature", signed.signature)
        .header("traceparent", envelope::traceparent(event_id));
    for (name, value) in &prepared.headers {
        request = request.header(*name, value);
    }
    let request = request.body(body.clone());
    match request.send().await {
        Ok(response) => classify_response(response).await,
        Err(error) => classify_error(&error),
    }
}

async fn classify_response(response: reqwest::Response) -> Outcome {
    let status = response.status();
    if status.is_success() {
        // Read (and ignore) a short body so the connection can go back to the pool;
        // the receiver has accepted the event whatever happens while reading.
        read_prefix(response, SUCCESS_BODY_LIMIT).await;
        return Outcome::Delivered;
    }
    let retry_after = retry_after(response.headers(), Timestamp::now());
    let class = format!("status {}", status.as_u16());
    let error = format!("{class}{}", error_excerpt(response).await);
    if is_retryable(status) {
        Outcome::Retry {
            class,
            error,
            retry_after,
        }
    } else {
        Outcome::Permanent { class, error }
    }
}

/// Statuses that say "later" rather than "never".
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
        )
}

/// The start of the response body, for the operator reading a dead letter.
async fn error_excerpt(response: reqwest::Response) -> String {
    let bytes = read_prefix(response, ERROR_BODY_LIMIT).await;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Up to about `limit` bytes of the body. A body read to its end lets the connection be
/// reused; a longer one is cut off (the connection is then closed, which is fine).
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(limit);
    bytes
}

fn classify_error(error: &reqwest::Error) -> Outcome {
    let class = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // Transport failures are transient as far as we can tell; the schedule bounds them.
    Outcome::Retry {
        class: class.into(),
        error: error_chain(error),
        retry_after: None,
    }
}

/// The error with its sources: reqwest's top-level message alone rarely says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    let jittered = scheduled.mul_f64(0.8 + 0.4 * unit_random());
    retry_after.map_or(jittered, |asked| asked.max(jittered))
}

/// A number in [0, 1). Jitter needs no cryptographic quality; `RandomState` is seeded
/// randomly per instance, which avoids adding a `rand` dependency.
pub(crate) fn unit_random() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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

    #[test]
    fn status_classes() {
        for code in [500, 502, 503, 408, 409, 429] {
            assert!(
                is_retryable(StatusCode::from_u16(code).expect("valid")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 410, 422, 301] {
            assert!(
                !is_retryable(StatusCode::from_u16(code).expect("valid")),
                "{code}"
            );
        }
    }
}
