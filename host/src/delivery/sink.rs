//! Where a subscription's events go. Each kind of target is a [`Sink`]: an HTTP
//! receiver (Standard Webhooks, `http.rs`), a Redis stream (`stream.rs`), and next,
//! destination plugins (`destination.rs`). The dispatcher prepares an event once in the CloudEvents
//! representation the sink asks for, then tries it with retries, dead letters and
//! metrics that are the same for every kind. A sink holds its target's own settings
//! (URL and secrets, stream key).

use std::fmt::Debug;

use async_trait::async_trait;

use super::envelope::{CloudEventsMode, Prepared};
use super::outcome::Outcome;
use crate::event::Event;

/// One attempt to hand a prepared event to a target.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The HTTP client every sink shares.
    pub(crate) client: &'a reqwest::Client,
    /// The event id (`webhook-id`).
    pub(crate) event_id: &'a str,
    /// The event itself; `None` for a test ping.
    pub(crate) event: Option<&'a Event>,
    /// Which attempt this is, from 1.
    pub(crate) attempt: u32,
    /// What every attempt of the event sends.
    pub(crate) prepared: &'a Prepared,
    /// The attempt's W3C `traceparent`.
    pub(crate) traceparent: &'a str,
}

/// A kind of delivery target.
#[async_trait]
pub(crate) trait Sink: Send + Sync + Debug {
    /// The CloudEvents representation this sink sends.
    fn mode(&self) -> CloudEventsMode;

    /// One attempt; the dispatcher retries by the outcome.
    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome;

    /// The event was dead-lettered after `attempts` (a sink that keeps receipts notes it).
    async fn dead_lettered(&self, _event: &Event, _attempts: u32, _error: &str) {}
}
