//! Delivery of normalized events to downstream tools (design and contract:
//! docs/delivery.md).
//!
//! Each event goes to every HTTP subscription whose filter matches, as a CloudEvents 1.0
//! structured JSON body signed with Standard Webhooks headers. Delivery is at-least-once
//! and ordered per conversation per subscription, with no head-of-line blocking across
//! conversations or subscriptions. Failed attempts are retried on `retry_schedule`
//! (honouring `Retry-After`), then dead-lettered.
//!
//! Flow: the pipeline [`Delivery::reserve`]s room for its events *before* the store
//! records them (so overload pushes back on the provider instead of growing memory), then
//! [`Reservation::publish`]es them: that appends them to the [outbox](outbox) — on
//! Redis, durably, before the provider's webhook is acknowledged. Workers (one per
//! subscription and outbox partition, see [`worker`]) consume the outbox.

pub mod api_types;
mod config;
pub mod destination;
mod dispatcher;
mod envelope;
mod filter;
mod http;
pub mod metrics;
pub mod outbox;
mod outcome;
mod registry;
mod sink;
mod stream;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

pub use config::{DeliverySettings, DestinationTarget, SubscriptionConfig, SubscriptionKind};
pub use envelope::CloudEventsMode;
pub use outbox::OutboxError;

use dispatcher::{Deliverer, Phase, Shared};
use outbox::{Append, Outbox, Record};
use registry::Registry;
pub use registry::{Origin, SubscriptionView};
use worker::Timing;

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
    /// The outbox could not be opened or did not store the events.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// No subscription has this id.
    #[error("no subscription `{0}`")]
    UnknownSubscription(String),
    /// The subscription comes from the configuration file: change it there.
    #[error("subscription `{0}` is configured in the file and read-only through the API")]
    ReadOnly(String),
    /// A subscription with this id exists.
    #[error("subscription `{0}` already exists")]
    Exists(String),
    /// `[delivery] max_api_subscriptions` API subscriptions exist already.
    #[error(
        "at most {0} subscriptions can be created through the API (`[delivery] max_api_subscriptions`)"
    )]
    TooMany(usize),
    /// The target is an address outside the allowed networks (`[delivery] allow_networks`).
    #[error("{0}")]
    TargetNotAllowed(String),
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
    /// Deliveries cut short by shutdown or a lost lease (with a durable outbox they stay
    /// there and are delivered by the next owner).
    pub abandoned: u64,
    /// Memory outbox: events not yet finished on every subscription. Redis outbox:
    /// entries this instance holds (read, not finished); see [`Delivery::backlog`].
    pub pending: usize,
}

/// A delivery given up: permanently refused or out of retries. Kept in the outbox
/// (durably with Redis) until replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Dead-letter id (increasing with time), for replay.
    pub id: String,
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

/// Which dead letters to list or replay; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterFilter {
    /// Only this subscription's.
    pub subscription: Option<String>,
    /// Only this conversation's.
    pub conversation: Option<String>,
    /// Given up at or after this time.
    pub since: Option<Timestamp>,
    /// Given up before this time.
    pub until: Option<Timestamp>,
}

impl DeadLetterFilter {
    fn matches(&self, letter: &outbox::StoredDeadLetter) -> bool {
        self.subscription
            .as_ref()
            .is_none_or(|s| *s == letter.subscription)
            && self
                .conversation
                .as_ref()
                .is_none_or(|c| *c == letter.event.conversation.id)
            && self.since.is_none_or(|since| letter.at >= since)
            && self.until.is_none_or(|until| letter.at < until)
    }
}

fn public_letter(id: String, letter: &outbox::StoredDeadLetter) -> DeadLetter {
    DeadLetter {
        id,
        subscription: letter.subscription.clone(),
        event_id: letter.event.id.clone(),
        conversation_id: letter.event.conversation.id.clone(),
        event_type: letter.event.kind.as_str().to_owned(),
        attempts: letter.attempts,
        last_error: letter.last_error.clone(),
        at: letter.at,
    }
}

/// Handle to the delivery workers; cheap to clone. Dropping every handle without
/// [`Delivery::shutdown`] leaves the workers running until the runtime stops.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    outbox: Arc<dyn Outbox>,
    partitions: u32,
    /// How often the registry re-reads the shared subscriptions.
    sync_every: Duration,
    capacity: Arc<Semaphore>,
    max_in_flight: usize,
    max_api_subscriptions: usize,
    timeout: Duration,
    shared: Arc<Shared>,
    closed: AtomicBool,
    phase: watch::Sender<Phase>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subscriptions", &self.inner.registry.active().len())
            .field("outbox", &self.inner.outbox.backend())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Delivery {
    /// Starts delivery with an in-memory (non-durable) outbox, on the current tokio
    /// runtime.
    pub fn start(
        settings: DeliverySettings,
        subscriptions: Vec<SubscriptionConfig>,
    ) -> Result<Delivery, DeliveryError> {
        settings.validate()?;
        let capacity = Arc::new(Semaphore::new(settings.max_in_flight));
        let outbox = Arc::new(outbox::MemoryOutbox::new(
            settings.partitions,
            capacity.clone(),
        ));
        let validated = config::validate_all(subscriptions.clone(), &settings.allow_networks)?;
        for subscription in &validated {
            outbox.register_now(&subscription.id);
        }
        let delivery = Self::start_on(settings, subscriptions, outbox, capacity)?;
        // The memory outbox answers at once: start the configured subscriptions now, so
        // events published right after `start` are not missed.
        delivery.inner.registry.reconcile_now_memory();
        Ok(delivery)
    }

    /// Starts delivery on the outbox named by `[delivery] outbox_url`, or else by
    /// `store_url` (`memory://` → memory outbox, `redis://…` → Redis Streams);
    /// `rediss://` trusts `tls` (`[store] tls_ca_file`).
    pub async fn open(
        settings: DeliverySettings,
        subscriptions: Vec<SubscriptionConfig>,
        store_url: &str,
        tls: &crate::redis_url::RedisTls,
    ) -> Result<Delivery, DeliveryError> {
        settings.validate()?;
        let validated = config::validate_all(subscriptions.clone(), &settings.allow_networks)?;
        let capacity = Arc::new(Semaphore::new(settings.max_in_flight));
        let url = settings.outbox_url.as_deref().unwrap_or(store_url);
        let outbox = outbox::open(url, settings.partitions, capacity.clone(), tls).await?;
        for subscription in &validated {
            outbox.register(&subscription.id).await?;
        }
        let delivery = Self::start_on(settings, subscriptions, outbox, capacity)?;
        delivery.inner.registry.reconcile().await?;
        Ok(delivery)
    }

    fn start_on(
        settings: DeliverySettings,
        subscriptions: Vec<SubscriptionConfig>,
        outbox: Arc<dyn Outbox>,
        capacity: Arc<Semaphore>,
    ) -> Result<Delivery, DeliveryError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DeliveryError::NoRuntime)?;
        let client = http_client(settings.timeout, &settings.allow_networks)?;
        let shared = Arc::new(Shared::default());
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let (failing, failing_rx) = tokio::sync::mpsc::unbounded_channel();
        let deliverer = Deliverer {
            client,
            schedule: settings.retry_schedule.clone().into(),
            shared: shared.clone(),
            phase: phase_rx.clone(),
            outbox: outbox.clone(),
            disable_after: settings.disable_after,
            failing,
        };
        let timing = Timing {
            lease_ttl: settings.lease_ttl,
            retake: settings.lease_ttl / 3,
            poll: settings.poll_interval,
            window: settings.window,
            concurrency: settings.concurrency,
        };
        let registry = Arc::new(Registry::new(
            subscriptions,
            outbox.clone(),
            deliverer,
            timing,
            settings.partitions,
            runtime.clone(),
            settings.allow_networks.clone(),
        ));
        let sync_every = settings.lease_ttl / 3;
        runtime.spawn(registry::sync(
            registry.clone(),
            sync_every,
            failing_rx,
            phase_rx.clone(),
        ));
        runtime.spawn(tidy(
            outbox.clone(),
            settings.partitions,
            settings.lease_ttl * TIDY_EVERY_LEASES,
            phase_rx,
        ));
        tracing::info!(
            partitions = settings.partitions,
            outbox = outbox.backend(),
            "delivery started"
        );
        Ok(Delivery {
            inner: Arc::new(Inner {
                registry,
                outbox,
                partitions: settings.partitions,
                sync_every,
                capacity,
                max_in_flight: settings.max_in_flight,
                max_api_subscriptions: settings.max_api_subscriptions,
                timeout: settings.timeout,
                shared,
                closed: AtomicBool::new(false),
                phase,
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
        self.inner.registry.facts().history_depth
    }

    /// Whether any subscription wants `raw`.
    pub fn wants_raw(&self) -> bool {
        self.inner.registry.facts().wants_raw
    }

    /// Whether some subscription — running or disabled, on any instance — may want an
    /// event of one of `kinds` from `channel`; when none does, the publisher appends
    /// nothing. A subscription another instance creates is known here at the next
    /// sync (every `lease_ttl / 3`); a view older than two syncs (the shared state could
    /// not be read) answers yes.
    pub fn wants_any(&self, kinds: &[crate::event::EventType], channel: &str) -> bool {
        self.inner
            .registry
            .facts()
            .wants_any(kinds, channel, self.inner.sync_every * 2)
    }

    /// Trims every partition of the outbox now (done now and then by itself): entries
    /// every subscription is done with, and all of a partition no subscription reads.
    pub async fn trim_outbox(&self) -> Result<(), DeliveryError> {
        Ok(trim_all(self.inner.outbox.as_ref(), self.inner.partitions).await?)
    }

    /// Whether published events survive a crash (Redis outbox).
    pub fn durable(&self) -> bool {
        self.inner.outbox.durable()
    }

    /// Stop taking events, give deliveries up to `grace` to finish, then stop the
    /// workers and return how many events this process leaves undelivered (logged).
    ///
    /// Memory outbox: the workers keep draining it during `grace`; what is left is lost.
    /// Redis outbox: the workers stop reading new entries and finish the ones they hold;
    /// when `grace` ends, waiting retries are given back to the outbox (they stay
    /// pending there and the next owner of the partition delivers them) and leases are
    /// released so other instances take over at once. An attempt already on the wire is
    /// allowed to finish, so this returns within `grace` plus the attempt `timeout`.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        // Wakes reservations waiting for room.
        inner.capacity.close();
        inner.phase.send_replace(Phase::Draining);
        let abandoned_before = inner.shared.abandoned();
        let deadline = tokio::time::Instant::now() + grace;
        while !self.idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left_in_memory = inner.outbox.local_len().unwrap_or(0);
        inner.phase.send_replace(Phase::Stopped);
        let workers = inner.registry.workers.lock().take();
        if let Some(workers) = workers {
            stop_workers(workers, inner.timeout).await;
        }
        let given_back = inner.shared.abandoned().saturating_sub(abandoned_before);
        if inner.outbox.durable() {
            if given_back > 0 {
                tracing::info!(
                    returned = given_back,
                    "delivery shut down; unfinished deliveries stay in the outbox"
                );
            } else {
                tracing::info!("delivery shut down; nothing in flight");
            }
            return 0;
        }
        if left_in_memory > 0 {
            tracing::warn!(
                undelivered = left_in_memory,
                "delivery shut down with events undelivered (memory outbox: lost)"
            );
        } else {
            tracing::info!("delivery shut down; nothing pending");
        }
        left_in_memory
    }

    /// Whether nothing is left to do locally (shutdown waits for it).
    fn idle(&self) -> bool {
        match self.inner.outbox.local_len() {
            Some(len) => len == 0,
            None => self.inner.shared.held() == 0,
        }
    }

    /// Counters for metrics/tests: delivered, failed attempts, dead-lettered, pending.
    pub fn stats(&self) -> DeliveryStats {
        let pending = self
            .inner
            .outbox
            .local_len()
            .unwrap_or_else(|| self.inner.shared.held());
        self.inner.shared.stats(pending)
    }

    /// Entries of `subscription` not yet delivered (or dead-lettered), over every
    /// instance: waiting in the outbox or in flight.
    pub async fn backlog(&self, subscription: &str) -> Result<u64, DeliveryError> {
        Ok(self.inner.outbox.backlog(subscription).await?)
    }

    /// Every delivery number, per subscription, in one snapshot (the metrics endpoint
    /// exports it). Backlogs are read from the outbox.
    pub async fn metrics(&self) -> metrics::MetricsSnapshot {
        let known = self.inner.registry.metrics();
        let mut subscriptions = Vec::with_capacity(known.len());
        for (id, metrics) in known {
            let backlog = match self.inner.outbox.backlog(&id).await {
                Ok(backlog) => Some(backlog),
                Err(error) => {
                    tracing::debug!(subscription = %id, %error, "backlog unknown");
                    None
                }
            };
            subscriptions.push(metrics.snapshot(&id, backlog));
        }
        metrics::MetricsSnapshot {
            outbox: self.inner.outbox.backend(),
            subscriptions,
        }
    }

    /// Every subscription (configured and API-created), secrets left out.
    pub fn subscriptions(&self) -> Vec<SubscriptionView> {
        self.inner.registry.list()
    }

    /// One subscription.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionView, DeliveryError> {
        self.inner.registry.reconcile().await?;
        self.subscriptions()
            .into_iter()
            .find(|view| view.id == id)
            .ok_or_else(|| DeliveryError::UnknownSubscription(id.to_owned()))
    }

    /// Creates a subscription shared by every instance; it receives events this instance
    /// publishes from now on, and those of the others from their next sync (see
    /// [`Delivery::wants_any`]).
    pub async fn create_subscription(
        &self,
        new: api_types::NewSubscription,
    ) -> Result<SubscriptionView, DeliveryError> {
        let registry = &self.inner.registry;
        registry.reconcile().await?;
        let id = match new.id {
            Some(id) => {
                api_types::check_id(&id)?;
                id
            }
            None => format!("sub_{}", ulid::Ulid::generate().to_string().to_lowercase()),
        };
        if registry.knows(&id) {
            return Err(DeliveryError::Exists(id));
        }
        if registry.api_count() >= self.inner.max_api_subscriptions {
            return Err(DeliveryError::TooMany(self.inner.max_api_subscriptions));
        }
        api_types::check_secret("secret", &new.secret)?;
        let stored = outbox::StoredSubscription {
            id: id.clone(),
            url: new.url,
            secret: new.secret,
            events: new.events,
            channels: new.channels,
            history: new.history,
            include_raw: new.include_raw,
            mode: new.mode,
            previous_secret: None,
            previous_secret_expires: None,
        };
        registry.validate(&stored)?;
        // The groups first: they start at the end of the log, so the subscription gets
        // what is published once it exists.
        self.inner.outbox.register(&id).await?;
        self.inner.outbox.put_subscription(&stored).await?;
        tracing::info!(subscription = %id, "subscription created");
        self.subscription(&id).await
    }

    /// Changes an API-created subscription. A new `secret` starts a rotation: the old
    /// one keeps signing too for `rotation_grace` (default 24 h).
    pub async fn update_subscription(
        &self,
        id: &str,
        patch: api_types::SubscriptionPatch,
    ) -> Result<SubscriptionView, DeliveryError> {
        let registry = &self.inner.registry;
        registry.reconcile().await?;
        let mut stored = self.stored_api_subscription(id)?;
        if let Some(url) = patch.url {
            stored.url = url;
        }
        if let Some(events) = patch.events {
            stored.events = events;
        }
        if let Some(channels) = patch.channels {
            stored.channels = channels;
        }
        if let Some(history) = patch.history {
            stored.history = history;
        }
        if let Some(include_raw) = patch.include_raw {
            stored.include_raw = include_raw;
        }
        if let Some(mode) = patch.mode {
            stored.mode = mode;
        }
        if let Some(secret) = patch.secret
            && secret != stored.secret
        {
            api_types::check_secret("secret", &secret)?;
            let grace = patch
                .rotation_grace
                .unwrap_or(Duration::from_secs(24 * 3600));
            if grace > api_types::MAX_ROTATION_GRACE {
                return Err(DeliveryError::Config(
                    "`rotation_grace` must be between 0s and 30d".into(),
                ));
            }
            let expires = Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(grace).unwrap_or_default())
                .map_err(|error| DeliveryError::Config(format!("`rotation_grace`: {error}")))?;
            stored.previous_secret = Some(std::mem::replace(&mut stored.secret, secret));
            stored.previous_secret_expires = Some(expires);
        }
        registry.validate(&stored)?;
        self.inner.outbox.put_subscription(&stored).await?;
        tracing::info!(subscription = %id, "subscription updated");
        self.subscription(id).await
    }

    /// Deletes an API-created subscription; its undelivered events are dropped.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), DeliveryError> {
        self.inner.registry.reconcile().await?;
        self.stored_api_subscription(id)?;
        self.inner.outbox.delete_subscription(id).await?;
        self.inner.outbox.set_disabled(id, None).await?;
        self.inner.registry.reconcile().await?;
        self.inner.outbox.unregister(id).await?;
        self.inner.registry.forget(id);
        tracing::info!(subscription = %id, "subscription deleted");
        Ok(())
    }

    /// Enables or disables a subscription (configured or API-created). Disabled, its
    /// events wait in the outbox; enabled again, it delivers them in order.
    pub async fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<SubscriptionView, DeliveryError> {
        self.inner.registry.reconcile().await?;
        if !self.inner.registry.knows(id) {
            return Err(DeliveryError::UnknownSubscription(id.to_owned()));
        }
        let reason = (!enabled).then_some("disabled through the API");
        self.inner.outbox.set_disabled(id, reason).await?;
        tracing::info!(subscription = %id, enabled, "subscription {}", if enabled { "enabled" } else { "disabled" });
        self.subscription(id).await
    }

    /// Sends one signed test event (`dev.omnigate.ping`) to the subscription now and
    /// reports what the receiver answered; nothing is retried or dead-lettered.
    pub async fn test_send(&self, id: &str) -> Result<api_types::TestResult, DeliveryError> {
        self.inner.registry.reconcile().await?;
        let subscription = self
            .inner
            .registry
            .subscription(id)
            .ok_or_else(|| DeliveryError::UnknownSubscription(id.to_owned()))?;
        let event_id = format!("evt_test_{}", ulid::Ulid::generate());
        let prepared = envelope::ping(&event_id, subscription.sink.mode());
        let outcome = subscription
            .sink
            .attempt(sink::Attempt {
                client: self.inner.registry.client(),
                event_id: &event_id,
                event: None,
                attempt: 1,
                prepared: &prepared,
                traceparent: &envelope::traceparent(&event_id),
            })
            .await;
        Ok(api_types::TestResult::from_outcome(
            &subscription.id,
            event_id,
            outcome,
        ))
    }

    fn stored_api_subscription(
        &self,
        id: &str,
    ) -> Result<outbox::StoredSubscription, DeliveryError> {
        match self.inner.registry.origin(id) {
            Some(Origin::Config) => Err(DeliveryError::ReadOnly(id.to_owned())),
            Some(Origin::Api) => self
                .inner
                .registry
                .stored(id)
                .ok_or_else(|| DeliveryError::UnknownSubscription(id.to_owned())),
            None => Err(DeliveryError::UnknownSubscription(id.to_owned())),
        }
    }

    /// Dead letters matching `filter`, oldest first (at most `limit`, the newest).
    pub async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DeliveryError> {
        let letters = self.matching(filter).await?;
        let skip = letters.len().saturating_sub(limit);
        Ok(letters
            .into_iter()
            .skip(skip)
            .map(|(id, letter)| public_letter(id, &letter))
            .collect())
    }

    async fn matching(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<(String, outbox::StoredDeadLetter)>, DeliveryError> {
        let letters = self
            .inner
            .outbox
            .dead_letters(outbox::DEAD_LETTER_LIMIT)
            .await?;
        Ok(letters
            .into_iter()
            .filter(|(_, letter)| filter.matches(letter))
            .collect())
    }

    /// Replays dead letter `id`: appends its event again for its subscription only,
    /// then removes the dead letter. `Ok(false)` when there is no such dead letter.
    pub async fn replay(&self, id: &str) -> Result<bool, DeliveryError> {
        let letters = self
            .inner
            .outbox
            .dead_letters(outbox::DEAD_LETTER_LIMIT)
            .await?;
        let Some(letter) = letters.into_iter().find(|(letter_id, _)| letter_id == id) else {
            return Ok(false);
        };
        Ok(self.replay_letters(vec![letter]).await? == 1)
    }

    /// Replays every dead letter matching `filter`, oldest first, so each
    /// conversation's events are delivered again in their original order. Returns how
    /// many were replayed.
    pub async fn replay_matching(&self, filter: &DeadLetterFilter) -> Result<usize, DeliveryError> {
        let letters = self.matching(filter).await?;
        self.replay_letters(letters).await
    }

    async fn replay_letters(
        &self,
        letters: Vec<(String, outbox::StoredDeadLetter)>,
    ) -> Result<usize, DeliveryError> {
        let inner = &self.inner;
        let mut replayed = 0;
        for (id, letter) in letters {
            if !inner.registry.knows(&letter.subscription) {
                return Err(DeliveryError::UnknownSubscription(letter.subscription));
            }
            let partition = outbox::partition_of(&letter.event.conversation.id, inner.partitions);
            // Append first, then remove: a failure in between replays twice, never zero times.
            inner
                .outbox
                .append(vec![Append {
                    partition,
                    record: Record {
                        event: Arc::new(letter.event),
                        target: Some(letter.subscription.clone()),
                        // A replay is an operator's action, not part of the message's trace.
                        trace: None,
                    },
                    permit: None,
                }])
                .await?;
            inner.outbox.remove_dead_letter(&id).await?;
            inner.wake(&[partition]);
            tracing::info!(dead_letter = %id, subscription = %letter.subscription, "dead letter replayed");
            replayed += 1;
        }
        Ok(replayed)
    }
}

/// Waits for stopped workers to finish their current attempt (bounded by the attempt
/// timeout, plus a margin for the response), then aborts any that did not.
async fn stop_workers(mut workers: JoinSet<()>, attempt_timeout: Duration) {
    let limit = attempt_timeout + Duration::from_secs(1);
    let drained = tokio::time::timeout(limit, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("delivery workers did not stop in time; aborting them");
        workers.shutdown().await;
    }
}

/// One client for every subscription: connections are pooled and kept alive per host.
/// Redirects are not followed: a redirect could send a signed event somewhere the
/// operator never configured. Every name is resolved through `policy`, so a target
/// never reaches an internal address the operator did not allow.
fn http_client(
    timeout: Duration,
    policy: &crate::netguard::NetworkPolicy,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(policy.resolver())
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

/// How often a failed append is retried before `publish` reports the failure.
const APPEND_RETRIES: usize = 2;

impl Reservation {
    /// How many events this reservation has room for.
    pub fn len(&self) -> usize {
        self.permit.num_permits()
    }

    /// Whether it has room for no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the events to the outbox (durably, with Redis) and wakes the local
    /// workers. Room not used by `events` is released; publishing more events than
    /// reserved is a caller bug: the extra events take free room if there is any and are
    /// delivered anyway (the store already holds them).
    ///
    /// If the outbox keeps failing (Redis down), the events are kept in memory and
    /// appended by a background task as soon as it answers, and the error is returned so
    /// the caller can refuse the webhook: the provider's retry is then a duplicate for the
    /// store, and this process still delivers the events (unless it dies before the
    /// outbox is back — logged).
    pub async fn publish(
        mut self,
        events: Vec<Arc<crate::event::Event>>,
    ) -> Result<(), DeliveryError> {
        let inner = self.inner.clone();
        let mut partitions = Vec::with_capacity(events.len());
        let trace = crate::ops::trace::current_traceparent();
        let appends: Vec<Append> = events
            .into_iter()
            .map(|event| {
                let permit = self
                    .permit
                    .split(1)
                    .or_else(|| inner.capacity.clone().try_acquire_owned().ok());
                if permit.is_none() {
                    tracing::warn!(event_id = %event.id, "event published beyond its reservation");
                }
                let partition = outbox::partition_of(&event.conversation.id, inner.partitions);
                partitions.push(partition);
                Append {
                    partition,
                    record: Record {
                        event,
                        target: None,
                        trace: trace.clone(),
                    },
                    permit,
                }
            })
            .collect();
        // What is left of `self.permit` is released when `self` drops at the end.
        let result = append_with_retries(&inner, appends).await;
        inner.wake(&partitions);
        result
    }
}

/// How often, in lease periods, every instance trims the whole outbox.
const TIDY_EVERY_LEASES: u32 = 4;

/// Trims every partition of `outbox` now and then, until delivery stops. The workers trim
/// what they deliver; this also covers partitions no worker runs for, e.g. when no
/// subscription exists and appended events would otherwise stay forever.
async fn tidy(
    outbox: Arc<dyn Outbox>,
    partitions: u32,
    every: Duration,
    mut phase: watch::Receiver<Phase>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = dispatcher::stopped(&mut phase) => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = trim_all(outbox.as_ref(), partitions).await {
            tracing::debug!(%error, "cannot trim the outbox");
        }
    }
}

/// Trims every partition of `outbox`.
async fn trim_all(outbox: &dyn Outbox, partitions: u32) -> Result<(), outbox::OutboxError> {
    for partition in 0..partitions {
        outbox.trim(partition).await?;
    }
    Ok(())
}

impl Inner {
    /// Wakes the local workers of `partitions` (others find the entries by polling).
    fn wake(&self, partitions: &[u32]) {
        for partition in partitions {
            self.registry.wake(*partition);
        }
    }
}

/// Appends, retrying a few times; if the outbox still fails, hands the events to a
/// background task that keeps trying, and reports the failure.
async fn append_with_retries(
    inner: &Arc<Inner>,
    appends: Vec<Append>,
) -> Result<(), DeliveryError> {
    let records: Vec<(u32, Record)> = appends
        .iter()
        .map(|append| (append.partition, append.record.clone()))
        .collect();
    // The first attempt carries the reservation's permits; retries carry copies.
    let mut first = Some(appends);
    let appended = (|| {
        let appends = first.take().unwrap_or_else(|| to_appends(&records));
        inner.outbox.append(appends)
    })
    .retry(
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_factor(4.0)
            .with_max_times(APPEND_RETRIES),
    )
    .notify(|error, delay| tracing::warn!(%error, ?delay, "outbox append failed; retrying"))
    .await;
    let Err(last_error) = appended else {
        return Ok(());
    };
    let ids: Vec<String> = records.iter().map(|(_, r)| r.event.id.clone()).collect();
    tracing::error!(events = ?ids, error = %last_error, "outbox unavailable: events kept in memory until it answers");
    tokio::spawn(append_later(inner.clone(), records));
    Err(last_error.into())
}

fn to_appends(records: &[(u32, Record)]) -> Vec<Append> {
    records
        .iter()
        .map(|(partition, record)| Append {
            partition: *partition,
            record: record.clone(),
            permit: None,
        })
        .collect()
}

/// Keeps appending events the outbox refused until it takes them or delivery stops.
async fn append_later(inner: Arc<Inner>, records: Vec<(u32, Record)>) {
    let mut phase = inner.phase.subscribe();
    let mut delays = outcome::until_stopped(Duration::from_secs(1));
    loop {
        let delay = delays.next().unwrap_or_default();
        tokio::select! {
            () = dispatcher::stopped(&mut phase) => {
                let ids: Vec<&str> = records.iter().map(|(_, r)| r.event.id.as_str()).collect();
                tracing::error!(events = ?ids, "shut down before the outbox answered: events lost");
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
        match inner.outbox.append(to_appends(&records)).await {
            Ok(()) => {
                tracing::info!(events = records.len(), "outbox back: held events appended");
                let partitions: Vec<u32> = records.iter().map(|(p, _)| *p).collect();
                inner.wake(&partitions);
                return;
            }
            Err(error) => tracing::warn!(%error, "outbox still unavailable"),
        }
    }
}
