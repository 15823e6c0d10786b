//! The context store: contacts, identity, conversations, history and dedupe keys.
//!
//! [`ContextStore`] is shaped for many gateway instances: the hot path is one call,
//! [`ContextStore::ingest`], performed atomically, so two instances never race on a
//! read-modify-write. What an event does to a contact is decided in [`rules`].
//!
//! The [`Engine`] implements every operation (context, outcome tables, plugin registry)
//! once, over the one small trait a backend implements, [`Backend`]: read records with
//! their versions, commit writes if what was read is unchanged, scan a prefix.
//! [`MemoryStore`] is the engine on the embedded memory backend (one process,
//! ephemeral). [`RedisStore`] (many instances on one Redis or Redis Cluster) implements
//! the operations itself, to make an inbound message one Redis request
//! (docs/store.md).

pub mod engine;
pub mod link;
mod measured;
pub mod memory;
mod model;
pub mod outcomes;
pub mod plugins;
mod redis;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

pub use engine::{Backend, Engine};
pub use link::{DeepLinks, IdentitySettings};
pub use measured::Measured;
pub use memory::MemoryStore;
pub use model::{
    Closed, Contact, ContactDetails, Conversation, Erased, Ingest, IngestPolicy, Ingested,
    LinkStrength, Merge, Outbound, Owed, Person, ProbableLink, TimelineEntry, TimelinePage,
    merges_on, owed_closed_key, owed_erased_key, owed_inbound_key, owed_merged_key,
    owed_outbound_key, owed_unmerged_key,
};
pub use outcomes::{
    OutcomeCommit, OutcomeStore, RollupWrite, StartedRef, Tracked, owed_conversion_key,
    owed_outcome_key,
};
pub use redis::{RedisStore, RedisTls, is_redis_url, redact as redact_url, seeds as redis_seeds};

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
    #[error(
        "unsupported store URL `{0}` (use memory://, redis://, rediss://, redis+cluster:// or rediss+cluster://)"
    )]
    UnsupportedUrl(String),
    /// The operation contradicts the records (e.g. merging a contact that is merged
    /// elsewhere).
    #[error("{0}")]
    Conflict(String),
    /// A Redis URL that cannot be used.
    #[error("invalid store URL: {0}")]
    InvalidUrl(String),
    /// `[store] tls_ca_file` cannot be used.
    #[error("[store] tls_ca_file: {0}")]
    InvalidTls(String),
}

impl From<crate::redis_url::RedisUrlError> for StoreError {
    fn from(error: crate::redis_url::RedisUrlError) -> Self {
        use crate::redis_url::RedisUrlError as E;
        match error {
            E::InvalidUrl(why) => StoreError::InvalidUrl(why),
            E::InvalidTls(why) => StoreError::InvalidTls(why),
        }
    }
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

    /// The contact with its merges and conversations; `None` when unknown.
    async fn contact_details(&self, id: &str) -> Result<Option<ContactDetails>, StoreError>;

    /// Remember link token `token` for `contact_id` during `ttl`.
    async fn put_link_token(
        &self,
        token: &str,
        contact_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The contact a live link token was issued for.
    async fn link_token(&self, token: &str) -> Result<Option<String>, StoreError>;

    /// Forget a redeemed link token.
    async fn drop_link_token(&self, token: &str) -> Result<(), StoreError>;

    /// Link the sender `person` to `survivor` on verified evidence: the sender's contact
    /// (created when the sender is new) is merged into `survivor`. `None` when the sender
    /// already is `survivor`.
    ///
    /// In the same atomic step as recording the merge, the survivor keeps the owed record
    /// `owed` (the `contact.merged` it owes) under
    /// [`owed_merged_key`](model::owed_merged_key), with the merge: the message that
    /// redeemed the token is recorded by a later call, and a crash in between must not
    /// lose the event.
    async fn link_sender(
        &self,
        person: &Person,
        survivor: &str,
        evidence: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Option<Merge>, StoreError>;

    /// Merge `absorbed` into `survivor` (reversible with [`ContextStore::unmerge`]);
    /// merging again is a no-op returning the live merge.
    async fn merge(
        &self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError>;

    /// Undo the live merge of `absorbed` into `survivor`: its handles point at it again.
    /// In the same atomic step as marking the merge undone, the survivor keeps the owed
    /// record `owed` (the `contact.unmerged` it owes) under
    /// [`owed_unmerged_key`](model::owed_unmerged_key), with the undone merge.
    async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Merge, StoreError>;

    /// Erase a contact, the contacts merged into it, their handles, links, conversations
    /// and messages. `None` when unknown.
    ///
    /// The contact's owed record of its `contact.erased` ([`owed_erased_key`], payload
    /// made by `owes` from what is about to go) is written before anything is removed, in
    /// the erasure's first atomic step, and outlives the erasure until it is settled: a
    /// crash part-way leaves it to the relay, which erases again (erasing is idempotent)
    /// and publishes. Every other owed record of the erased contacts goes with them.
    async fn erase(
        &self,
        id: &str,
        at: Timestamp,
        owes: &(dyn for<'e> Fn(&'e Erased) -> String + Send + Sync),
    ) -> Result<Option<Erased>, StoreError>;

    /// Close up to `limit` open conversations idle for `inactivity` as of `now`; returns
    /// each with its contact and the owed record of its `conversation.closed`, kept with
    /// the close (its payload made by `payload`). Safe on every instance at once: a
    /// conversation is closed, and returned, once.
    async fn close_idle(
        &self,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<Closed>, StoreError>;

    /// The owed record of an inbound event of the sender with channel-user handle `user`,
    /// already recorded (a provider's retry finds it as a duplicate) while it is not settled: the first attempt committed, but its
    /// events may never have reached the outbox.
    async fn owed_inbound(
        &self,
        user: &crate::event::Handle,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<Owed>, StoreError>;

    /// Up to `limit` owed records committed before `before`: changes whose publisher
    /// died (or failed) before it settled them.
    async fn stale_owed(&self, before: Timestamp, limit: usize) -> Result<Vec<Owed>, StoreError>;

    /// Up to `limit` contacts with no message in either direction since `before` (nor
    /// created since), not merged into another contact: what `[store] contact_retention`
    /// erases.
    async fn idle_contacts(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// The events of these owed records (`(contact id, key)`) are in the outbox: drop
    /// the records. Settling one that is gone is not an error.
    async fn settle(&self, owed: &[(String, String)]) -> Result<(), StoreError>;

    /// Up to `limit` timeline entries of a conversation from position `from` (0 = the
    /// first), with the cursor of the next page.
    async fn timeline(
        &self,
        conversation_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<TimelinePage, StoreError>;

    /// Remember that console session `id` was signed out, for `ttl` (what was left of
    /// its life): every instance sharing the store refuses it from now on.
    async fn revoke_session(&self, id: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Whether console session `id` was signed out (and would not have expired yet).
    async fn session_revoked(&self, id: &str) -> Result<bool, StoreError>;

    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Redis round trips made since start (`None` for backends without any), for
    /// benchmarks.
    fn round_trips(&self) -> Option<u64> {
        None
    }

    /// The backend's outcome tables (records, due and started indexes, rollups).
    fn outcomes(&self) -> &dyn OutcomeStore;

    /// The backend's name, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
}

/// Open the store named by `url`, keeping messages as long as their conversation.
pub fn open(url: &str) -> Result<Arc<dyn ContextStore>, StoreError> {
    open_with(url, None)
}

/// Open the store named by `url`, dropping messages older than `retention`.
pub fn open_with(
    url: &str,
    retention: Option<Duration>,
) -> Result<Arc<dyn ContextStore>, StoreError> {
    open_with_tls(url, retention, &RedisTls::default())
}

/// [`open_with`], trusting `tls` for `rediss://` connections.
pub fn open_with_tls(
    url: &str,
    retention: Option<Duration>,
    tls: &RedisTls,
) -> Result<Arc<dyn ContextStore>, StoreError> {
    match url {
        "memory://" | "memory" => {
            tracing::warn!(
                "using the embedded MEMORY store: one process only, everything is lost on restart \
                 (set [store] url = \"redis://…\" in production)"
            );
            Ok(measured(Arc::new(MemoryStore::with_retention(retention))))
        }
        url if redis::is_redis_url(url) => {
            let store = RedisStore::connect(url, retention, tls)?;
            tracing::info!(redis = store.display(), "using the Redis store");
            Ok(measured(Arc::new(store)))
        }
        other => Err(StoreError::UnsupportedUrl(redis::redact(other))),
    }
}

/// Open the shared plugin registry of the store named by `url` (the same URL as the
/// context store: the registry lives beside the contacts).
pub fn open_plugins(url: &str) -> Result<Arc<dyn plugins::PluginRegistry>, StoreError> {
    open_plugins_with_tls(url, &RedisTls::default())
}

/// [`open_plugins`], trusting `tls` for `rediss://` connections.
pub fn open_plugins_with_tls(
    url: &str,
    tls: &RedisTls,
) -> Result<Arc<dyn plugins::PluginRegistry>, StoreError> {
    match url {
        "memory://" | "memory" => Ok(Arc::new(MemoryStore::new())),
        url if redis::is_redis_url(url) => {
            Ok(Arc::new(redis::plugins::RedisPlugins::connect(url, tls)?))
        }
        other => Err(StoreError::UnsupportedUrl(redis::redact(other))),
    }
}

fn measured(store: Arc<dyn ContextStore>) -> Arc<dyn ContextStore> {
    Arc::new(Measured::new(store))
}
