//! Relays what committed changes still owe, closes idle conversations and publishes
//! `conversation.closed`. Runs on every gateway instance; the store closes each
//! conversation once, so each event is published once (at least once after a crash).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::Timestamp;

use super::{ChannelMeta, Pipeline, PipelineError, owed};
use crate::event::ChannelRef;
use crate::store::Ingested;

/// The channels' facts, as the lifecycle swaps them (for a closed conversation's channel
/// kind).
pub type Channels = Arc<ArcSwap<HashMap<String, ChannelMeta>>>;

/// Conversations closed per store call (and delivery room reserved for them).
const BATCH: usize = 100;
/// How long a sweep waits for delivery room before trying again next interval.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Sweep every `interval` while the pipeline lives; erase contacts idle for
/// `contact_retention`, when set.
pub fn spawn(
    pipeline: Weak<Pipeline>,
    channels: Channels,
    interval: Duration,
    contact_retention: Option<Duration>,
) {
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            sweep(&pipeline, &channels).await;
            if let Some(retention) = contact_retention {
                expire_contacts(&pipeline, retention).await;
            }
        }
    });
}

/// Publish what committed changes still owe (the relay), then close what is idle now, in
/// batches, publishing one event per closed conversation.
pub async fn sweep(pipeline: &Pipeline, channels: &Channels) {
    let kind_of = |channel: &str| kind_of(channels, channel);
    match pipeline.relay(&kind_of).await {
        Ok(0) => {}
        Ok(count) => tracing::warn!(
            count,
            "relayed the events of changes that were never published"
        ),
        Err(error) => tracing::warn!(%error, "relay of owed events failed; retrying next interval"),
    }
    match pipeline.outcomes_due().await {
        Ok(0) => {}
        Ok(count) => tracing::debug!(count, "outcomes of due conversations updated"),
        Err(error) => tracing::warn!(%error, "outcome pass failed; retrying next interval"),
    }
    loop {
        let Ok(reservation) = pipeline.delivery.reserve(BATCH, QUEUE_WAIT).await else {
            tracing::debug!("conversation sweep postponed: delivery has no room");
            return;
        };
        let payload = || {
            owed::Owes::Closed {
                event_id: &crate::ids::event(),
            }
            .payload()
        };
        let closed = match pipeline
            .store()
            .close_idle(Timestamp::now(), pipeline.inactivity(), BATCH, &payload)
            .await
        {
            Ok(closed) => closed,
            Err(error) => {
                tracing::warn!(%error, "conversation sweep failed; retrying next interval");
                return;
            }
        };
        let count = closed.len();
        let mut events = Vec::with_capacity(count);
        let mut settled = Vec::with_capacity(count);
        for closed in closed {
            let Ok(owed::Debt::Closed { event_id }) =
                owed::Debt::from_payload(&closed.owed.payload)
            else {
                continue;
            };
            let ingested = Ingested {
                contact: closed.contact,
                conversation: closed.conversation,
                started: false,
                first_inbound: false,
                switched_from: None,
                history: Vec::new(),
                merged: None,
            };
            let channel = ChannelRef {
                kind: kind_of(&ingested.conversation.current_channel),
                id: ingested.conversation.current_channel.clone(),
                account: None,
            };
            events.push(Arc::new(owed::closed_event(
                &event_id,
                channel,
                closed.owed.at,
                &ingested,
            )));
            settled.push((closed.owed.contact_id, closed.owed.key));
        }
        match reservation.publish(events).await {
            Ok(()) => {
                if let Err(error) = pipeline.store().settle(&settled).await {
                    tracing::warn!(%error, "conversation.closed owed records not settled; the relay publishes them again (same ids)");
                }
            }
            // The conversations are closed and their owed records kept: the relay
            // publishes them once the outbox answers again.
            Err(error) => {
                tracing::warn!(%error, "conversation.closed events not published; the relay retries them");
            }
        }
        if count > 0 {
            tracing::debug!(count, "idle conversations closed");
        }
        if count < BATCH {
            return;
        }
    }
}

/// Erase up to a batch of contacts idle for `retention`, publishing `contact.erased` for
/// each (ids only, like the API's erasure).
pub async fn expire_contacts(pipeline: &Pipeline, retention: Duration) {
    let before = jiff::SignedDuration::try_from(retention)
        .ok()
        .and_then(|retention| Timestamp::now().checked_sub(retention).ok());
    let Some(before) = before else {
        return;
    };
    let idle = match pipeline.store().idle_contacts(before, BATCH).await {
        Ok(idle) => idle,
        Err(error) => {
            tracing::warn!(%error, "contact retention: idle contacts not listed; retrying next interval");
            return;
        }
    };
    for contact_id in idle {
        match pipeline.erase(&contact_id).await {
            Ok(Some(erased)) => {
                tracing::info!(contact = %contact_id, conversations = erased.conversations.len(), "contact erased: idle longer than [store] contact_retention");
            }
            Ok(None) => {}
            Err(PipelineError::Delivery(_)) => {
                tracing::debug!("contact retention postponed: delivery has no room");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, contact = %contact_id, "contact retention: erasure failed; retrying next interval");
                return;
            }
        }
    }
}

/// The kind of channel `id` (empty when it is gone).
fn kind_of(channels: &Channels, id: &str) -> String {
    channels
        .load()
        .get(id)
        .map(|meta| meta.kind.clone())
        .unwrap_or_default()
}
