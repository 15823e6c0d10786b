//! The pipeline an inbound event runs through, in order:
//! normalize → (reserve delivery room) → store ingest (dedupe, identity, thread,
//! history, attribution: one atomic store call) → enrich → publish.
//!
//! Room in the delivery queue is reserved *before* the store records an event, so an
//! event the store has accepted (and would dedupe on a retry) can always be published:
//! nothing acknowledged to a provider is dropped.

pub mod enrich;
mod erasure;
pub mod identity;
pub mod normalize;
pub mod outcomes;
pub mod owed;
pub mod receipts;
pub mod rollups;
pub mod settles;
pub mod sweeper;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Deserialize;
use tracing::Instrument as _;

use crate::delivery::{Delivery, DeliveryError};
use crate::event::{ChannelRef, Event, EventType, Message};
use crate::metrics::{self, PipelineMetrics};
use crate::runtime::types::InboundEvent;
use crate::store::{self, ContextStore, Ingest, IngestPolicy, Ingested, Outbound, StoreError};
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
    /// Timeline entries kept per conversation (messages both ways, referrals, conversation
    /// events); the oldest are dropped beyond it.
    pub timeline_cap: usize,
    /// Region for phone numbers written without a country code (ISO 3166, e.g. `ES`).
    pub default_region: Option<String>,
    /// How long a webhook may wait for room in the delivery queue before it gets a 503.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
    /// How old an unsettled owed record must be before the relay publishes it: longer
    /// than any live publisher takes between its store commit and the outbox.
    #[serde(with = "humantime_serde")]
    pub relay_after: Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            dedupe_ttl: Duration::from_secs(3 * 24 * 3600),
            inactivity: Duration::from_secs(24 * 3600),
            history_cap: 50,
            timeline_cap: 10_000,
            default_region: None,
            queue_wait: Duration::from_secs(5),
            relay_after: Duration::from_secs(30),
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
    /// A message over the channel's `max_text_bytes` or `max_parts`.
    #[error("{0}")]
    TooLarge(String),
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
    /// Largest message text stored, in bytes.
    pub max_text_bytes: usize,
    /// Most parts one message may carry.
    pub max_parts: usize,
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
    outcomes: crate::outcome::OutcomeSettings,
    channels: sweeper::Channels,
    metrics: PipelineMetrics,
    rollups: Arc<rollups::RollupQueue>,
    settles: settles::SettleQueue,
}

impl Pipeline {
    /// A pipeline over `store` publishing to `delivery`, tracking outcomes per
    /// `outcomes`; `channels` names the channels' kinds (swapped by the lifecycle).
    pub fn new(
        store: Arc<dyn ContextStore>,
        delivery: Delivery,
        settings: PipelineSettings,
        outcomes: crate::outcome::OutcomeSettings,
        channels: sweeper::Channels,
    ) -> Result<Self, String> {
        let normalizer = Normalizer::new(settings.default_region.as_deref())?;
        let problems = outcomes.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Self {
            metrics: PipelineMetrics::new(store.backend()),
            rollups: rollups::RollupQueue::new(store.clone()),
            settles: settles::SettleQueue::new(store.clone()),
            store,
            delivery,
            normalizer,
            settings,
            outcomes,
            channels,
        })
    }

    /// The kind of channel `id` (empty when it is gone).
    pub fn kind_of(&self, id: &str) -> String {
        self.channels
            .load()
            .get(id)
            .map(|meta| meta.kind.clone())
            .unwrap_or_default()
    }

    /// The phone-number normalizer (for contacts named by phone in the API).
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
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
            timeline_cap: self.settings.timeline_cap,
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
        // Stages are timed for one webhook in `[metrics] stage_sample` (metrics.rs).
        let sampled = self.metrics.sampled();
        // Normalize all first: a plugin bug fails the webhook before anything is recorded.
        let started = PipelineMetrics::start(sampled);
        let normalized =
            tracing::info_span!("normalize", events = events.len()).in_scope(|| {
                events
                    .into_iter()
                    .map(|event| {
                        normalize::normalize(
                            &channel.id,
                            &channel.kind,
                            &self.normalizer,
                            event,
                            received_at,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
            })?;
        PipelineMetrics::stop(&self.metrics.normalize, started);
        // Bounded before anything is stored: every copy (history, timeline, outbox) of a
        // message is as large as it is.
        for event in &normalized {
            within_limits(channel, event)?;
        }
        let mut report = Report::default();
        for event in normalized {
            if self
                .ingest_one(channel, event, body, received_at, sampled)
                .await?
            {
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
        sampled: bool,
    ) -> Result<bool, PipelineError> {
        // Up to four events come out of one: contact.merged (a redeemed link token),
        // contact.merged (a verified handle another contact owns), conversation.started
        // or channel_switched (never both: a new conversation starts on the event's
        // channel), the event itself.
        let started = PipelineMetrics::start(sampled);
        let reservation = self
            .delivery
            .reserve(4, self.settings.queue_wait)
            .instrument(tracing::info_span!("reserve"))
            .await?;
        PipelineMetrics::stop(&self.metrics.reserve, started);
        // Decided now: the link token's merge keeps its `contact.merged` owed with this id.
        let caused_ids: [String; 4] = std::array::from_fn(|_| crate::ids::event());
        let link = self
            .redeem_link_token(channel, &event, &caused_ids[2])
            .await?;
        if link.is_some() {
            crate::fault::point("after_link");
        }
        let raw = self
            .delivery
            .wants_raw()
            .then(|| enrich::raw_payload(event.raw.as_deref(), body));
        let ingest_message = event.history_entry(&channel.id);
        let (inbound, person) = inbound_debt(
            channel,
            event,
            received_at,
            raw,
            caused_ids,
            link.as_ref().and_then(|(_, merge)| merge.clone()),
        );
        // Nothing is appended that no subscription wants; the owed record is still kept
        // when an outcome step follows the commit (it makes that step survive a crash).
        let wanted = self.delivery.wants_any(
            &[
                inbound.kind,
                EventType::ConversationStarted,
                EventType::ConversationChannelSwitched,
                EventType::ContactMerged,
            ],
            &channel.id,
        );
        let owes = wanted || self.outcomes.enabled;
        // Only a sender reporting a verified phone or e-mail can be merged by the ingest.
        let merged_owed = person.handles.iter().any(store::merges_on).then(|| {
            owed::Owes::Merged {
                event_id: &inbound.caused_ids[3],
            }
            .payload()
        });
        let ingest = Ingest {
            channel: channel.id.clone(),
            external_id: inbound.external_id.clone(),
            at: inbound.at,
            person,
            message: ingest_message,
            referral: inbound.referral.clone(),
            reply_window: channel
                .reply_window
                .filter(|_| inbound.kind == EventType::MessageReceived),
            owed: owes.then(|| owed::Owes::Inbound(&inbound).payload()),
            merged_owed,
        };
        let store_span = tracing::info_span!(
            "store.ingest",
            backend = self.store.backend(),
            outcome = tracing::field::Empty,
            conversation = tracing::field::Empty,
            contact = tracing::field::Empty,
        );
        // The sender's handle, for a duplicate's owed-record lookup (the ingest takes the rest).
        let user = ingest.person.user.clone();
        let started = PipelineMetrics::start(sampled);
        let ingested = self
            .store
            .ingest(ingest, &self.policy())
            .instrument(store_span.clone())
            .await;
        self.metrics.ingest(started, ingested.is_ok());
        record_ingest(&store_span, &ingested);
        let Some(ingested) = ingested? else {
            return self
                .republish_duplicate(channel, &user, &inbound, reservation)
                .await;
        };
        crate::fault::point("after_commit");
        if let Some(merge) = &ingested.merged {
            tracing::info!(merge = %merge.id, survivor = %merge.survivor, absorbed = %merge.absorbed, channel = %channel.id, evidence = %merge.evidence, "contacts merged on a shared verified handle");
        }
        if wanted {
            let started = PipelineMetrics::start(sampled);
            let enrich_span = tracing::info_span!("enrich", events = tracing::field::Empty);
            let events = enrich_span.in_scope(|| owed::inbound_events(&inbound, &ingested));
            enrich_span.record("events", events.len());
            PipelineMetrics::stop(&self.metrics.enrich, started);
            self.publish_events(reservation, events, sampled).await?;
        }
        // Before the settle: a crash in between leaves the owed record, whose retry or
        // relay runs the outcome step again (it is idempotent).
        self.track_inbound(&inbound, &ingested).await?;
        if owes {
            // After the answer, batched: nothing waits for it (settles.rs).
            let key = store::owed_inbound_key(&channel.id, &inbound.external_id);
            self.settles
                .settle((ingested.contact.id.clone(), key))
                .await;
        }
        self.settle_merges(&inbound, &ingested).await;
        if let Some((token, _)) = link {
            // Redeemed: forget it. Until then a retried webhook redeems it again (the merge
            // is idempotent), so a failure here only leaves the token to its TTL.
            if let Err(error) = self.store.drop_link_token(&token).await {
                tracing::warn!(%error, "redeemed link token not deleted; it expires with its TTL");
            }
        }
        Ok(true)
    }

    /// A duplicate: the store has the event. If its owed record is still there, the first
    /// attempt committed and has not settled: it may still be publishing (a provider that
    /// sent the webhook twice at once, to two instances), or it died before the outbox (the
    /// provider retries because it got no answer). Wait until the record is settled (a
    /// plain duplicate) or abandoned — older than `relay_after`, when the relay would take
    /// it too — and then publish its events, with their ids.
    async fn republish_duplicate(
        &self,
        channel: &ChannelMeta,
        user: &crate::event::Handle,
        inbound: &owed::Inbound,
        reservation: crate::delivery::Reservation,
    ) -> Result<bool, PipelineError> {
        let owed = loop {
            let owed = self
                .store
                .owed_inbound(user, &channel.id, &inbound.external_id)
                .await?;
            let Some(owed) = owed else {
                tracing::debug!(channel = %channel.id, external_id = %inbound.external_id, "duplicate event dropped");
                return Ok(false);
            };
            if self.abandoned(&owed) {
                break owed;
            }
            tokio::time::sleep(OWED_POLL).await;
        };
        tracing::info!(channel = %channel.id, external_id = %inbound.external_id, committed_at = %owed.at, "a retried event whose first attempt committed without settling: publishing its events");
        let kind_of = |channel: &str| self.kind_of(channel);
        let (debt, ingested, events) = self.owed_events(&owed, &kind_of).await?;
        metrics::owed_republished("retry");
        self.publish_events(reservation, events, true).await?;
        self.follow_up(&owed, debt.as_ref(), ingested.as_ref())
            .await?;
        self.settle((owed.contact_id, owed.key)).await;
        Ok(false)
    }

    /// Whether no live publisher can still be working on `owed`: it committed at or
    /// before [`Self::abandoned_before`].
    fn abandoned(&self, owed: &store::Owed) -> bool {
        owed.at <= self.abandoned_before()
    }

    /// `relay_after` ago: an owed record committed before this has no live publisher.
    fn abandoned_before(&self) -> Timestamp {
        let now = Timestamp::now();
        jiff::SignedDuration::try_from(self.settings.relay_after)
            .ok()
            .and_then(|relay_after| now.checked_sub(relay_after).ok())
            .unwrap_or(now)
    }

    /// Publish the events of an owed record; the caller then settles it, before its
    /// answer, so the provider's next copy of the webhook is a plain duplicate. A settle
    /// that fails (or a crash before it) only makes a retry or the relay publish the same
    /// events, same ids, again: at least once.
    /// The publish stage is timed when `sampled`.
    async fn publish_events(
        &self,
        reservation: crate::delivery::Reservation,
        events: Vec<Event>,
        sampled: bool,
    ) -> Result<(), PipelineError> {
        for event in &events {
            tracing::debug!(event_id = %event.id, r#type = %event.kind, channel = %event.channel.id, conversation = %event.conversation.id, contact = %event.contact.id, "event accepted");
        }
        let started = PipelineMetrics::start(sampled);
        let publish_span = publish_span(&events);
        reservation
            .publish(events.into_iter().map(Arc::new).collect())
            .instrument(publish_span)
            .await?;
        PipelineMetrics::stop(&self.metrics.publish, started);
        crate::fault::point("after_publish");
        Ok(())
    }

    /// The owed records of the merges an inbound event carried (a link token's, a shared
    /// verified handle's): their `contact.merged` went out with the event's events (or
    /// nobody wants it). Queued, like the event's own settle.
    async fn settle_merges(&self, inbound: &owed::Inbound, ingested: &Ingested) {
        for merge in [&inbound.link_merge, &ingested.merged]
            .into_iter()
            .flatten()
        {
            let key = store::owed_merged_key(&merge.id);
            self.settles.settle((merge.survivor.clone(), key)).await;
        }
    }

    /// What a republished owed record still has to do after its events are out: the
    /// outcome step of an inbound event (idempotent) and the settle of its merges'
    /// records, the outcome step of a reply, the counters of an outcome change (once per
    /// key).
    async fn follow_up(
        &self,
        owed: &store::Owed,
        debt: Option<&owed::Debt>,
        ingested: Option<&Ingested>,
    ) -> Result<(), PipelineError> {
        match (debt, ingested) {
            // A republish does not know what the first attempt's ingest reported (a
            // first message?): decide again, whatever the event; deciding is idempotent.
            (Some(owed::Debt::Inbound(inbound)), Some(ingested)) => {
                let mut again = ingested.clone();
                again.first_inbound = true;
                self.track_inbound(inbound, &again).await?;
                self.settle_merges(inbound, ingested).await;
                Ok(())
            }
            (Some(owed::Debt::Sent(sent)), Some(ingested)) if self.outcomes.enabled => {
                let change = crate::outcome::rules::Change::BusinessMessage {
                    at: sent.at,
                    author: sent.author.as_ref(),
                };
                self.track_logged(&ingested.conversation.id, &change, None)
                    .await
            }
            (Some(owed::Debt::Outcome(debt)), _) => self.add_rollups(&owed.key, debt).await,
            _ => Ok(()),
        }
    }

    /// Wait until the owed records handed to the settle queue are settled (graceful
    /// shutdown).
    pub async fn flush_settles(&self) {
        self.settles.flush().await;
    }

    /// Drop an owed record whose events are in the outbox. A failure is only logged: the
    /// events are published; the relay publishes them once more (same ids).
    async fn settle(&self, owed: (String, String)) {
        if let Err(error) = self.store.settle(std::slice::from_ref(&owed)).await {
            tracing::warn!(%error, contact = %owed.0, "owed record not settled; the relay will publish its events again (same event ids)");
        }
    }

    /// The events an owed record stands for, built from its payload and the store's
    /// state now (the snapshots are as of now; the ids are the ones first decided).
    /// `kind_of` names a channel's kind (the payload of a close does not carry it).
    async fn owed_events(
        &self,
        owed: &store::Owed,
        kind_of: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<(Option<owed::Debt>, Option<Ingested>, Vec<Event>), PipelineError> {
        let debt = owed::Debt::from_payload(&owed.payload)
            .map_err(|error| InvalidEvent(format!("owed record {}: {error}", owed.key)))?;
        if let owed::Debt::Outcome(outcome) = &debt {
            let events = self.outcome_debt_events(&owed.contact_id, outcome).await?;
            return Ok((Some(debt), None, events));
        }
        if let owed::Debt::Erased { event } = &debt {
            let event = self.finish_erasure(owed, event).await?;
            return Ok((Some(debt), None, vec![event]));
        }
        if let owed::Debt::Unmerged { event_id } | owed::Debt::Merged { event_id } = &debt {
            let kind = match &debt {
                owed::Debt::Merged { .. } => EventType::ContactMerged,
                _ => EventType::ContactUnmerged,
            };
            let event = self.merge_event(owed, kind, event_id, kind_of).await?;
            return Ok((Some(debt), None, event.into_iter().collect()));
        }
        let Some(ingested) = self.ingested_now(owed).await? else {
            return Ok((None, None, Vec::new()));
        };
        let events = match &debt {
            owed::Debt::Inbound(inbound) => owed::inbound_events(inbound, &ingested),
            owed::Debt::Sent(sent) => vec![owed::sent_event(sent, &ingested)],
            owed::Debt::Closed { event_id } => {
                let channel = ingested.conversation.current_channel.clone();
                let channel = ChannelRef {
                    kind: kind_of(&channel),
                    id: channel,
                    account: None,
                };
                vec![owed::closed_event(event_id, channel, owed.at, &ingested)]
            }
            owed::Debt::Outcome(_)
            | owed::Debt::Unmerged { .. }
            | owed::Debt::Merged { .. }
            | owed::Debt::Erased { .. } => Vec::new(),
        };
        Ok((Some(debt), Some(ingested), events))
    }

    /// `contact.merged` or `contact.unmerged` (`kind`) of an owed merge or unmerge: the
    /// survivor and its latest conversation as they are now, the merge from the record;
    /// `None` when the survivor is gone.
    async fn merge_event(
        &self,
        owed: &store::Owed,
        kind: EventType,
        event_id: &str,
        kind_of: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Option<Event>, PipelineError> {
        let Some(survivor) = self.store.contact_details(&owed.contact_id).await? else {
            return Ok(None);
        };
        let conversation = match &survivor.latest_conversation {
            Some(id) => self.store.conversation(id).await?,
            None => None,
        };
        let mut event = owed::contact_event(
            kind,
            survivor.contact.snapshot(),
            conversation.as_ref(),
            kind_of,
        );
        event.id = event_id.to_owned();
        event.merge = owed.merged.as_ref().map(enrich::merge_ref);
        Ok(Some(event))
    }

    /// Undo the merge of `absorbed` into `survivor` and publish `contact.unmerged`. The
    /// store keeps the event owed in the same step as the undo, so a crash before the
    /// outbox append leaves it to the relay.
    pub async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
    ) -> Result<store::Merge, PipelineError> {
        let reservation = self.delivery.reserve(1, self.settings.queue_wait).await?;
        let event_id = crate::ids::event();
        let payload = owed::Owes::Unmerged {
            event_id: &event_id,
        }
        .payload();
        let at = Timestamp::now();
        let undone = self.store.unmerge(survivor, absorbed, at, &payload).await?;
        let owed = store::Owed::about_contact(
            survivor,
            store::owed_unmerged_key(&undone.id),
            at,
            Some(undone.clone()),
            payload,
        );
        let kind_of = |id: &str| self.kind_of(id);
        let event = self
            .merge_event(&owed, EventType::ContactUnmerged, &event_id, &kind_of)
            .await?;
        tracing::info!(merge = %undone.id, survivor, restored = absorbed, "contacts unmerged");
        // The undo stands: an outbox failure leaves the event to the owed record.
        match self
            .publish_events(reservation, event.into_iter().collect(), true)
            .await
        {
            Ok(()) => self.settle((owed.contact_id, owed.key)).await,
            Err(error) => {
                tracing::warn!(%error, merge = %undone.id, "contact.unmerged not in the outbox yet; its owed record stays for the relay");
            }
        }
        Ok(undone)
    }

    /// What the store holds now for an owed record's change; `None` when the contact or
    /// conversation is gone (erased: its events are not published).
    async fn ingested_now(&self, owed: &store::Owed) -> Result<Option<Ingested>, PipelineError> {
        let (contact, conversation, history) = futures::try_join!(
            self.store.contact(&owed.contact_id),
            self.store.conversation(&owed.conversation_id),
            self.store
                .history(&owed.conversation_id, self.delivery.history_depth()),
        )?;
        let (Some(contact), Some(conversation)) = (contact, conversation) else {
            return Ok(None);
        };
        Ok(Some(Ingested {
            contact,
            conversation,
            started: owed.started,
            first_inbound: false,
            switched_from: owed.switched_from.clone(),
            history,
            merged: owed.merged.clone(),
        }))
    }

    /// Publish what changes committed before `relay_after` ago still owe (their publisher
    /// died, or the outbox failed it): the relay, run by the sweeper on every instance.
    /// Returns how many records were settled.
    pub async fn relay(
        &self,
        kind_of: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<usize, PipelineError> {
        let stale = self
            .store
            .stale_owed(self.abandoned_before(), RELAY_BATCH)
            .await?;
        let mut settled = 0;
        for owed in stale {
            let (debt, ingested, events) = match self.owed_events(&owed, kind_of).await {
                Ok(found) => found,
                Err(PipelineError::Invalid(error)) => {
                    // Unreadable (a payload of an incompatible version): nothing can be
                    // published from it; keeping it would block nothing but log forever.
                    tracing::error!(%error, contact = %owed.contact_id, "owed record dropped");
                    (None, None, Vec::new())
                }
                Err(error) => return Err(error),
            };
            let reservation = self
                .delivery
                .reserve(events.len().max(1), self.settings.queue_wait)
                .await?;
            tracing::warn!(contact = %owed.contact_id, key = %owed.key.replace('\u{1f}', "/"), committed_at = %owed.at, events = events.len(), "relaying events a change committed but never published");
            reservation
                .publish(events.into_iter().map(Arc::new).collect())
                .await?;
            self.follow_up(&owed, debt.as_ref(), ingested.as_ref())
                .await?;
            self.store.settle(&[(owed.contact_id, owed.key)]).await?;
            metrics::owed_republished("relay");
            settled += 1;
        }
        Ok(settled)
    }

    /// A link token in the event (message text or start/ref payload) that is live: merge
    /// the sender into the contact it was issued for, the merge's `contact.merged` kept
    /// owed (id `merged_id`) until the event that carries it is out. Returns the token and
    /// the merge (`None` when the sender already is that contact).
    async fn redeem_link_token(
        &self,
        channel: &ChannelMeta,
        event: &Normalized,
        merged_id: &str,
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
            .link_sender(
                &event.person,
                &contact,
                &evidence,
                event.at,
                &owed::Owes::Merged {
                    event_id: merged_id,
                }
                .payload(),
            )
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
        author: Option<crate::outcome::Author>,
    ) -> Result<Arc<Event>, PipelineError> {
        let reservation = self.delivery.reserve(1, self.settings.queue_wait).await?;
        let sent = owed::Sent {
            event_id: crate::ids::event(),
            at: Timestamp::now(),
            channel: ChannelRef {
                id: channel.id.clone(),
                kind: channel.kind.clone(),
                account: None,
            },
            external_id: external_id.to_owned(),
            message: Arc::new(message),
            author,
        };
        let entry = normalize::history_entry(
            &sent.event_id,
            sent.at,
            &channel.id,
            Some(external_id),
            &sent.message,
        );
        let outbound = Outbound {
            conversation_id: conversation_id.to_owned(),
            message: entry,
            owed: owed::Owes::Sent(&sent).payload(),
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
        crate::fault::point("after_commit");
        let event = Arc::new(owed::sent_event(&sent, &ingested));
        let key = store::owed_outbound_key(&sent.event_id);
        let started = Instant::now();
        reservation.publish(vec![event.clone()]).await?;
        self.metrics.publish.record(started.elapsed().as_secs_f64());
        if self.outcomes.enabled {
            let change = crate::outcome::rules::Change::BusinessMessage {
                at: sent.at,
                author: sent.author.as_ref(),
            };
            self.track_logged(conversation_id, &change, None).await?;
        }
        self.settle((ingested.contact.id.clone(), key)).await;
        Ok(event)
    }
}

/// Whether `event`'s message fits the channel's limits; `TooLarge` names the limit (the
/// provider gets 413 `message_too_large`).
pub fn within_limits(channel: &ChannelMeta, event: &Normalized) -> Result<(), PipelineError> {
    let Some(message) = &event.message else {
        return Ok(());
    };
    let text = message.text.as_deref().map_or(0, str::len);
    if text > channel.max_text_bytes {
        return Err(PipelineError::TooLarge(format!(
            "message `{}` has {text} bytes of text; channel `{}` stores at most {} (limits.max_text_bytes)",
            event.external_id, channel.id, channel.max_text_bytes
        )));
    }
    if message.parts.len() > channel.max_parts {
        return Err(PipelineError::TooLarge(format!(
            "message `{}` has {} parts; channel `{}` stores at most {} (limits.max_parts)",
            event.external_id,
            message.parts.len(),
            channel.id,
            channel.max_parts
        )));
    }
    Ok(())
}

/// How often a duplicate looks again at an owed record another attempt is publishing.
const OWED_POLL: Duration = Duration::from_millis(50);

/// Owed records the relay publishes per sweep.
const RELAY_BATCH: usize = 100;

/// The debt of a normalized inbound event: the event, moved, with the ids of the events
/// it may cause decided now; and the sender, which the store keeps rather than the debt.
fn inbound_debt(
    channel: &ChannelMeta,
    event: Normalized,
    received_at: Timestamp,
    raw: Option<serde_json::Value>,
    caused_ids: [String; 4],
    link_merge: Option<crate::store::Merge>,
) -> (owed::Inbound, crate::store::Person) {
    let inbound = owed::Inbound {
        event_id: event.event_id,
        caused_ids,
        kind: event.kind,
        channel: ChannelRef {
            id: channel.id.clone(),
            kind: channel.kind.clone(),
            account: event.account,
        },
        external_id: event.external_id,
        at: event.at,
        received_at,
        message: event.message,
        status: event.status,
        reaction: event.reaction,
        target_message_id: event.target_message_id,
        referral: event.referral,
        raw,
        link_merge,
    };
    (inbound, event.person)
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
