//! Request and answer shapes of the subscriptions API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CloudEventsMode;
use super::DeliveryError;
use super::outcome::Outcome;

/// `POST /v1/subscriptions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Id (lowercase letters, digits, `-`, `_`); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// `whsec_…` signing secret.
    pub secret: String,
    /// Event-type patterns (default `["*"]`).
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Channel ids (default: all).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Messages of history to include: 0 to 50.
    #[serde(default)]
    pub history: usize,
    /// Whether to include the provider payload.
    #[serde(default)]
    pub include_raw: bool,
    /// `structured` (default) or `binary`.
    #[serde(default)]
    pub mode: CloudEventsMode,
}

fn all_events() -> Vec<String> {
    vec!["*".to_owned()]
}

/// `PATCH /v1/subscriptions/{id}` body: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// New URL.
    pub url: Option<String>,
    /// New secret: starts a rotation (old and new both sign during `rotation_grace`).
    pub secret: Option<String>,
    /// How long the old secret keeps signing (default 24 h, at most 30 days), e.g. `"2h"`.
    #[serde(with = "humantime_serde")]
    pub rotation_grace: Option<Duration>,
    /// New event-type patterns.
    pub events: Option<Vec<String>>,
    /// New channel ids.
    pub channels: Option<Vec<String>>,
    /// New history depth: 0 to 50.
    pub history: Option<usize>,
    /// New `include_raw`.
    pub include_raw: Option<bool>,
    /// New CloudEvents mode.
    pub mode: Option<CloudEventsMode>,
}

/// What a test send got.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The test event's id (`webhook-id`).
    pub event_id: String,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// The failure, if any: `status <code>`, `timeout` or `refused` (the target could
    /// not be reached or is not allowed). Deliberately nothing more: no response body
    /// and no system error text, so the call cannot read internal services or tell a
    /// closed port from a filtered one. The details are logged.
    pub error: Option<String>,
    /// Whether a real event failing like this would be retried.
    pub retryable: Option<bool>,
}

impl TestResult {
    pub(crate) fn from_outcome(subscription: &str, event_id: String, outcome: Outcome) -> Self {
        let (delivered, failure, retryable) = match outcome {
            Outcome::Delivered => (true, None, None),
            Outcome::Retry { class, error, .. } => (false, Some((class, error)), Some(true)),
            Outcome::Permanent { class, error } | Outcome::Disable { class, error } => {
                (false, Some((class, error)), Some(false))
            }
            // A held ping reached its target, which answered "later".
            Outcome::NotBefore { .. } => (true, None, None),
        };
        let error = failure.map(|(class, error)| {
            tracing::info!(subscription, %error, "test send failed");
            public_class(&class)
        });
        Self {
            event_id,
            delivered,
            error,
            retryable,
        }
    }
}

/// Longest `rotation_grace` (the old secret keeps signing this long at most).
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Shortest signing key accepted through the API, in bytes once decoded (the same
/// floor as `[api] keys`).
pub const MIN_SECRET_BYTES: usize = 16;

/// Refuses an API-given `secret` that is not a Standard Webhooks key of at least
/// [`MIN_SECRET_BYTES`] bytes; the message never contains the secret.
pub(crate) fn check_secret(field: &str, secret: &str) -> Result<(), DeliveryError> {
    let key = omnigate_signature::standard_webhooks::decode_secret(secret)
        .map_err(|error| DeliveryError::Config(format!("`{field}`: {error}")))?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(DeliveryError::Config(format!(
            "`{field}` must be a Standard Webhooks key (whsec_<base64>) of at least {MIN_SECRET_BYTES} bytes"
        )));
    }
    Ok(())
}

/// What a test send's caller may learn of a failure.
fn public_class(class: &str) -> String {
    if class == "timeout" || class.starts_with("status ") {
        class.to_owned()
    } else {
        "refused".to_owned()
    }
}

/// API ids name Redis consumer groups and keys: keep them plain.
pub(crate) fn check_id(id: &str) -> Result<(), DeliveryError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(DeliveryError::Config(format!(
            "subscription id `{id}` must be 1-64 lowercase letters, digits, `-` or `_`"
        )))
    }
}
