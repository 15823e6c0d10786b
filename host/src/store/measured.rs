//! Every context store operation timed and its failures counted
//! (`omnigate_store_operation_duration_seconds`, `omnigate_store_errors_total`), whatever
//! the backend. `ingest` and `record_outbound` pass straight through: the pipeline times
//! them itself, `ingest` with handles registered once because it is the hot path.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;

use super::model::{
    Closed, Contact, ContactDetails, Conversation, Erased, Ingest, IngestPolicy, Ingested, Merge,
    Outbound, Owed, Person, TimelinePage,
};
use super::{ContextStore, StoreError};
use crate::event::{Handle, HistoryEntry};

/// A store whose operations are measured.
pub struct Measured {
    inner: Arc<dyn ContextStore>,
}

impl Measured {
    /// Measure `inner`.
    pub fn new(inner: Arc<dyn ContextStore>) -> Self {
        Self { inner }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        // A missing record is an answer, not a store failure.
        let ok = !matches!(result, Err(StoreError::Unavailable(_)));
        crate::metrics::store_operation(self.inner.backend(), operation, started.elapsed(), ok);
        result
    }
}

#[async_trait]
impl ContextStore for Measured {
    async fn ingest(
        &self,
        ingest: Ingest,
        policy: &IngestPolicy,
    ) -> Result<Option<Ingested>, StoreError> {
        self.inner.ingest(ingest, policy).await
    }

    async fn record_outbound(
        &self,
        outbound: Outbound,
        policy: &IngestPolicy,
    ) -> Result<Ingested, StoreError> {
        self.inner.record_outbound(outbound, policy).await
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        self.timed("contact", self.inner.contact(id)).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.timed("conversation", self.inner.conversation(id))
            .await
    }

    async fn history(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.timed("history", self.inner.history(conversation_id, limit))
            .await
    }

    async fn contact_details(&self, id: &str) -> Result<Option<ContactDetails>, StoreError> {
        self.timed("contact_details", self.inner.contact_details(id))
            .await
    }

    async fn put_link_token(
        &self,
        token: &str,
        contact_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.timed(
            "put_link_token",
            self.inner.put_link_token(token, contact_id, ttl),
        )
        .await
    }

    async fn link_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        self.timed("link_token", self.inner.link_token(token)).await
    }

    async fn drop_link_token(&self, token: &str) -> Result<(), StoreError> {
        self.timed("drop_link_token", self.inner.drop_link_token(token))
            .await
    }

    async fn revoke_session(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.timed("revoke_session", self.inner.revoke_session(id, ttl))
            .await
    }

    async fn session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        self.timed("session_revoked", self.inner.session_revoked(id))
            .await
    }

    async fn link_sender(
        &self,
        person: &Person,
        survivor: &str,
        evidence: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Option<Merge>, StoreError> {
        self.timed(
            "link_sender",
            self.inner.link_sender(person, survivor, evidence, at, owed),
        )
        .await
    }

    async fn merge(
        &self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        self.timed("merge", self.inner.merge(survivor, absorbed, evidence, at))
            .await
    }

    async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Merge, StoreError> {
        self.timed("unmerge", self.inner.unmerge(survivor, absorbed, at, owed))
            .await
    }

    async fn erase(
        &self,
        id: &str,
        at: Timestamp,
        owes: &(dyn for<'e> Fn(&'e Erased) -> String + Send + Sync),
    ) -> Result<Option<Erased>, StoreError> {
        self.timed("erase", self.inner.erase(id, at, owes)).await
    }

    async fn close_idle(
        &self,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<Closed>, StoreError> {
        self.timed(
            "close_idle",
            self.inner.close_idle(now, inactivity, limit, payload),
        )
        .await
    }

    async fn owed_inbound(
        &self,
        user: &Handle,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<Owed>, StoreError> {
        self.timed(
            "owed_inbound",
            self.inner.owed_inbound(user, channel, external_id),
        )
        .await
    }

    async fn stale_owed(&self, before: Timestamp, limit: usize) -> Result<Vec<Owed>, StoreError> {
        self.timed("stale_owed", self.inner.stale_owed(before, limit))
            .await
    }

    async fn idle_contacts(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.timed("idle_contacts", self.inner.idle_contacts(before, limit))
            .await
    }

    async fn settle(&self, owed: &[(String, String)]) -> Result<(), StoreError> {
        self.timed("settle", self.inner.settle(owed)).await
    }

    async fn timeline(
        &self,
        conversation_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        self.timed(
            "timeline",
            self.inner.timeline(conversation_id, from, limit),
        )
        .await
    }

    fn outcomes(&self) -> &dyn super::OutcomeStore {
        self.inner.outcomes()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    fn round_trips(&self) -> Option<u64> {
        self.inner.round_trips()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
