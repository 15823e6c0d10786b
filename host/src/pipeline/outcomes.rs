//! The outcome flow: run a change through the outcome rules (`outcome::rules`) and keep
//! the decision by compare-and-set, with what it owes (its events and counter changes)
//! in the same atomic step; then publish the events, add the counters once, settle.
//!
//! Called after an inbound event that matters (a new conversation, a referral, the
//! customer's first message, an echoed business message), after a reply sent through
//! the API, by the API's stage moves and conversions, and by the sweeper when a
//! conversation is due (SLA deadline, reply window end, end by inactivity).

use std::sync::Arc;

use jiff::Timestamp;

use super::owed::{self, OutcomeDebt, OutcomeEvent as Spec};
use super::rollups::{self, PendingRollup};
use super::{Pipeline, PipelineError};
use crate::event::{ConversionInfo, EventType, FirstResponseInfo, LostInfo, StageInfo};
use crate::outcome::rollup;
use crate::outcome::rules::{self, Change, Decision, Facts, OutcomeEvent, RuleError};
use crate::outcome::{ConversionRef, OutcomeRecord};
use crate::store::{self, Conversation, OutcomeCommit, StoreError};

/// Compare-and-set attempts before giving up (each loser reads and decides again).
const ATTEMPTS: usize = 8;

/// Why an outcome change was not kept.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// The rules refuse it (a 4xx for the caller).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// No such conversation.
    #[error("no conversation `{0}`")]
    NotFound(String),
    /// The store or delivery failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<StoreError> for OutcomeError {
    fn from(error: StoreError) -> Self {
        OutcomeError::Pipeline(PipelineError::Store(error))
    }
}

/// What a change did to a conversation's outcome.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The conversation as read.
    pub conversation: Conversation,
    /// The record after the change.
    pub record: OutcomeRecord,
    /// Whether the change caused anything (events or counter changes).
    pub changed: bool,
}

/// A conversion as the conversion event shows it.
pub fn conversion_info(
    conversion: &ConversionRef,
    attributed: Result<(), &str>,
    consent: Option<serde_json::Value>,
    properties: Option<serde_json::Value>,
) -> ConversionInfo {
    ConversionInfo {
        id: conversion.id.clone(),
        name: conversion.name.clone(),
        value: conversion.value.map(|value| value.to_string()),
        currency: conversion.currency.clone(),
        occurred_at: conversion.occurred_at,
        attributed: attributed.is_ok(),
        reason: attributed.err().map(str::to_owned),
        consent,
        properties,
    }
}

/// The rules' view of a conversation.
pub fn facts(conversation: &Conversation, inactivity: std::time::Duration) -> Facts<'_> {
    Facts {
        started_at: conversation.started_at,
        first_channel: conversation
            .channels_used
            .first()
            .map_or(conversation.current_channel.as_str(), String::as_str),
        first_touch: conversation.attribution.first_touch.as_deref(),
        last_touch: conversation.attribution.last_touch.as_deref(),
        first_inbound_at: conversation.first_inbound_at,
        awaiting_since: conversation.awaiting_since,
        reply_window_until: conversation.reply_window_until,
        last_activity_at: conversation.last_activity_at,
        closed: conversation.status == crate::event::ConversationStatus::Closed,
        inactivity,
    }
}

impl Pipeline {
    /// Whether outcomes are tracked.
    pub fn tracks_outcomes(&self) -> bool {
        self.outcomes.enabled
    }

    /// The `[outcomes]` settings.
    pub fn outcome_settings(&self) -> &crate::outcome::OutcomeSettings {
        &self.outcomes
    }

    /// Run `change` on conversation `id` and keep the decision; then publish what it owes.
    /// `fresh` is the conversation as an ingest that opened it returned (no record yet:
    /// the read is skipped). `extra` decorates the conversion event (consent, properties).
    pub async fn track(
        &self,
        conversation_id: &str,
        change: &Change<'_>,
        fresh: Option<&Conversation>,
        conversion_extra: Option<(Option<serde_json::Value>, Option<serde_json::Value>)>,
    ) -> Result<Tracked, OutcomeError> {
        self.track_owing(conversation_id, change, fresh, conversion_extra, false)
            .await
    }

    /// [`Self::track`]; `hinted`: the caller holds an unsettled owed record of the
    /// conversation's contact (see [`OutcomeCommit::hinted`]).
    async fn track_owing(
        &self,
        conversation_id: &str,
        change: &Change<'_>,
        fresh: Option<&Conversation>,
        conversion_extra: Option<(Option<serde_json::Value>, Option<serde_json::Value>)>,
        hinted: bool,
    ) -> Result<Tracked, OutcomeError> {
        let mut fresh = fresh.cloned();
        for _ in 0..ATTEMPTS {
            let (conversation, version, old) = match fresh.take() {
                Some(conversation) => (conversation, 0, None),
                None => self.read_outcome(conversation_id).await?,
            };
            let now = Timestamp::now();
            let facts = facts(&conversation, self.settings.inactivity);
            let Decision { record, events } =
                rules::decide(old.as_ref(), &facts, change, now, &self.outcomes)?;
            if old.as_ref() == Some(&record) && events.is_empty() {
                return Ok(Tracked {
                    conversation,
                    record,
                    changed: false,
                });
            }
            let deltas = rollup::deltas(old.as_ref(), &record);
            let changed = !events.is_empty() || !deltas.is_empty();
            let mut debt = OutcomeDebt {
                conversation_id: conversation.id.clone(),
                events: events
                    .iter()
                    .map(|event| spec(event, conversion_extra.clone()))
                    .collect(),
                deltas,
            };
            let key = store::owed_outcome_key(&conversation.id, version);
            let payload = owed::Owes::Outcome(&debt).payload();
            let json = record.to_json();
            let commit = OutcomeCommit {
                contact_id: &conversation.contact_id,
                conversation_id: &conversation.id,
                version,
                record: &json,
                started_at: conversation.started_at,
                due: record.due,
                owed: changed.then_some((key.as_str(), payload.as_str())),
                hinted,
            };
            if !self.store.outcomes().commit(&commit).await? {
                continue;
            }
            crate::fault::point("after_outcome_commit");
            if changed {
                self.publish_outcome(&conversation.contact_id, &key, &mut debt)
                    .await?;
            }
            count_outcome_events(&conversation.current_channel, &debt);
            return Ok(Tracked {
                conversation,
                record,
                changed,
            });
        }
        Err(OutcomeError::Pipeline(PipelineError::Store(
            StoreError::Conflict(format!(
                "conversation `{conversation_id}` changed {ATTEMPTS} times while its outcome was being decided; try again"
            )),
        )))
    }

    /// The conversation, its record's version and the record.
    async fn read_outcome(
        &self,
        conversation_id: &str,
    ) -> Result<(Conversation, u64, Option<OutcomeRecord>), OutcomeError> {
        let tracked = self
            .store
            .outcomes()
            .tracked(conversation_id)
            .await?
            .ok_or_else(|| OutcomeError::NotFound(conversation_id.to_owned()))?;
        let record = tracked
            .record
            .as_deref()
            .map(OutcomeRecord::from_json)
            .transpose()
            .map_err(|error| {
                OutcomeError::Pipeline(PipelineError::Invalid(super::InvalidEvent(format!(
                    "outcome record of {conversation_id}: {error}"
                ))))
            })?;
        Ok((tracked.conversation, tracked.version, record))
    }

    /// Publish an outcome debt's events, add its counters once, settle it. A debt with
    /// counters only gives its deltas to the batch writer (taken, not copied).
    pub(super) async fn publish_outcome(
        &self,
        contact_id: &str,
        key: &str,
        debt: &mut OutcomeDebt,
    ) -> Result<(), PipelineError> {
        // A change with counters only (a conversation opened) is added in a batch.
        if debt.events.is_empty() {
            let pending = PendingRollup {
                contact_id: contact_id.to_owned(),
                key: key.to_owned(),
                deltas: std::mem::take(&mut debt.deltas),
            };
            if let Err(pending) = self.rollups.push(pending) {
                rollups::write(self.store.as_ref(), &[pending]).await?;
            }
            return Ok(());
        }
        let events = self.outcome_debt_events(contact_id, debt).await?;
        if !events.is_empty() {
            let reservation = self
                .delivery
                .reserve(events.len(), self.settings.queue_wait)
                .await?;
            reservation
                .publish(events.into_iter().map(Arc::new).collect())
                .await?;
        }
        self.add_rollups(key, debt).await?;
        self.settle((contact_id.to_owned(), key.to_owned())).await;
        Ok(())
    }

    /// The events of an outcome debt with the contact and conversation as they are now
    /// (none when the contact was erased: its events carry its data).
    pub(super) async fn outcome_debt_events(
        &self,
        contact_id: &str,
        debt: &OutcomeDebt,
    ) -> Result<Vec<crate::event::Event>, PipelineError> {
        let (contact, conversation) = futures::try_join!(self.store.contact(contact_id), async {
            if debt.conversation_id.is_empty() {
                Ok(None)
            } else {
                self.store.conversation(&debt.conversation_id).await
            }
        })?;
        let Some(contact) = contact else {
            return Ok(Vec::new());
        };
        let kind_of = |channel: &str| self.kind_of(channel);
        Ok(owed::outcome_events(
            debt,
            contact.snapshot(),
            conversation.as_ref(),
            &kind_of,
        ))
    }

    /// Add a debt's counter changes to the hour, day, month and year buckets, once per
    /// `key` (added already: nothing to do).
    pub(super) async fn add_rollups(
        &self,
        key: &str,
        debt: &OutcomeDebt,
    ) -> Result<(), PipelineError> {
        if debt.deltas.is_empty() {
            return Ok(());
        }
        let writes = rollups::summed(debt.deltas.iter());
        self.store
            .outcomes()
            .add_rollups(&[key.to_owned()], &writes)
            .await?;
        Ok(())
    }

    /// Wait until the counter changes queued so far are in the rollups (a report reads
    /// its own instance's writes).
    pub async fn flush_rollups(&self) {
        self.rollups.flush().await;
    }

    /// Record a conversion no conversation is found for: `conversion.recorded` with
    /// `attributed: false` and the reason, about the contact alone (kept as an owed
    /// record with the contact first, so a crash does not lose it).
    pub async fn record_unattributed(
        &self,
        contact_id: &str,
        input: &crate::outcome::conversion::ConversionInput,
        reason: &str,
    ) -> Result<(), PipelineError> {
        let conversion = &input.conversion;
        let info = conversion_info(
            conversion,
            Err(reason),
            input.consent.clone(),
            input.properties.clone(),
        );
        let mut debt = OutcomeDebt {
            conversation_id: String::new(),
            events: vec![Spec {
                // Named by the conversion: two concurrent first attempts publish one id.
                id: crate::ids::event_named(&conversion.id, conversion.occurred_at),
                kind: EventType::ConversionRecorded,
                at: conversion.occurred_at,
                first_response: None,
                stage: None,
                lost: None,
                conversion: Some(info),
            }],
            deltas: Vec::new(),
        };
        let key = store::owed_conversion_key(&conversion.id);
        let payload = owed::Owes::Outcome(&debt).payload();
        if !self
            .store
            .outcomes()
            .owe_once(contact_id, &key, &payload)
            .await?
        {
            // A concurrent attempt owes it and publishes it (or the relay does).
            return Ok(());
        }
        if let Some(info) = debt
            .events
            .first()
            .and_then(|event| event.conversion.as_ref())
        {
            crate::metrics::conversion_recorded("", info);
        }
        self.publish_outcome(contact_id, &key, &mut debt).await
    }

    /// Look at the conversations due now (SLA deadlines, reply windows, ends): the
    /// sweeper's outcome pass. Returns how many changed.
    pub async fn outcomes_due(&self) -> Result<usize, PipelineError> {
        if !self.outcomes.enabled {
            return Ok(0);
        }
        let due = self
            .store
            .outcomes()
            .due(Timestamp::now(), DUE_BATCH)
            .await?;
        let mut changed = 0;
        for conversation_id in due {
            match self
                .track(&conversation_id, &Change::Observe, None, None)
                .await
            {
                Ok(tracked) => {
                    changed += usize::from(tracked.changed);
                    if tracked.record.due.is_none() {
                        self.store.outcomes().undue(&conversation_id).await?;
                    }
                }
                Err(OutcomeError::NotFound(_)) => {
                    self.store.outcomes().undue(&conversation_id).await?;
                }
                Err(OutcomeError::Pipeline(error)) => return Err(error),
                Err(OutcomeError::Rule(error)) => {
                    tracing::error!(%error, conversation = %conversation_id, "outcome rules refused an observation");
                }
            }
        }
        Ok(changed)
    }

    /// The outcome change an inbound event causes, if it matters to the outcome: a
    /// business message echoed by the provider, or an event that opened the conversation,
    /// brought a referral or is the customer's first message.
    pub(super) async fn track_inbound(
        &self,
        inbound: &owed::Inbound,
        ingested: &store::Ingested,
    ) -> Result<(), PipelineError> {
        if !self.outcomes.enabled {
            return Ok(());
        }
        let conversation = &ingested.conversation;
        let echo = inbound.kind == EventType::MessageSent;
        // A referral matters when it became the first touch (a later one changes the
        // last touch's keys at most, which the next decision of the conversation — its
        // reply, stage, conversion or end — carries over: every inbound message with a
        // page URL would otherwise cost a decision).
        let first_touch =
            inbound.referral.is_some() && conversation.attribution.first_touch == inbound.referral;
        if !(echo || ingested.first_inbound || ingested.started || first_touch) {
            return Ok(());
        }
        let change = if echo {
            Change::BusinessMessage {
                at: inbound.at,
                author: None,
            }
        } else {
            Change::Observe
        };
        let fresh = ingested.started.then_some(conversation);
        self.track_logged(&conversation.id, &change, fresh).await
    }

    /// [`Self::track`] for changes the store already accepted (a message), called while
    /// that change's owed record is not settled yet: a refusal by the rules cannot
    /// happen for these and is only logged.
    pub(super) async fn track_logged(
        &self,
        conversation_id: &str,
        change: &Change<'_>,
        fresh: Option<&Conversation>,
    ) -> Result<(), PipelineError> {
        match self
            .track_owing(conversation_id, change, fresh, None, true)
            .await
        {
            Ok(_) | Err(OutcomeError::NotFound(_)) => Ok(()),
            Err(OutcomeError::Rule(error)) => {
                tracing::error!(%error, conversation = %conversation_id, "outcome rules refused a message");
                Ok(())
            }
            Err(OutcomeError::Pipeline(error)) => Err(error),
        }
    }
}

/// Conversations the due pass looks at per sweep.
const DUE_BATCH: usize = 200;

/// An outcome event as kept in a debt, with its id decided now.
fn spec(
    event: &OutcomeEvent,
    conversion_extra: Option<(Option<serde_json::Value>, Option<serde_json::Value>)>,
) -> Spec {
    let spec = |kind: EventType, at: Timestamp| Spec {
        id: crate::ids::event(),
        kind,
        at,
        first_response: None,
        stage: None,
        lost: None,
        conversion: None,
    };
    match event {
        OutcomeEvent::FirstResponse {
            at,
            seconds,
            within_sla,
            author,
        } => Spec {
            first_response: Some(FirstResponseInfo {
                seconds: *seconds,
                within_sla: *within_sla,
                author: author.clone(),
            }),
            ..spec(EventType::ConversationFirstResponse, *at)
        },
        OutcomeEvent::StageChanged {
            at,
            from,
            to,
            reason,
            by,
        } => Spec {
            stage: Some(StageInfo {
                from: from.clone(),
                to: to.clone(),
                reason: reason.clone(),
                by: by.clone(),
            }),
            ..spec(EventType::ConversationStageChanged, *at)
        },
        OutcomeEvent::OpportunityLost { at, reason } => Spec {
            lost: Some(LostInfo {
                reason: reason.clone(),
            }),
            ..spec(EventType::ConversationOpportunityLost, *at)
        },
        OutcomeEvent::ConversionRecorded { conversion } => {
            let (consent, properties) = conversion_extra.unwrap_or_default();
            Spec {
                conversion: Some(conversion_info(conversion, Ok(()), consent, properties)),
                ..spec(EventType::ConversionRecorded, conversion.occurred_at)
            }
        }
    }
}

/// What an outcome change caused, counted per the channel the conversation is on.
fn count_outcome_events(channel: &str, debt: &OutcomeDebt) {
    for event in &debt.events {
        if let Some(first) = &event.first_response {
            crate::metrics::first_response(channel, first.seconds);
        }
        if let Some(lost) = &event.lost {
            crate::metrics::opportunity_lost(channel, &lost.reason);
        }
        if let Some(conversion) = &event.conversion {
            crate::metrics::conversion_recorded(channel, conversion);
        }
    }
}
