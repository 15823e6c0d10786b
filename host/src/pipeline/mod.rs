//! The pipeline an inbound event runs through, in order:
//! normalize → (reserve delivery room) → store ingest (dedupe, identity, thread,
//! history, attribution: one atomic store call) → enrich → publish.
//!
//! Room in the delivery queue is reserved *before* the store records an event, so an
//! event the store has accepted (and would dedupe on a retry) can always be published:
//! nothing acknowledged to a provider is dropped.

pub mod enrich;
pub mod identity;
pub mod normalize;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Deserialize;
use tracing::Instrument as _;

use crate::delivery::{Delivery, DeliveryError};
use crate::event::{ChannelRef, Event, EventType, Message, SCHEMA_VERSION};
use crate::metrics::{self, PipelineMetrics};
use crate::runtime::types::InboundEvent;
use crate::store::{ContextStore, Ingest, IngestPolicy, Outbound, StoreError};
pub use identity::Normalizer;
use normalize::{InvalidEvent, Normalized};

/// `[pipeline]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// How long a provider event id is remembered for dedupe. Providers retry for up to
    /// a few days (Meta: up to 7 days with backoff), so the default is 3 days.
    #[serde(with = "humantime_serde")]
    pub dedupe_ttl: Duration,
    /// Inactivity after which the next message opens a new conversation.
    #[serde(with = "humantime_serde")]
    pub inactivity: Duration,
    /// Messages kept per conversation.
    pub history_cap: usize,
    /// Region for phone numbers written without a country code (ISO 3166, e.g. `ES`).
    pub default_region: Option<String>,
    /// How long a webhook may wait for room in the delivery queue before it gets a 503.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            dedupe_ttl: Duration::from_secs(3 * 24 * 3600),
            inactivity: Duration::from_secs(24 * 3600),
            history_cap: 50,
            default_region: None,
            queue_wait: Duration::from_secs(5),
        }
    }
}

/// Why a webhook's events could not all be accepted. The provider gets a non-2xx and
/// retries; events accepted before the failure are deduped on the retry.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Delivery has no room (downstream tools are far behind).
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The plugin returned something unusable.
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
}

/// The channel facts the pipeline needs.
#[derive(Debug, Clone)]
pub struct ChannelMeta {
    /// Channel id.
    pub id: String,
    /// Channel kind (`whatsapp`, `webchat`, …).
    pub kind: String,
    /// Reply window opened by each inbound message, if the channel has one.
    pub reply_window: Option<Duration>,
}

/// What happened to a webhook's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Events accepted and published.
    pub accepted: usize,
    /// Events dropped as duplicates.
    pub duplicates: usize,
}

/// The pipeline: shared by all channels.
pub struct Pipeline {
    store: Arc<dyn ContextStore>,
    delivery: Delivery,
    normalizer: Normalizer,
    settings: PipelineSettings,
    metrics: PipelineMetrics,
}

impl Pipeline {
    /// A pipeline over `store` publishing to `delivery`.
    pub fn new(
        store: Arc<dyn ContextStore>,
        delivery: Delivery,
        settings: PipelineSettings,
    ) -> Result<Self, String> {
        let normalizer = Normalizer::new(settings.default_region.as_deref())?;
        Ok(Self {
            metrics: PipelineMetrics::new(store.backend()),
            store,
            delivery,
            normalizer,
            settings,
        })
    }

    /// The store (for the API).
    pub fn store(&self) -> &Arc<dyn ContextStore> {
        &self.store
    }

    /// Inactivity after which a conversation closes.
    pub fn inactivity(&self) -> Duration {
        self.settings.inactivity
    }

    fn policy(&self) -> IngestPolicy {
        IngestPolicy {
            dedupe_ttl: self.settings.dedupe_ttl,
            inactivity: self.settings.inactivity,
            history_cap: self.settings.history_cap,
            history_depth: self.delivery.history_depth(),
        }
    }

    /// Run a webhook's events through the pipeline, in the provider's order.
    pub async fn ingest_webhook(
        &self,
        channel: &ChannelMeta,
        events: Vec<InboundEvent>,
        body: &[u8],
    ) -> Result<Report, PipelineError> {
        let received_at = Timestamp::now();
        // Normalize all first: a plugin bug fails the webhook before anything is recorded.
        let started = Instant::now();
        let normalized =
            tracing::info_span!("normalize", events = events.len()).in_scope(|| {
                events
                    .into_iter()
                    .map(|event| {
                        normalize::normalize(&channel.id, &self.normalizer, event, received_at)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })?;
        self.metrics
            .normalize
            .record(started.elapsed().as_secs_f64());
        let mut report = Report::default();
        for event in normalized {
            if self.ingest_one(channel, event, body, received_at).await? {
                report.accepted += 1;
            } else {
                report.duplicates += 1;
            }
        }
        Ok(report)
    }

    async fn ingest_one(
        &self,
        channel: &ChannelMeta,
        event: Normalized,
        body: &[u8],
        received_at: Timestamp,
    ) -> Result<bool, PipelineError> {
        // Up to four events come out of one: contact.merged (a redeemed link token),
        // contact.merged (a verified handle another contact owns), conversation.started
        // or channel_switched (never both: a new conversation starts on the event's
        // channel), the event itself.
        let started = Instant::now();
        let reservation = self
            .delivery
            .reserve(4, self.settings.queue_wait)
            .instrument(tracing::info_span!("reserve"))
            .await?;
        self.metrics.reserve.record(started.elapsed().as_secs_f64());
        let link = self.redeem_link_token(channel, &event).await?;
        let ingest = Ingest {
            channel: channel.id.clone(),
            external_id: event.external_id.clone(),
            at: event.at,
            person: event.person.clone(),
            message: event.history_entry(&channel.id),
            referral: event.referral.clone(),
            reply_window: channel
                .reply_window
                .filter(|_| event.kind == EventType::MessageReceived),
        };
        let store_span = tracing::info_span!(
            "store.ingest",
            backend = self.store.backend(),
            outcome = tracing::field::Empty,
            conversation = tracing::field::Empty,
            contact = tracing::field::Empty,
        );
        let started = Instant::now();
        let ingested = self
            .store
            .ingest(ingest, &self.policy())
            .instrument(store_span.clone())
            .await;
        self.metrics.ingest(started.elapsed(), ingested.is_ok());
        record_ingest(&store_span, &ingested);
        let Some(ingested) = ingested? else {
            tracing::debug!(channel = %channel.id, external_id = %event.external_id, "duplicate event dropped");
            return Ok(false);
        };
        let raw = self
            .delivery
            .wants_raw()
            .then(|| enrich::raw_payload(event.raw.as_deref(), body));
        let channel_ref = ChannelRef {
            id: channel.id.clone(),
            kind: channel.kind.clone(),
            account: None,
        };
        let started = Instant::now();
        let enrich_span = tracing::info_span!("enrich", events = tracing::field::Empty);
        let events = enrich_span.in_scope(|| {
            let mut events = enrich::events(event, &ingested, &channel_ref, received_at, raw);
            if let Some(merge) = &ingested.merged {
                tracing::info!(merge = %merge.id, survivor = %merge.survivor, absorbed = %merge.absorbed, channel = %channel.id, evidence = %merge.evidence, "contacts merged on a shared verified handle");
            }
            // The merges come first, in the order they happened: the link token's before
            // the store's.
            let merges = link
                .as_ref()
                .and_then(|(_, merge)| merge.as_ref())
                .into_iter()
                .chain(&ingested.merged);
            for (position, merge) in merges.enumerate() {
                events.insert(
                    position,
                    enrich::merged(merge, &ingested, &channel_ref, received_at),
                );
            }
            events
        });
        enrich_span.record("events", events.len());
        self.metrics.enrich.record(started.elapsed().as_secs_f64());
        for event in &events {
            tracing::debug!(event_id = %event.id, r#type = %event.kind, channel = %channel.id, conversation = %event.conversation.id, contact = %event.contact.id, "event accepted");
        }
        let started = Instant::now();
        let publish_span = publish_span(&events);
        reservation
            .publish(events.into_iter().map(Arc::new).collect())
            .instrument(publish_span)
            .await?;
        self.metrics.publish.record(started.elapsed().as_secs_f64());
        if let Some((token, _)) = link {
            // Redeemed: forget it. Until then a retried webhook redeems it again (the merge
            // is idempotent), so a failure here only leaves the token to its TTL.
            if let Err(error) = self.store.drop_link_token(&token).await {
                tracing::warn!(%error, "redeemed link token not deleted; it expires with its TTL");
            }
        }
        Ok(true)
    }

    /// A link token in the event (message text or start/ref payload) that is live: merge
    /// the sender into the contact it was issued for. Returns the token and the merge
    /// (`None` when the sender already is that contact).
    async fn redeem_link_token(
        &self,
        channel: &ChannelMeta,
        event: &Normalized,
    ) -> Result<Option<(String, Option<crate::store::Merge>)>, PipelineError> {
        let text = event
            .message
            .as_ref()
            .and_then(|message| message.text.as_deref());
        let payload = event
            .referral
            .as_ref()
            .and_then(|referral| referral.ref_payload.as_deref());
        let Some(token) = [text, payload]
            .into_iter()
            .flatten()
            .find_map(crate::store::link::find_token)
        else {
            return Ok(None);
        };
        let Some(contact) = self.store.link_token(token).await? else {
            tracing::debug!(channel = %channel.id, "unknown or expired link token ignored");
            return Ok(None);
        };
        let evidence = format!("link token redeemed on channel {}", channel.id);
        let merge = self
            .store
            .link_sender(&event.person, &contact, &evidence, event.at)
            .await?;
        if let Some(merge) = &merge {
            tracing::info!(merge = %merge.id, survivor = %merge.survivor, absorbed = %merge.absorbed, channel = %channel.id, "contacts merged by a link token");
        }
        Ok(Some((token.to_owned(), merge)))
    }

    /// Record and publish a message the business sent through omnigate (`message.sent`).
    pub async fn record_sent(
        &self,
        channel: &ChannelMeta,
        conversation_id: &str,
        external_id: &str,
        message: Message,
    ) -> Result<Arc<Event>, PipelineError> {
        let reservation = self.delivery.reserve(1, self.settings.queue_wait).await?;
        let event_id = crate::ids::event();
        let at = Timestamp::now();
        let entry =
            normalize::history_entry(&event_id, at, &channel.id, Some(external_id), &message);
        let outbound = Outbound {
            conversation_id: conversation_id.to_owned(),
            message: entry,
        };
        let started = Instant::now();
        let ingested = self.store.record_outbound(outbound, &self.policy()).await;
        let took = started.elapsed();
        metrics::store_operation(
            self.store.backend(),
            "record_outbound",
            took,
            ingested.is_ok(),
        );
        let ingested = ingested?;
        let event = Arc::new(Event {
            id: event_id,
            kind: EventType::MessageSent,
            schema: SCHEMA_VERSION.to_owned(),
            occurred_at: at,
            received_at: at,
            channel: ChannelRef {
                id: channel.id.clone(),
                kind: channel.kind.clone(),
                account: None,
            },
            external_id: Some(external_id.to_owned()),
            contact: ingested.contact.snapshot(),
            conversation: ingested.conversation.snapshot(),
            message: Some(message),
            status: None,
            reaction: None,
            target_message_id: None,
            referral: None,
            merge: None,
            history: ingested.history,
            raw: None,
        });
        reservation.publish(vec![event.clone()]).await?;
        Ok(event)
    }
}

/// Records what the store answered on its span.
fn record_ingest(
    span: &tracing::Span,
    ingested: &Result<Option<crate::store::Ingested>, StoreError>,
) {
    if span.is_disabled() {
        return;
    }
    match ingested {
        Ok(Some(ingested)) => {
            span.record("outcome", "accepted");
            span.record("conversation", ingested.conversation.id.as_str());
            span.record("contact", ingested.contact.id.as_str());
        }
        Ok(None) => {
            span.record("outcome", "duplicate");
        }
        Err(_) => {
            span.record("outcome", "error");
        }
    }
}

/// The span of one publish: the events' ids and conversation, so a trace is found from
/// an event id. Its context is what the outbox entries carry to the delivery attempts.
fn publish_span(events: &[Event]) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        events = events.len(),
        event_ids = tracing::field::Empty,
        conversation = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
        span.record("event_ids", ids.join(",").as_str());
        if let Some(first) = events.first() {
            span.record("conversation", first.conversation.id.as_str());
        }
    }
    span
}
