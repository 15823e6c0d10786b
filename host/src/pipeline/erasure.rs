//! Erasing a contact (`DELETE /v1/contacts/{id}`, the console, `[store]
//! contact_retention`) and the `contact.erased` it owes.
//!
//! The erasure spans several writes (on Redis, several slots). Its owed record is the
//! first of them and the last to go: a crash part-way leaves the record, and the relay
//! erases again (erasing is idempotent) and publishes the event the record holds.

use std::sync::OnceLock;

use jiff::Timestamp;

use super::{Pipeline, PipelineError, owed};
use crate::event::Event;
use crate::store::{self, Erased};

impl Pipeline {
    /// Erase contact `id` (with the contacts merged into it, their handles, links,
    /// conversations and messages) and publish `contact.erased`. `None` when unknown.
    /// An outbox failure after the erasure leaves the event to its owed record.
    pub async fn erase(&self, id: &str) -> Result<Option<Erased>, PipelineError> {
        let reservation = self.delivery.reserve(1, self.settings.queue_wait).await?;
        let event = OnceLock::new();
        let owes = |erased: &Erased| {
            let built = owed::erased_event(erased, &|channel: &str| self.kind_of(channel));
            let payload = owed::Owes::Erased { event: &built }.payload();
            // One call per erasure: the event published is the one kept.
            let _ = event.set(built);
            payload
        };
        let Some(erased) = self.store.erase(id, Timestamp::now(), &owes).await? else {
            return Ok(None);
        };
        crate::fault::point("after_commit");
        tracing::info!(contact = %id, absorbed = ?erased.absorbed, conversations = erased.conversations.len(), "contact erased");
        // A backend that kept no record still erased: publish what it erased.
        let event = event
            .into_inner()
            .unwrap_or_else(|| owed::erased_event(&erased, &|channel: &str| self.kind_of(channel)));
        match self.publish_events(reservation, vec![event], true).await {
            Ok(()) => {
                self.settle((id.to_owned(), store::owed_erased_key(id)))
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, contact = %id, "contact.erased not in the outbox yet; its owed record stays for the relay");
            }
        }
        Ok(Some(erased))
    }

    /// The event of an owed erasure, once the erasure is complete: a publisher that died
    /// part-way left contacts, handles or conversations behind, which go now.
    pub(super) async fn finish_erasure(
        &self,
        owed: &store::Owed,
        event: &Event,
    ) -> Result<Event, PipelineError> {
        let payload = owed.payload.clone();
        self.store
            .erase(&owed.contact_id, owed.at, &move |_: &Erased| {
                payload.clone()
            })
            .await?;
        Ok(event.clone())
    }
}
