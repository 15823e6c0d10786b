//! Closes idle conversations and publishes `conversation.closed`. Runs on every gateway
//! instance; the store closes each conversation once, so each event is published once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;

use crate::app::App;
use crate::event::{ChannelRef, Event, EventType, SCHEMA_VERSION};
use crate::store::{Contact, Conversation};

/// Conversations closed per store call (and delivery room reserved for them).
const BATCH: usize = 100;
/// How long a sweep waits for delivery room before trying again next interval.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Sweep every `interval` while the app lives.
pub fn spawn(app: Weak<App>, interval: Duration) {
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(app) = app.upgrade() else {
                return;
            };
            sweep(&app).await;
        }
    });
}

/// Close what is idle now, in batches, publishing one event per closed conversation.
pub async fn sweep(app: &Arc<App>) {
    loop {
        let Ok(reservation) = app.delivery.reserve(BATCH, QUEUE_WAIT).await else {
            tracing::debug!("conversation sweep postponed: delivery has no room");
            return;
        };
        let closed = match app
            .pipeline
            .store()
            .close_idle(Timestamp::now(), app.pipeline.inactivity(), BATCH)
            .await
        {
            Ok(closed) => closed,
            Err(error) => {
                tracing::warn!(%error, "conversation sweep failed; retrying next interval");
                return;
            }
        };
        let count = closed.len();
        let events = closed
            .iter()
            .map(|(contact, conversation)| Arc::new(closed_event(app, contact, conversation)))
            .collect();
        if let Err(error) = reservation.publish(events).await {
            // The conversations are closed; delivery keeps the events until the outbox
            // answers again.
            tracing::warn!(%error, "conversation.closed events kept in memory until the outbox answers again");
        }
        if count > 0 {
            tracing::debug!(count, "idle conversations closed");
        }
        if count < BATCH {
            return;
        }
    }
}

fn closed_event(app: &App, contact: &Contact, conversation: &Conversation) -> Event {
    let now = Timestamp::now();
    let channel = conversation.current_channel.clone();
    Event {
        id: crate::ids::event(),
        kind: EventType::ConversationClosed,
        schema: SCHEMA_VERSION.to_owned(),
        occurred_at: now,
        received_at: now,
        channel: ChannelRef {
            kind: app
                .channel_meta(&channel)
                .map(|meta| meta.kind)
                .unwrap_or_default(),
            id: channel,
            account: None,
        },
        external_id: None,
        contact: contact.snapshot(),
        conversation: conversation.snapshot(),
        message: None,
        status: None,
        reaction: None,
        target_message_id: None,
        referral: None,
        merge: None,
        history: Vec::new(),
        raw: None,
    }
}
