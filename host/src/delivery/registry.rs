//! The subscriptions this process delivers to, kept in step with the configuration, the
//! API-created ones and the disabled set (both in the outbox backend, shared by every
//! instance), and their workers.
//!
//! Every instance re-reads the shared state every `sync` interval (and at once after an
//! API call it served): a subscription created, updated, disabled or deleted elsewhere
//! takes effect here within that interval. Stopping a subscription's workers leaves its
//! unfinished entries pending in the outbox; they are delivered when it runs again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::DeliveryError;
use super::config::{Subscription, SubscriptionConfig};
use super::dispatcher::{Deliverer, Phase, stopped};
use super::filter::EventFilter;
use super::metrics::SubscriptionMetrics;
use super::outbox::{Outbox, OutboxError, StoredSubscription};
use super::worker::{Timing, Worker};
use crate::event::EventType;
use crate::netguard::NetworkPolicy;
use crate::secret::Secret;

/// Where a subscription comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `[[subscriptions]]` (read-only through the API).
    Config,
    /// Created through `/v1/subscriptions`.
    Api,
}

/// A running subscription.
struct Active {
    subscription: Arc<Subscription>,
    /// What it was built from; a change restarts its workers.
    version: String,
    retire: watch::Sender<bool>,
    /// Per partition.
    wakes: Vec<Arc<Notify>>,
}

/// A subscription as the API shows it (never its secrets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionView {
    /// Id.
    pub id: String,
    /// Config or API.
    pub origin: Origin,
    /// Where events are POSTed.
    pub url: String,
    /// Event-type patterns.
    pub events: Vec<String>,
    /// Channel ids (empty: all).
    pub channels: Vec<String>,
    /// Messages of history included.
    pub history: usize,
    /// Whether `raw` is included.
    pub include_raw: bool,
    /// CloudEvents mode.
    pub mode: super::CloudEventsMode,
    /// End of the secret rotation grace period, if one is running.
    pub previous_secret_expires: Option<jiff::Timestamp>,
    /// Whether it is delivering.
    pub enabled: bool,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
}

pub(crate) struct Registry {
    config: Vec<SubscriptionConfig>,
    outbox: Arc<dyn Outbox>,
    deliverer: Deliverer,
    timing: Timing,
    partitions: u32,
    runtime: tokio::runtime::Handle,
    active: RwLock<BTreeMap<String, Active>>,
    /// Last known shared state, for listings.
    api: RwLock<BTreeMap<String, StoredSubscription>>,
    disabled: RwLock<BTreeMap<String, String>>,
    /// Counters per id, kept across restarts of a subscription's workers.
    metrics: Mutex<HashMap<String, Arc<SubscriptionMetrics>>>,
    /// `None` once shut down.
    pub(crate) workers: Mutex<Option<JoinSet<()>>>,
    /// Serializes reconciliations (the sync task and API calls).
    reconciling: tokio::sync::Mutex<()>,
    /// Which addresses HTTP targets may have (`[delivery] allow_networks`).
    policy: NetworkPolicy,
    /// What the publisher asks per event, as of the last reconciliation.
    facts: arc_swap::ArcSwap<Facts>,
}

/// What the publisher needs to know of the subscriptions, per event: kept from one
/// reconciliation to the next instead of walking the running subscriptions each time.
pub(crate) struct Facts {
    /// The filter of every known subscription, running or disabled (a disabled one gets
    /// what was published meanwhile once enabled again).
    filters: Vec<EventFilter>,
    /// Largest `history` a running subscription wants.
    pub(crate) history_depth: usize,
    /// Whether a running subscription wants `raw`.
    pub(crate) wants_raw: bool,
    /// When the shared state these facts come from was read (`None`: never).
    read_at: Option<Instant>,
}

impl Facts {
    /// Whether some subscription may want an event of one of `kinds` from `channel`. A
    /// view older than `fresh_for` says yes: another instance may have created a
    /// subscription since.
    pub(crate) fn wants_any(
        &self,
        kinds: &[EventType],
        channel: &str,
        fresh_for: Duration,
    ) -> bool {
        let fresh = self
            .read_at
            .is_some_and(|read_at| read_at.elapsed() < fresh_for);
        !fresh
            || self.filters.iter().any(|filter| {
                kinds
                    .iter()
                    .any(|kind| filter.matches_kind(kind.as_str(), channel))
            })
    }
}

impl Registry {
    pub(crate) fn new(
        config: Vec<SubscriptionConfig>,
        outbox: Arc<dyn Outbox>,
        deliverer: Deliverer,
        timing: Timing,
        partitions: u32,
        runtime: tokio::runtime::Handle,
        policy: NetworkPolicy,
    ) -> Self {
        Self {
            config,
            outbox,
            deliverer,
            timing,
            partitions,
            runtime,
            active: RwLock::default(),
            api: RwLock::default(),
            disabled: RwLock::default(),
            metrics: Mutex::default(),
            workers: Mutex::new(Some(JoinSet::new())),
            reconciling: tokio::sync::Mutex::new(()),
            policy,
            facts: arc_swap::ArcSwap::from_pointee(Facts {
                filters: Vec::new(),
                history_depth: 0,
                wants_raw: false,
                read_at: None,
            }),
        }
    }

    /// The subscription facts of the last reconciliation.
    pub(crate) fn facts(&self) -> arc_swap::Guard<Arc<Facts>> {
        self.facts.load()
    }

    /// Running subscriptions.
    pub(crate) fn active(&self) -> Vec<Arc<Subscription>> {
        self.active
            .read()
            .values()
            .map(|a| a.subscription.clone())
            .collect()
    }

    /// Whether `id` is a known subscription (running or disabled).
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.config
            .iter()
            .enumerate()
            .any(|(i, c)| c.id_at(i) == id)
            || self.api.read().contains_key(id)
    }

    /// Origin of `id`, if known.
    pub(crate) fn origin(&self, id: &str) -> Option<Origin> {
        if self
            .config
            .iter()
            .enumerate()
            .any(|(i, c)| c.id_at(i) == id)
        {
            Some(Origin::Config)
        } else if self.api.read().contains_key(id) {
            Some(Origin::Api)
        } else {
            None
        }
    }

    /// How many API subscriptions exist (as last read).
    pub(crate) fn api_count(&self) -> usize {
        self.api.read().len()
    }

    /// The stored form of API subscription `id`.
    pub(crate) fn stored(&self, id: &str) -> Option<StoredSubscription> {
        self.api.read().get(id).cloned()
    }

    /// Counters of every known subscription.
    pub(crate) fn metrics(&self) -> Vec<(String, Arc<SubscriptionMetrics>)> {
        let mut all: Vec<_> = self
            .metrics
            .lock()
            .iter()
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Wakes local workers of `partition`.
    pub(crate) fn wake(&self, partition: u32) {
        for active in self.active.read().values() {
            if let Some(wake) = active.wakes.get(partition as usize) {
                wake.notify_one();
            }
        }
    }

    /// Every subscription, for the API.
    pub(crate) fn list(&self) -> Vec<SubscriptionView> {
        let disabled = self.disabled.read().clone();
        let view = |id: String, origin: Origin, c: &SubscriptionConfig| SubscriptionView {
            disabled_reason: disabled.get(&id).cloned(),
            enabled: !disabled.contains_key(&id),
            id,
            origin,
            url: c.url.clone(),
            events: c.events.clone(),
            channels: c.channels.clone(),
            history: c.history,
            include_raw: c.include_raw,
            mode: c.mode,
            previous_secret_expires: c.previous_secret_expires,
        };
        let mut all: Vec<SubscriptionView> = self
            .config
            .iter()
            .enumerate()
            .map(|(i, c)| view(c.id_at(i), Origin::Config, c))
            .collect();
        for stored in self.api.read().values() {
            all.push(view(stored.id.clone(), Origin::Api, &to_config(stored)));
        }
        all
    }

    /// [`Registry::reconcile`] for the memory outbox, whose calls never wait: done
    /// synchronously so `Delivery::start` returns with its subscriptions running.
    pub(crate) fn reconcile_now_memory(&self) {
        if let Err(error) = futures::executor::block_on(self.reconcile()) {
            tracing::warn!(%error, "cannot start the subscriptions");
        }
    }

    /// Re-reads the shared state and starts/stops workers to match it.
    pub(crate) async fn reconcile(&self) -> Result<(), OutboxError> {
        let _one_at_a_time = self.reconciling.lock().await;
        // Before the reads: facts are as fresh as the oldest read they rest on.
        let read_at = Instant::now();
        let api = self.outbox.subscriptions().await?;
        let disabled = self.outbox.disabled().await?;
        let mut desired: Vec<(String, String, SubscriptionConfig)> = Vec::new();
        for (position, config) in self.config.iter().enumerate() {
            desired.push((config.id_at(position), "config".into(), config.clone()));
        }
        for stored in &api {
            let version = serde_json::to_string(stored).unwrap_or_default();
            desired.push((stored.id.clone(), version, to_config(stored)));
        }
        *self.api.write() = api.into_iter().map(|s| (s.id.clone(), s)).collect();
        let filters: Vec<EventFilter> = desired
            .iter()
            .filter_map(|(_, _, config)| EventFilter::new(&config.events, &config.channels).ok())
            .collect();
        desired.retain(|(id, _, _)| !disabled.contains_key(id));
        let running = || desired.iter().map(|(_, _, config)| config);
        self.facts.store(Arc::new(Facts {
            filters,
            history_depth: running().map(|config| config.history).max().unwrap_or(0),
            wants_raw: running().any(|config| config.include_raw),
            read_at: Some(read_at),
        }));
        *self.disabled.write() = disabled;

        let mut active = self.active.write();
        let keep: Vec<String> = active
            .iter()
            .filter(|(id, a)| desired.iter().any(|(d, v, _)| d == *id && *v == a.version))
            .map(|(id, _)| id.clone())
            .collect();
        let retired: Vec<String> = active
            .keys()
            .filter(|id| !keep.contains(id))
            .cloned()
            .collect();
        for id in retired {
            if let Some(old) = active.remove(&id) {
                old.retire.send_replace(true);
                tracing::info!(subscription = %id, "subscription stopped here");
            }
        }
        for (id, version, config) in desired {
            if active.contains_key(&id) {
                continue;
            }
            let metrics = self.metrics.lock().entry(id.clone()).or_default().clone();
            let subscription = match config.validate(0, &self.policy) {
                Ok(mut subscription) => {
                    subscription.id = id.clone();
                    subscription.metrics = metrics;
                    Arc::new(subscription)
                }
                Err(error) => {
                    tracing::error!(subscription = %id, %error, "invalid stored subscription skipped");
                    continue;
                }
            };
            if let Some(started) = self.spawn(subscription, version) {
                active.insert(id, started);
            }
        }
        Ok(())
    }

    fn spawn(&self, subscription: Arc<Subscription>, version: String) -> Option<Active> {
        let mut workers = self.workers.lock();
        let workers = workers.as_mut()?;
        let (retire, retire_rx) = watch::channel(false);
        let mut wakes = Vec::new();
        for partition in 0..self.partitions {
            let wake = Arc::new(Notify::new());
            wakes.push(wake.clone());
            let worker = Worker {
                partition,
                subscription: subscription.clone(),
                outbox: self.outbox.clone(),
                deliverer: self.deliverer.clone(),
                wake,
                timing: self.timing,
                retire: retire_rx.clone(),
            };
            workers.spawn_on(worker.run(), &self.runtime);
        }
        tracing::info!(subscription = %subscription.id, "subscription running here");
        Some(Active {
            subscription,
            version,
            retire,
            wakes,
        })
    }

    /// The subscription `id` as it delivers (running or not).
    pub(crate) fn subscription(&self, id: &str) -> Option<Arc<Subscription>> {
        if let Some(active) = self.active.read().get(id) {
            return Some(active.subscription.clone());
        }
        let config = self
            .config
            .iter()
            .enumerate()
            .find(|(i, c)| c.id_at(*i) == id)
            .map(|(_, c)| c.clone())
            .or_else(|| self.api.read().get(id).map(to_config))?;
        let mut subscription = config.validate(0, &self.policy).ok()?;
        subscription.id = id.to_owned();
        Some(Arc::new(subscription))
    }

    /// Validates an API subscription as it would run.
    pub(crate) fn validate(&self, stored: &StoredSubscription) -> Result<(), DeliveryError> {
        to_config(stored).validate(0, &self.policy).map(drop)
    }

    /// The HTTP client deliveries use.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.deliverer.client
    }

    /// Forgets a deleted subscription's counters.
    pub(crate) fn forget(&self, id: &str) {
        self.metrics.lock().remove(id);
    }
}

/// Keeps the registry in step: every `every`, and whenever a worker reports a
/// subscription failing for too long (which disables it).
pub(crate) async fn sync(
    registry: Arc<Registry>,
    every: Duration,
    mut failing: mpsc::UnboundedReceiver<(String, String)>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut phase) => return,
            _ = tick.tick() => {}
            Some((id, reason)) = failing.recv() => {
                match registry.outbox.set_disabled(&id, Some(&reason)).await {
                    Ok(()) => tracing::error!(
                        subscription = %id,
                        reason = %reason,
                        event = "subscription.disabled",
                        "subscription.disabled: failing continuously; re-enable with POST /v1/subscriptions/{id}/enable"
                    ),
                    Err(error) => tracing::warn!(subscription = %id, %error, "cannot disable the subscription"),
                }
            }
        }
        if let Err(error) = registry.reconcile().await {
            tracing::warn!(%error, "cannot read the shared subscriptions");
        }
    }
}

/// The configuration form of an API subscription.
pub(crate) fn to_config(stored: &StoredSubscription) -> SubscriptionConfig {
    SubscriptionConfig {
        id: Some(stored.id.clone()),
        kind: super::config::SubscriptionKind::Http,
        stream: None,
        maxlen: None,
        url: stored.url.clone(),
        secret: Secret::new(stored.secret.as_str()),
        events: stored.events.clone(),
        channels: stored.channels.clone(),
        history: stored.history,
        include_raw: stored.include_raw,
        mode: stored.mode,
        previous_secret: stored.previous_secret.as_deref().map(Secret::new),
        previous_secret_expires: stored.previous_secret_expires,
        destination: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(filters: &[(&[&str], &[&str])], read_ago: Option<Duration>) -> Facts {
        Facts {
            filters: filters
                .iter()
                .map(|(events, channels)| {
                    let strings =
                        |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
                    EventFilter::new(&strings(events), &strings(channels)).expect("filter")
                })
                .collect(),
            history_depth: 0,
            wants_raw: false,
            read_at: read_ago.map(|ago| Instant::now() - ago),
        }
    }

    const FRESH: Duration = Duration::from_secs(60);

    #[test]
    fn nobody_subscribed_wants_nothing() {
        let none = facts(&[], Some(Duration::ZERO));
        assert!(!none.wants_any(&[EventType::MessageReceived], "web", FRESH));
    }

    #[test]
    fn a_filter_decides_by_type_and_channel() {
        let facts = facts(&[(&["conversation.*"], &["wa"])], Some(Duration::ZERO));
        let kinds = [EventType::MessageReceived, EventType::ConversationStarted];
        assert!(facts.wants_any(&kinds, "wa", FRESH));
        assert!(!facts.wants_any(&kinds, "web", FRESH), "another channel");
        assert!(
            !facts.wants_any(&[EventType::MessageReceived], "wa", FRESH),
            "another type"
        );
    }

    #[test]
    fn an_old_or_missing_view_wants_everything() {
        let old = facts(&[], Some(Duration::from_secs(120)));
        assert!(old.wants_any(&[EventType::MessageReceived], "web", FRESH));
        let never = facts(&[], None);
        assert!(never.wants_any(&[EventType::MessageReceived], "web", FRESH));
    }
}
