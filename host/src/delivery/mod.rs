//! Delivery of normalized events to downstream tools (contract: ARCHITECTURE.md,
//! "Delivery to downstream tools").
//!
//! Each event goes to every HTTP subscription whose filter matches, as a CloudEvents 1.0
//! structured JSON body signed with Standard Webhooks headers. Delivery is at-least-once
//! and ordered per conversation: a subscription has `lanes` sequential workers and a
//! conversation always uses the same lane, so one slow conversation (or subscription)
//! does not hold up the others. Failed attempts are retried on `retry_schedule` (honouring
//! `Retry-After`), then dead-lettered.
//!
//! Flow: the pipeline [`Delivery::reserve`]s room for its events *before* the store
//! records them (so overload pushes back on the provider instead of growing memory), then
//! [`Reservation::publish`]es them. A reserved slot is released only when the event is
//! finished on every matching subscription, so `max_in_flight` bounds the whole delivery.
//!
//! This Foundation version keeps pending events in memory: a crash loses them. The
//! boundary for the durable outbox is [`Reservation::publish`] (append to the outbox) and
//! the lanes (consume from it); the public API does not change.

mod attempt;
mod config;
mod dispatcher;
mod envelope;
mod filter;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

pub use config::{DeliverySettings, SubscriptionConfig};

use dispatcher::{Job, Lane, Route, Shared, Ticket};

/// Why delivery could not start or take events.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The settings or a subscription are invalid; the message names which.
    #[error("invalid delivery configuration: {0}")]
    Config(String),
    /// `max_in_flight` events are pending and no room freed up in time.
    #[error("delivery is overloaded: too many events pending")]
    Overloaded,
    /// [`Delivery::shutdown`] was called.
    #[error("delivery is shutting down")]
    ShuttingDown,
    /// [`Delivery::start`] was called outside a tokio runtime.
    #[error("delivery must start inside a tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built (e.g. no TLS crypto provider installed).
    #[error("cannot build the delivery HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Counters since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStats {
    /// Successful deliveries (one per event and subscription).
    pub delivered: u64,
    /// Failed attempts, retried or not.
    pub failed_attempts: u64,
    /// Deliveries given up and kept as dead letters.
    pub dead_lettered: u64,
    /// Events dropped undelivered by shutdown.
    pub abandoned: u64,
    /// Events published and not yet finished on every matching subscription.
    pub pending: usize,
}

/// A delivery given up: permanently refused or out of retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Subscription id.
    pub subscription: String,
    /// Event id (also the `webhook-id`).
    pub event_id: String,
    /// Conversation of the event.
    pub conversation_id: String,
    /// Event type, e.g. `message.received`.
    pub event_type: String,
    /// Attempts made (0 when the event could not even be prepared).
    pub attempts: u32,
    /// Error of the last attempt.
    pub last_error: String,
    /// When it was given up.
    pub at: Timestamp,
}

/// Handle to the delivery workers; cheap to clone. Dropping every handle without
/// [`Delivery::shutdown`] stops the workers abruptly.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Vec<Route>,
    capacity: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    shared: Arc<Shared>,
    closed: AtomicBool,
    cancel: watch::Sender<bool>,
    /// Taken by the first shutdown.
    lanes: parking_lot::Mutex<Option<JoinSet<()>>>,
    history_depth: usize,
    wants_raw: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subscriptions", &self.inner.routes.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Delivery {
    /// Validates the configuration and spawns every subscription's lanes on the current
    /// tokio runtime.
    pub fn start(
        settings: DeliverySettings,
        subscriptions: Vec<SubscriptionConfig>,
    ) -> Result<Delivery, DeliveryError> {
        settings.validate()?;
        let subscriptions = config::validate_all(subscriptions)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DeliveryError::NoRuntime)?;
        let client = http_client(settings.timeout)?;
        let shared = Arc::new(Shared::default());
        let (cancel, cancel_rx) = watch::channel(false);
        let schedule: Arc<[Duration]> = settings.retry_schedule.into();
        let mut tasks = JoinSet::new();
        let history_depth = subscriptions.iter().map(|s| s.history).max().unwrap_or(0);
        let wants_raw = subscriptions.iter().any(|s| s.include_raw);
        let routes = subscriptions
            .into_iter()
            .map(|subscription| {
                let subscription = Arc::new(subscription);
                let lanes = (0..settings.lanes)
                    .map(|_| {
                        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                        let lane = Lane {
                            subscription: subscription.clone(),
                            client: client.clone(),
                            schedule: schedule.clone(),
                            shared: shared.clone(),
                            cancel: cancel_rx.clone(),
                        };
                        tasks.spawn_on(lane.run(receiver), &runtime);
                        sender
                    })
                    .collect();
                Route {
                    subscription,
                    lanes,
                }
            })
            .collect::<Vec<_>>();
        tracing::info!(
            subscriptions = routes.len(),
            lanes = settings.lanes,
            "delivery started (in-memory queue)"
        );
        Ok(Delivery {
            inner: Arc::new(Inner {
                routes,
                capacity: Arc::new(Semaphore::new(settings.max_in_flight)),
                max_in_flight: settings.max_in_flight,
                timeout: settings.timeout,
                shared,
                closed: AtomicBool::new(false),
                cancel,
                lanes: parking_lot::Mutex::new(Some(tasks)),
                history_depth,
                wants_raw,
            }),
        })
    }

    /// Reserve room for `n` events before the store records them (backpressure: waits
    /// while `max_in_flight` events are pending; returns [`DeliveryError::Overloaded`]
    /// after `wait`, or at once if `n` exceeds `max_in_flight` since it could never fit).
    pub async fn reserve(&self, n: usize, wait: Duration) -> Result<Reservation, DeliveryError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(DeliveryError::ShuttingDown);
        }
        let count = u32::try_from(n)
            .ok()
            .filter(|_| n <= inner.max_in_flight)
            .ok_or(DeliveryError::Overloaded)?;
        let acquire = inner.capacity.clone().acquire_many_owned(count);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation {
                permit,
                inner: inner.clone(),
            }),
            // Closed by shutdown while waiting.
            Ok(Err(_)) => Err(DeliveryError::ShuttingDown),
            Err(_) => Err(DeliveryError::Overloaded),
        }
    }

    /// Largest `history` any subscription wants (the pipeline loads that many messages).
    pub fn history_depth(&self) -> usize {
        self.inner.history_depth
    }

    /// Whether any subscription wants `raw`.
    pub fn wants_raw(&self) -> bool {
        self.inner.wants_raw
    }

    /// Stop taking events, give in-flight deliveries up to `grace` to finish, then return
    /// how many events were still pending (logged).
    ///
    /// During `grace` the lanes keep working (first attempts and retries). When it ends,
    /// waiting retries and queued events are abandoned; an attempt already on the wire is
    /// allowed to finish, so this returns within `grace` plus the attempt `timeout`.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        // Wakes reservations waiting for room.
        inner.capacity.close();
        let abandoned_before = inner.shared.abandoned();
        inner
            .shared
            .wait_idle(tokio::time::Instant::now() + grace)
            .await;
        // Err only when no lane is listening any more, which is what we want anyway.
        let _ = inner.cancel.send(true);
        let lanes = inner.lanes.lock().take();
        if let Some(lanes) = lanes {
            stop_lanes(lanes, inner.timeout).await;
        }
        let abandoned = inner.shared.abandoned().saturating_sub(abandoned_before);
        let left = usize::try_from(abandoned)
            .unwrap_or(usize::MAX)
            .saturating_add(inner.shared.pending());
        if left > 0 {
            tracing::warn!(
                undelivered = left,
                "delivery shut down with events undelivered"
            );
        } else {
            tracing::info!("delivery shut down; nothing pending");
        }
        left
    }

    /// Counters for metrics/tests: delivered, failed attempts, dead-lettered, pending.
    pub fn stats(&self) -> DeliveryStats {
        self.inner.shared.stats()
    }

    /// Dead letters kept in memory (bounded, newest 10_000), newest last.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.shared.dead_letters()
    }
}

/// Waits for cancelled lanes to finish their current attempt (bounded by the attempt
/// timeout, plus a margin for the response), then aborts any that did not.
async fn stop_lanes(mut lanes: JoinSet<()>, attempt_timeout: Duration) {
    let limit = attempt_timeout + Duration::from_secs(1);
    let drained =
        tokio::time::timeout(limit, async { while lanes.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("delivery lanes did not stop in time; aborting them");
        lanes.shutdown().await;
    }
}

/// One client for every subscription: connections are pooled and kept alive per host.
/// Redirects are not followed: a redirect could send a signed event somewhere the
/// operator never configured.
fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(envelope::USER_AGENT)
        .build()
}

/// Room reserved for a number of events; see [`Delivery::reserve`]. Dropping it unused
/// releases the room.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("events", &self.len())
            .finish()
    }
}

impl Reservation {
    /// How many events this reservation has room for.
    pub fn len(&self) -> usize {
        self.permit.num_permits()
    }

    /// Whether it has room for no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands the events to every matching subscription. Never fails and never blocks.
    /// Room not used by `events` is released; publishing more events than reserved is a
    /// caller bug: the extra events take free room if there is any and are delivered
    /// anyway (the store already holds them), which may exceed `max_in_flight`.
    pub fn publish(mut self, events: Vec<Arc<crate::event::Event>>) {
        let inner = &self.inner;
        for event in events {
            let permit = self
                .permit
                .split(1)
                .or_else(|| inner.capacity.clone().try_acquire_owned().ok());
            if permit.is_none() {
                tracing::warn!(event_id = %event.id, "event published beyond its reservation");
            }
            let routes: Vec<&Route> = inner
                .routes
                .iter()
                .filter(|route| route.subscription.filter.matches(&event))
                .collect();
            let ticket = Arc::new(Ticket::new(permit, routes.len(), inner.shared.clone()));
            for route in routes {
                route.dispatch(Job {
                    event: event.clone(),
                    ticket: ticket.clone(),
                });
            }
        }
        // `self.permit` (what is left) is dropped here, releasing unused room.
    }
}
