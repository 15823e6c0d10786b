//! The HTTP sink: one signed POST per attempt (Standard Webhooks), and what the
//! receiver's answer means for the next one.

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use async_trait::async_trait;

use super::envelope::{self, CloudEventsMode, PreviousSecret};
use super::outcome::{Outcome, retry_after};
use super::sink::{Attempt, Sink};
use crate::secret::Secret;

/// How much of an error response body is kept for logs and dead letters.
const ERROR_BODY_LIMIT: usize = 256;

/// How much of a success response body is read before dropping the connection.
const SUCCESS_BODY_LIMIT: usize = 64 * 1024;

/// An HTTP receiver: its URL, its signing secrets and the CloudEvents mode it takes.
#[derive(Debug)]
pub(crate) struct HttpSink {
    pub(crate) url: reqwest::Url,
    pub(crate) secret: Secret,
    /// While a secret rotates: the old one, until it expires.
    pub(crate) previous_secret: Option<PreviousSecret>,
    pub(crate) mode: CloudEventsMode,
}

#[async_trait]
impl Sink for HttpSink {
    fn mode(&self) -> CloudEventsMode {
        self.mode
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome {
        send(
            attempt.client,
            self,
            attempt.event_id,
            attempt.prepared,
            attempt.traceparent,
        )
        .await
    }
}

/// POSTs the prepared request once, signed for this moment, with `traceparent`.
async fn send(
    client: &reqwest::Client,
    target: &HttpSink,
    event_id: &str,
    prepared: &envelope::Prepared,
    traceparent: &str,
) -> Outcome {
    let body = &prepared.body;
    let signed = match envelope::sign_attempt(
        &target.secret,
        target.previous_secret.as_ref(),
        event_id,
        Timestamp::now().as_second(),
        body,
    ) {
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
        .post(target.url.clone())
        .header(CONTENT_TYPE, prepared.content_type)
        .header("webhook-id", event_id)
        .header("webhook-timestamp", signed.timestamp)
        .header("webhook-signature", signed.signature)
        .header("traceparent", traceparent);
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
    } else if crate::netguard::is_refusal(error) {
        // The target resolved to an address outside `[delivery] allow_networks`.
        "refused"
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

#[cfg(test)]
mod tests {
    use super::*;

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
