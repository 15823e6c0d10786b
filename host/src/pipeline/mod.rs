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
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use crate::delivery::{Delivery, DeliveryError};
use crate::event::{ChannelRef, Event, EventType, Message, SCHEMA_VERSION};
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
        let normalized = events
            .into_iter()
            .map(|event| normalize::normalize(&channel.id, &self.normalizer, event, received_at))
            .collect::<Result<Vec<_>, _>>()?;
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
        // Up to three events come out of one: started, channel_switched, the event itself.
        let reservation = self.delivery.reserve(3, self.settings.queue_wait).await?;
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
        let Some(ingested) = self.store.ingest(ingest, &self.policy()).await? else {
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
        let events = enrich::events(event, &ingested, &channel_ref, received_at, raw);
        for event in &events {
            tracing::debug!(event_id = %event.id, r#type = %event.kind, channel = %channel.id, conversation = %event.conversation.id, contact = %event.contact.id, "event accepted");
        }
        reservation
            .publish(events.into_iter().map(Arc::new).collect())
            .await?;
        Ok(true)
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
        let ingested = self.store.record_outbound(outbound, &self.policy()).await?;
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
            history: ingested.history,
            raw: None,
        });
        reservation.publish(vec![event.clone()]).await?;
        Ok(event)
    }
}
