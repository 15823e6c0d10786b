//! The context store: contacts, identity, conversations, history and dedupe keys.
//!
//! [`ContextStore`] is shaped for a Redis backend with many gateway instances: the hot
//! path is one call, [`ContextStore::ingest`], which a backend performs atomically (the
//! memory backend under its lock, Redis in one script), so two instances never race on a
//! read-modify-write. Today's backend is [`MemoryStore`] (one process, ephemeral).

mod memory;
mod model;

use std::sync::Arc;

use async_trait::async_trait;

pub use memory::MemoryStore;
pub use model::{Contact, Conversation, Ingest, IngestPolicy, Ingested, Outbound, Person};

/// Why the store could not answer. Callers answer 503 so the provider retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or failed.
    #[error("context store unavailable: {0}")]
    Unavailable(String),
    /// The record does not exist.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// `contact` or `conversation`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The store URL is not supported.
    #[error("unsupported store URL `{0}` (this build supports memory://)")]
    UnsupportedUrl(String),
}

/// The operations the pipeline and API need.
#[async_trait]
pub trait ContextStore: Send + Sync + 'static {
    /// Record one inbound event atomically: dedupe on (channel, external id), resolve or
    /// create the contact, continue or open the conversation, append history, update
    /// attribution. `Ok(None)` when the event was seen before.
    async fn ingest(
        &self,
        ingest: Ingest,
        policy: &IngestPolicy,
    ) -> Result<Option<Ingested>, StoreError>;

    /// Record a message the business sent through omnigate.
    async fn record_outbound(
        &self,
        outbound: Outbound,
        policy: &IngestPolicy,
    ) -> Result<Ingested, StoreError>;

    /// A contact by id.
    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError>;

    /// A conversation by id.
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;

    /// The last `limit` messages of a conversation, oldest first.
    async fn history(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<crate::event::HistoryEntry>, StoreError>;

    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The backend's name, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
}

/// Open the store named by `url`.
pub fn open(url: &str) -> Result<Arc<dyn ContextStore>, StoreError> {
    match url {
        "memory://" | "memory" => {
            tracing::warn!(
                "using the embedded MEMORY store: one process only, everything is lost on restart \
                 (set [store] url = \"redis://…\" in production)"
            );
            Ok(Arc::new(MemoryStore::new()))
        }
        other => Err(StoreError::UnsupportedUrl(other.to_owned())),
    }
}
