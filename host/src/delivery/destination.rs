//! Destinations: subscriptions whose target is a sandboxed destination plugin (an ad
//! platform's conversion API, a CRM) rather than a URL. The plugin turns the event into
//! the platform's request; this sink maps its answer onto the dispatcher's retries and
//! dead letters, and keeps a receipt per conversion and destination so an operator can
//! see what each platform was told (`GET /v1/conversions/{id}`).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::envelope::{self, CloudEventsMode};
use super::outcome::Outcome;
use super::sink::{Attempt, Sink};
use crate::event::Event;

/// What a destination did with an event it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The platform took it; `receipt` is its id for the request (e.g. Google's
    /// `requestId`, Meta's `fbtrace_id`).
    Sent {
        /// The platform's receipt.
        receipt: String,
    },
    /// Not for this platform (organic, too old, no consent): nothing was sent.
    Skipped {
        /// Why, e.g. `no_click_id`.
        reason: String,
    },
}

/// Why a destination did not take an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Worth trying again (throttled, platform down), after `retry_after` if given.
    Retryable {
        /// What went wrong.
        reason: String,
        /// What the platform asked for.
        retry_after: Option<Duration>,
    },
    /// Trying this event again cannot help (invalid parameter).
    Permanent {
        /// What went wrong.
        reason: String,
    },
    /// No event can succeed until the operator acts (revoked token): dead-lettered, and
    /// the destination disabled.
    Disable {
        /// What went wrong.
        reason: String,
    },
    /// Too early: the platform takes it only from `at` (e.g. a click under 6 hours
    /// old). Waiting is not a failed attempt.
    NotBefore {
        /// When to try.
        at: Timestamp,
    },
}

/// One event as a destination is given it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The event id (`evt_…`): a platform's deduplication key when it has none better.
    pub event_id: &'a str,
    /// The event type, e.g. `conversion.recorded`.
    pub event_type: &'a str,
    /// The event as downstream tools receive it: the CloudEvents JSON document.
    pub cloudevent: &'a [u8],
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

/// A destination plugin as delivery sees it (the sandbox implements it).
#[async_trait]
pub trait Destination: Send + Sync + Debug {
    /// Hand one event to the platform.
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<Accepted, Refusal>;
}

/// What happened to a conversion at one destination, as kept and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The destination id.
    pub destination: String,
    /// `sent`, `skipped`, `scheduled`, `failed` (being retried) or `dead_lettered`.
    pub status: ReceiptStatus,
    /// The platform's receipt, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Why skipped, or the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When scheduled: the time it will be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Attempts so far.
    pub attempts: u32,
    /// When this was recorded.
    pub at: Timestamp,
}

/// The state of a conversion at a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// The platform accepted it.
    Sent,
    /// Nothing to send (reason given).
    Skipped,
    /// Held until `not_before`.
    Scheduled,
    /// The last attempt failed; it is being retried.
    Failed,
    /// Out of retries or refused for good.
    DeadLettered,
}

/// Where receipts are kept (the store; wired by the application).
#[async_trait]
pub trait ReceiptBook: Send + Sync + Debug {
    /// Keep `receipt` for `conversion_id`, replacing the destination's previous one.
    async fn keep(&self, conversion_id: &str, receipt: &Receipt);
}

/// A destination as a delivery target.
#[derive(Debug)]
pub(crate) struct DestinationSink {
    pub(crate) id: String,
    pub(crate) plugin: Arc<dyn Destination>,
    pub(crate) receipts: Arc<dyn ReceiptBook>,
}

#[async_trait]
impl Sink for DestinationSink {
    fn mode(&self) -> CloudEventsMode {
        // The plugin reads the whole document.
        CloudEventsMode::Structured
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome {
        let delivery = Delivery {
            event_id: attempt.event_id,
            event_type: attempt
                .event
                .map_or(envelope::PING_TYPE, |event| event.kind.as_str()),
            cloudevent: &attempt.prepared.body,
            attempt: attempt.attempt,
        };
        let answer = self.plugin.deliver(delivery).await;
        let outcome = outcome_of(&answer);
        if let (Some(event), Some(receipt)) =
            (attempt.event, self.receipt(&answer, attempt.attempt))
        {
            self.keep(event, &receipt).await;
        }
        let (counted, reason) = match &answer {
            Ok(Accepted::Sent { .. }) => ("sent", None),
            Ok(Accepted::Skipped { reason }) => ("skipped", Some(reason.as_str())),
            Err(Refusal::Retryable { .. }) => ("retried", None),
            Err(Refusal::NotBefore { .. }) => ("held", None),
            Err(Refusal::Permanent { .. } | Refusal::Disable { .. }) => ("rejected", None),
        };
        crate::metrics::destination_outcome(&self.id, counted, reason);
        outcome
    }

    async fn dead_lettered(&self, event: &Event, attempts: u32, error: &str) {
        let receipt = Receipt {
            destination: self.id.clone(),
            status: ReceiptStatus::DeadLettered,
            receipt: None,
            reason: Some(error.to_owned()),
            not_before: None,
            attempts,
            at: Timestamp::now(),
        };
        self.keep(event, &receipt).await;
    }
}

impl DestinationSink {
    fn receipt(&self, answer: &Result<Accepted, Refusal>, attempts: u32) -> Option<Receipt> {
        let (status, receipt, reason, not_before) = match answer {
            Ok(Accepted::Sent { receipt }) => {
                (ReceiptStatus::Sent, Some(receipt.clone()), None, None)
            }
            Ok(Accepted::Skipped { reason }) => {
                (ReceiptStatus::Skipped, None, Some(reason.clone()), None)
            }
            Err(Refusal::Retryable { reason, .. }) => {
                (ReceiptStatus::Failed, None, Some(reason.clone()), None)
            }
            Err(Refusal::NotBefore { at }) => (ReceiptStatus::Scheduled, None, None, Some(*at)),
            // Dead-lettered by the dispatcher, which then calls `dead_lettered`.
            Err(Refusal::Permanent { .. } | Refusal::Disable { .. }) => return None,
        };
        Some(Receipt {
            destination: self.id.clone(),
            status,
            receipt,
            reason,
            not_before,
            attempts,
            at: Timestamp::now(),
        })
    }

    async fn keep(&self, event: &Event, receipt: &Receipt) {
        // Receipts are per conversion; other events a destination takes have none.
        if let Some(conversion) = &event.conversion {
            self.receipts.keep(&conversion.id, receipt).await;
        }
    }
}

/// The dispatcher's reading of a destination's answer.
fn outcome_of(answer: &Result<Accepted, Refusal>) -> Outcome {
    match answer {
        Ok(_) => Outcome::Delivered,
        Err(Refusal::Retryable {
            reason,
            retry_after,
        }) => Outcome::Retry {
            class: "destination".into(),
            error: reason.clone(),
            retry_after: *retry_after,
        },
        Err(Refusal::Permanent { reason }) => Outcome::Permanent {
            class: "destination".into(),
            error: reason.clone(),
        },
        Err(Refusal::Disable { reason }) => Outcome::Disable {
            class: "destination".into(),
            error: reason.clone(),
        },
        Err(Refusal::NotBefore { at }) => Outcome::NotBefore { at: *at },
    }
}
