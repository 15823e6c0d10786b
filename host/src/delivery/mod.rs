//! Delivery of normalized events to downstream tools (contract: ARCHITECTURE.md,
//! "Delivery to downstream tools"; design: docs/delivery.md).
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

mod attempt;
mod config;
mod dispatcher;
mod envelope;
mod filter;
pub mod metrics;
pub mod outbox;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

pub use config::{CloudEventsMode, DeliverySettings, SubscriptionConfig};
pub use outbox::OutboxError;

use config::Subscription;
use dispatcher::{Deliverer, Phase, Shared};
use outbox::{Append, Outbox, Record};
use worker::{Timing, Worker};

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
    subscriptions: Vec<Arc<Subscription>>,
    outbox: Arc<dyn Outbox>,
    partitions: u32,
    /// Per partition, the wake-up of each local worker reading it.
    wakes: Vec<Vec<Arc<Notify>>>,
    capacity: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    shared: Arc<Shared>,
    closed: AtomicBool,
    phase: watch::Sender<Phase>,
    /// Taken by the first shutdown.
    workers: parking_lot::Mutex<Option<JoinSet<()>>>,
    history_depth: usize,
    wants_raw: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subscriptions", &self.inner.subscriptions.len())
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
        let subscriptions = config::validate_all(subscriptions)?;
        for subscription in &subscriptions {
            outbox.register_now(&subscription.id);
        }
        Self::start_on(settings, subscriptions, outbox, capacity)
    }

    /// Starts delivery on the outbox named by `[delivery] outbox_url`, or else by
    /// `store_url` (`memory://` → memory outbox, `redis://…` → Redis Streams).
    pub async fn open(
        settings: DeliverySettings,
        subscriptions: Vec<SubscriptionConfig>,
        store_url: &str,
    ) -> Result<Delivery, DeliveryError> {
        settings.validate()?;
        let subscriptions = config::validate_all(subscriptions)?;
        let capacity = Arc::new(Semaphore::new(settings.max_in_flight));
        let url = settings.outbox_url.as_deref().unwrap_or(store_url);
        let outbox = outbox::open(url, settings.partitions, capacity.clone()).await?;
        for subscription in &subscriptions {
            outbox.register(&subscription.id).await?;
        }
        Self::start_on(settings, subscriptions, outbox, capacity)
    }

    fn start_on(
        settings: DeliverySettings,
        subscriptions: Vec<Subscription>,
        outbox: Arc<dyn Outbox>,
        capacity: Arc<Semaphore>,
    ) -> Result<Delivery, DeliveryError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DeliveryError::NoRuntime)?;
        let client = http_client(settings.timeout)?;
        let shared = Arc::new(Shared::default());
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let deliverer = Deliverer {
            client,
            schedule: settings.retry_schedule.clone().into(),
            shared: shared.clone(),
            phase: phase_rx,
            outbox: outbox.clone(),
        };
        let timing = Timing {
            lease_ttl: settings.lease_ttl,
            retake: settings.lease_ttl / 3,
            poll: settings.poll_interval,
            window: settings.window,
            concurrency: settings.concurrency,
        };
        let history_depth = subscriptions.iter().map(|s| s.history).max().unwrap_or(0);
        let wants_raw = subscriptions.iter().any(|s| s.include_raw);
        let subscriptions: Vec<Arc<Subscription>> =
            subscriptions.into_iter().map(Arc::new).collect();
        let mut wakes: Vec<Vec<Arc<Notify>>> =
            (0..settings.partitions).map(|_| Vec::new()).collect();
        let mut tasks = JoinSet::new();
        for subscription in &subscriptions {
            for (partition, partition_wakes) in (0..settings.partitions).zip(wakes.iter_mut()) {
                let wake = Arc::new(Notify::new());
                partition_wakes.push(wake.clone());
                let worker = Worker {
                    partition,
                    subscription: subscription.clone(),
                    outbox: outbox.clone(),
                    deliverer: deliverer.clone(),
                    wake,
                    timing,
                };
                tasks.spawn_on(worker.run(), &runtime);
            }
        }
        tracing::info!(
            subscriptions = subscriptions.len(),
            partitions = settings.partitions,
            outbox = outbox.backend(),
            "delivery started"
        );
        Ok(Delivery {
            inner: Arc::new(Inner {
                subscriptions,
                outbox,
                partitions: settings.partitions,
                wakes,
                capacity,
                max_in_flight: settings.max_in_flight,
                timeout: settings.timeout,
                shared,
                closed: AtomicBool::new(false),
                phase,
                workers: parking_lot::Mutex::new(Some(tasks)),
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
        let workers = inner.workers.lock().take();
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
        let mut subscriptions = Vec::with_capacity(self.inner.subscriptions.len());
        for subscription in &self.inner.subscriptions {
            let backlog = match self.inner.outbox.backlog(&subscription.id).await {
                Ok(backlog) => Some(backlog),
                Err(error) => {
                    tracing::debug!(subscription = %subscription.id, %error, "backlog unknown");
                    None
                }
            };
            subscriptions.push(subscription.metrics.snapshot(&subscription.id, backlog));
        }
        metrics::MetricsSnapshot {
            outbox: self.inner.outbox.backend(),
            subscriptions,
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
            if !inner
                .subscriptions
                .iter()
                .any(|s| s.id == letter.subscription)
            {
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

/// How often a failed append is retried before `publish` reports the failure.
const APPEND_ATTEMPTS: u32 = 3;

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

impl Inner {
    /// Wakes the local workers of `partitions` (others find the entries by polling).
    fn wake(&self, partitions: &[u32]) {
        for partition in partitions {
            if let Some(wakes) = self.wakes.get(*partition as usize) {
                for wake in wakes {
                    wake.notify_one();
                }
            }
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
    let mut last_error = match inner.outbox.append(appends).await {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    let mut delay = Duration::from_millis(100);
    for _ in 1..APPEND_ATTEMPTS {
        tokio::time::sleep(delay).await;
        delay *= 4;
        match inner.outbox.append(to_appends(&records)).await {
            Ok(()) => return Ok(()),
            Err(error) => last_error = error,
        }
    }
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
    let mut delay = Duration::from_secs(1);
    loop {
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
            Err(error) => {
                tracing::warn!(%error, "outbox still unavailable");
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
