//! Where a subscription's events go. Each kind of target is a [`Sink`]: an HTTP
//! receiver (Standard Webhooks), a Redis stream, and next, destination plugins. The
//! dispatcher prepares an event once in the CloudEvents representation the sink asks for,
//! then tries it with retries, dead letters and metrics that are the same for every kind.

use std::fmt::Debug;

use async_trait::async_trait;

use super::attempt;
use super::config::{CloudEventsMode, Subscription};
use super::envelope::Prepared;
use super::outcome::Outcome;

/// One attempt to hand a prepared event to a target.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The HTTP client every sink shares.
    pub(crate) client: &'a reqwest::Client,
    /// The subscription (its secrets, for a sink that signs).
    pub(crate) subscription: &'a Subscription,
    /// The event id (`webhook-id`).
    pub(crate) event_id: &'a str,
    /// What every attempt of the event sends.
    pub(crate) prepared: &'a Prepared,
    /// The attempt's W3C `traceparent`.
    pub(crate) traceparent: &'a str,
}

/// A kind of delivery target.
#[async_trait]
pub(crate) trait Sink: Send + Sync + Debug {
    /// The CloudEvents representation this sink sends for `subscription`.
    fn mode(&self, subscription: &Subscription) -> CloudEventsMode;

    /// One attempt; the dispatcher retries by the outcome.
    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome;
}

/// An HTTP receiver: a POST signed with Standard Webhooks, in the subscription's mode.
#[derive(Debug)]
pub(crate) struct HttpSink;

#[async_trait]
impl Sink for HttpSink {
    fn mode(&self, subscription: &Subscription) -> CloudEventsMode {
        subscription.mode
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome {
        attempt::send(
            attempt.client,
            attempt.subscription,
            attempt.event_id,
            attempt.prepared,
            attempt.traceparent,
        )
        .await
    }
}
