//! The store engine: every operation of [`ContextStore`], [`OutcomeStore`] and
//! [`PluginRegistry`] written once over the one small trait a backend implements,
//! [`Backend`] (read keys with their versions; commit writes if what was read is
//! unchanged; scan a prefix in order).
//!
//! Each operation is a transaction ([`tx::Tx`]): it reads what the decision needs, the
//! [rules](crate::store::rules) decide, and the commit applies the writes, with the
//! change's owed record, only if nothing read changed meanwhile; otherwise it reads again
//! and decides again. So every change is one atomic step on any backend that can
//! compare-and-set several keys at once, and two gateway instances never race on a
//! read-modify-write. Keys: `keys.rs`; records: `records.rs`.

mod backend;
mod contacts;
mod keys;
mod outcomes;
mod plugins;
mod records;
mod threads;
mod tx;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub use self::backend::{Backend, Versioned, Write};
pub use self::records::{ContactDoc, Doc, Span, StoredActivations, ThreadDoc};
use self::tx::{Tx, not_found, scan_all};
use super::model::{
    Closed, Contact, ContactDetails, Conversation, Erased, Ingest, IngestPolicy, Ingested, Merge,
    Outbound, Owed, Person, TimelinePage, owed_closed_key, owed_erased_key, owed_inbound_key,
    owed_merged_key, owed_outbound_key, owed_unmerged_key,
};
use super::outcomes::OutcomeStore;
use super::plugins::Change;
use super::rules::{self, Threading};
use super::{ContextStore, StoreError};
use crate::event::{Handle, HistoryEntry};

/// How often a change is tried before the store gives up on a record that keeps
/// changing under it (the request then fails with 503, and the provider retries).
const ATTEMPTS: usize = 64;

/// Every store operation over a [`Backend`].
pub struct Engine<B> {
    backend: B,
    /// Messages older than this are dropped.
    retention: Option<Duration>,
    /// Kept so the plugin-change feeds handed out stay open.
    feeds: Mutex<Vec<mpsc::Sender<Change>>>,
}

impl<B: Backend> Engine<B> {
    /// The store on `backend`, dropping messages older than `retention`.
    pub fn on(backend: B, retention: Option<Duration>) -> Self {
        Self {
            backend,
            retention,
            feeds: Mutex::default(),
        }
    }

    fn tx(&self) -> Tx<'_> {
        Tx::new(&self.backend)
    }

    /// The oldest time retention keeps, if there is a retention.
    fn cutoff(&self) -> Option<Timestamp> {
        let retention = jiff::SignedDuration::try_from(self.retention?).ok()?;
        Timestamp::now().checked_sub(retention).ok()
    }

    /// One record, read outside any change.
    async fn read(&self, key: String) -> Result<Option<Arc<Doc>>, StoreError> {
        Ok(self
            .backend
            .get(std::slice::from_ref(&key))
            .await?
            .pop()
            .flatten()
            .map(|entry| entry.doc))
    }

    /// Apply `writes` with no condition.
    async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.backend.commit(&[], writes).await.map(drop)
    }

    /// Record the event on contact `contact_id` (read first): its conversation, history,
    /// timeline and owed record (with `merged`, the merge the event caused).
    async fn record(
        &self,
        tx: &mut Tx<'_>,
        contact_id: &str,
        ingest: &Ingest,
        merged: Option<Merge>,
        policy: &IngestPolicy,
        new_conversation: &str,
    ) -> Result<Ingested, StoreError> {
        contacts::add_person(tx, contact_id, &ingest.person).await?;
        let latest = tx.contact(contact_id).and_then(|doc| doc.latest.clone());
        if let Some(latest) = &latest {
            tx.load_thread(latest).await?;
        }
        let threading = rules::threading(
            latest
                .as_deref()
                .and_then(|id| tx.thread(id))
                .map(|thread| &thread.conversation),
            ingest.at,
            policy.inactivity,
        );
        let (id, started) = match (threading, latest) {
            (Threading::Continue, Some(latest)) => (latest, false),
            (threading, latest) => {
                if let (Threading::Start { close_latest: true }, Some(previous)) =
                    (threading, latest)
                {
                    close(tx, &previous, ingest.at, policy.timeline_cap);
                }
                open(
                    tx,
                    contact_id,
                    new_conversation,
                    ingest,
                    policy.timeline_cap,
                );
                (new_conversation.to_owned(), true)
            }
        };
        let thread = tx
            .thread_mut(&id)
            .ok_or_else(|| not_found("conversation", &id))?;
        let applied = rules::apply_inbound(&mut thread.conversation, &mut thread.windows, ingest);
        if ingest.message.is_some() {
            thread.touched = Timestamp::now();
        }
        let (mut history, mut timeline) = (thread.history, thread.timeline);
        if let Some(message) = &ingest.message {
            history =
                threads::add_messages(tx, &id, history, [message.clone()], policy.history_cap);
        }
        timeline = threads::add_entries(tx, &id, timeline, applied.timeline, policy.timeline_cap);
        let cutoff = self.cutoff();
        if let Some(cutoff) = cutoff {
            (history, timeline) = threads::drop_older(tx, &id, (history, timeline), cutoff).await?;
        }
        let thread = tx
            .thread_mut(&id)
            .ok_or_else(|| not_found("conversation", &id))?;
        (thread.history, thread.timeline) = (history, timeline);
        let conversation = thread.conversation.clone();
        if let Some(payload) = &ingest.owed {
            let owed = Owed {
                contact_id: contact_id.to_owned(),
                key: owed_inbound_key(&ingest.channel, &ingest.external_id),
                at: Timestamp::now(),
                conversation_id: id.clone(),
                started,
                switched_from: applied.switched_from.clone(),
                merged: merged.clone(),
                payload: payload.clone(),
            };
            owe(tx, owed);
        }
        let history =
            threads::last_messages(tx, &id, history, policy.history_returned(), cutoff).await?;
        let contact = tx
            .contact(contact_id)
            .map(|doc| doc.contact.clone())
            .ok_or_else(|| not_found("contact", contact_id))?;
        Ok(Ingested {
            contact,
            conversation,
            started,
            first_inbound: applied.first_inbound,
            switched_from: applied.switched_from,
            history,
            merged,
        })
    }

    /// Drop what retention no longer keeps from every conversation.
    async fn apply_retention(&self, cutoff: Timestamp) -> Result<(), StoreError> {
        for (key, doc) in scan_all(&self.backend, keys::THREADS).await? {
            let Some(thread) = doc.as_thread() else {
                continue;
            };
            let id = &key[keys::THREADS.len()..];
            for _ in 0..ATTEMPTS {
                let mut tx = self.tx();
                if !tx.load_thread(id).await? {
                    break;
                }
                let spans = tx
                    .thread(id)
                    .map_or((thread.history, thread.timeline), |t| {
                        (t.history, t.timeline)
                    });
                let kept = threads::drop_older(&mut tx, id, spans, cutoff).await?;
                if kept == spans {
                    break;
                }
                if let Some(thread) = tx.thread_mut(id) {
                    (thread.history, thread.timeline) = kept;
                }
                if tx.commit().await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Close conversation `id` if it is still open and idle as of `now`.
    async fn close_if_idle(
        &self,
        id: &str,
        now: Timestamp,
        inactivity: Duration,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Option<Closed>, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            if !tx.load_thread(id).await? {
                tx.delete(keys::open(id));
                tx.commit().await?;
                return Ok(None);
            }
            let Some(thread) = tx.thread(id) else {
                return Ok(None);
            };
            if thread.conversation.status == crate::event::ConversationStatus::Closed {
                tx.delete(keys::open(id));
                tx.commit().await?;
                return Ok(None);
            }
            if rules::is_active(&thread.conversation, thread.touched, now, inactivity) {
                return Ok(None);
            }
            let contact_id = thread.conversation.contact_id.clone();
            close(&mut tx, id, now, usize::MAX);
            let conversation = tx
                .thread(id)
                .map(|thread| thread.conversation.clone())
                .ok_or_else(|| not_found("conversation", id))?;
            tx.load_contact(&contact_id).await?;
            let Some(contact) = tx.contact(&contact_id).map(|doc| doc.contact.clone()) else {
                return Ok(None);
            };
            let owed = Owed::about_conversation(
                &contact.id,
                owed_closed_key(id),
                Timestamp::now(),
                id,
                payload(),
            );
            owe(&mut tx, owed.clone());
            if tx.commit().await? {
                return Ok(Some(Closed {
                    contact,
                    conversation,
                    owed,
                }));
            }
        }
        Err(contended("conversation", id))
    }

    /// The latest activity of contact `doc`: its creation, or the latest message of any
    /// of its conversations (by event time or by when it was received).
    async fn last_activity(&self, doc: &ContactDoc) -> Result<Timestamp, StoreError> {
        let keys: Vec<String> = doc
            .conversations
            .iter()
            .map(|id| keys::thread(id))
            .collect();
        let threads = self.backend.get(&keys).await?;
        Ok(threads
            .iter()
            .flatten()
            .filter_map(|entry| entry.doc.as_thread())
            .map(|thread| thread.conversation.last_activity_at.max(thread.touched))
            .fold(doc.contact.created_at, Timestamp::max))
    }
}

/// Close conversation `id` (read first) at `at`: its timeline says so, and the sweeper
/// no longer looks at it.
fn close(tx: &mut Tx<'_>, id: &str, at: Timestamp, timeline_cap: usize) {
    let Some(thread) = tx.thread_mut(id) else {
        return;
    };
    let entry = rules::close(&mut thread.conversation, at);
    let span = thread.timeline;
    let span = threads::add_entries(tx, id, span, [entry], timeline_cap);
    if let Some(thread) = tx.thread_mut(id) {
        thread.timeline = span;
    }
    tx.delete(keys::open(id));
}

/// Open conversation `id` of contact `contact_id` (read first) for `ingest`.
fn open(tx: &mut Tx<'_>, contact_id: &str, id: &str, ingest: &Ingest, timeline_cap: usize) {
    let (mut thread, started) =
        records::ThreadDoc::opened(id.to_owned(), contact_id, &ingest.channel, ingest.at);
    thread.timeline = threads::add_entries(tx, id, thread.timeline, [started], timeline_cap);
    tx.insert_thread(thread);
    tx.put(keys::open(id), Doc::Mark);
    if let Some(doc) = tx.contact_mut(contact_id) {
        doc.latest = Some(id.to_owned());
        doc.conversations.push(id.to_owned());
    }
}

/// Keep `owed` with the change.
fn owe(tx: &mut Tx<'_>, owed: Owed) {
    tx.put(
        keys::owed(&owed.contact_id, &owed.key),
        Doc::Owed(Box::new(owed)),
    );
}

/// The error for a change that kept losing to other changes of the same records.
fn contended(kind: &str, id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "{kind} `{id}` kept changing under {ATTEMPTS} attempts; try again"
    ))
}

/// When a record kept for `ttl` from now expires.
fn expiry(ttl: Duration) -> Option<Timestamp> {
    let ttl = jiff::SignedDuration::try_from(ttl).ok()?;
    Timestamp::now().checked_add(ttl).ok()
}

#[async_trait]
impl<B: Backend> ContextStore for Engine<B> {
    async fn ingest(
        &self,
        ingest: Ingest,
        policy: &IngestPolicy,
    ) -> Result<Option<Ingested>, StoreError> {
        let dedupe = keys::dedupe(&owed_inbound_key(&ingest.channel, &ingest.external_id));
        // Made once: an attempt that lost wrote nothing, so the next one may use them.
        let (new_contact, new_conversation) = (crate::ids::contact(), crate::ids::conversation());
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            if tx.get(&dedupe).await?.is_some() {
                return Ok(None);
            }
            let sender = contacts::sender(&mut tx, &ingest.person, &new_contact).await?;
            tx.ensure_contact(&sender, ingest.at).await?;
            let mut merged = None;
            if let Some((handle, owner)) = contacts::shared_owner(&mut tx, &sender, &ingest).await?
            {
                // The sender joins the owner of a verified handle it reports, in the
                // same step as the event.
                merged =
                    contacts::merge_on_shared_handle(&mut tx, &sender, (handle, &owner), &ingest)
                        .await?;
                if let (Some(merge), Some(payload)) = (&merged, &ingest.merged_owed) {
                    // Settled by the publisher with the event's record; kept all the same,
                    // so every backend answers alike.
                    owe(
                        &mut tx,
                        Owed::about_contact(
                            &owner,
                            owed_merged_key(&merge.id),
                            Timestamp::now(),
                            Some(merge.clone()),
                            payload.clone(),
                        ),
                    );
                }
            }
            let contact_id = merged
                .as_ref()
                .map_or(sender, |merge: &Merge| merge.survivor.clone());
            tx.load_contact(&contact_id).await?;
            let result = self
                .record(
                    &mut tx,
                    &contact_id,
                    &ingest,
                    merged,
                    policy,
                    &new_conversation,
                )
                .await?;
            tx.put_until(dedupe.clone(), Doc::Mark, expiry(policy.dedupe_ttl));
            if tx.commit().await? {
                return Ok(Some(result));
            }
        }
        Err(contended("sender", &ingest.person.user.value))
    }

    async fn record_outbound(
        &self,
        outbound: Outbound,
        policy: &IngestPolicy,
    ) -> Result<Ingested, StoreError> {
        let id = &outbound.conversation_id;
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let thread = tx.existing_thread(id).await?;
            let entry = rules::apply_outbound(&mut thread.conversation, &outbound.message);
            thread.touched = Timestamp::now();
            let (history, timeline) = (thread.history, thread.timeline);
            let contact_id = thread.conversation.contact_id.clone();
            let timeline =
                threads::add_entries(&mut tx, id, timeline, [entry], policy.timeline_cap);
            let mut history = threads::add_messages(
                &mut tx,
                id,
                history,
                [outbound.message.clone()],
                policy.history_cap,
            );
            let cutoff = self.cutoff();
            let mut spans = (history, timeline);
            if let Some(cutoff) = cutoff {
                spans = threads::drop_older(&mut tx, id, spans, cutoff).await?;
            }
            history = spans.0;
            let thread = tx
                .thread_mut(id)
                .ok_or_else(|| not_found("conversation", id))?;
            (thread.history, thread.timeline) = spans;
            let conversation = thread.conversation.clone();
            tx.load_contact(&contact_id).await?;
            let contact = tx
                .contact(&contact_id)
                .map(|doc| doc.contact.clone())
                .ok_or_else(|| not_found("contact", &contact_id))?;
            owe(
                &mut tx,
                Owed::about_conversation(
                    &contact.id,
                    owed_outbound_key(&outbound.message.event_id),
                    Timestamp::now(),
                    id,
                    outbound.owed.clone(),
                ),
            );
            let history =
                threads::last_messages(&tx, id, history, policy.history_returned(), cutoff).await?;
            if tx.commit().await? {
                return Ok(Ingested {
                    contact,
                    conversation,
                    started: false,
                    first_inbound: false,
                    switched_from: None,
                    history,
                    merged: None,
                });
            }
        }
        Err(contended("conversation", id))
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        let doc = self.read(keys::contact(id)).await?;
        Ok(doc.and_then(|doc| doc.as_contact().map(|doc| doc.contact.clone())))
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let doc = self.read(keys::thread(id)).await?;
        Ok(doc.and_then(|doc| doc.as_thread().map(|thread| thread.conversation.clone())))
    }

    async fn history(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut tx = self.tx();
        let span = tx.existing_thread(conversation_id).await?.history;
        threads::last_messages(&tx, conversation_id, span, limit, self.cutoff()).await
    }

    async fn contact_details(&self, id: &str) -> Result<Option<ContactDetails>, StoreError> {
        contacts::details(&mut self.tx(), id).await
    }

    async fn put_link_token(
        &self,
        token: &str,
        contact_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write(vec![Write {
            key: keys::token(token),
            doc: Some(Arc::new(Doc::Id(contact_id.to_owned()))),
            expires: expiry(ttl),
        }])
        .await
    }

    async fn link_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        let doc = self.read(keys::token(token)).await?;
        Ok(doc.and_then(|doc| doc.as_id().map(str::to_owned)))
    }

    async fn drop_link_token(&self, token: &str) -> Result<(), StoreError> {
        self.write(vec![Write {
            key: keys::token(token),
            doc: None,
            expires: None,
        }])
        .await
    }

    async fn revoke_session(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        self.write(vec![Write {
            key: keys::session(id),
            doc: Some(Arc::new(Doc::Mark)),
            expires: expiry(ttl),
        }])
        .await
    }

    async fn session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.read(keys::session(id)).await?.is_some())
    }

    async fn link_sender(
        &self,
        person: &Person,
        survivor: &str,
        evidence: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Option<Merge>, StoreError> {
        let new_contact = crate::ids::contact();
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            if !tx.load_contact(survivor).await? {
                return Err(not_found("contact", survivor));
            }
            let sender = contacts::sender(&mut tx, person, &new_contact).await?;
            tx.ensure_contact(&sender, at).await?;
            contacts::add_person(&mut tx, &sender, person).await?;
            let merge = if sender == survivor {
                None
            } else {
                let merge = contacts::merge(&mut tx, survivor, &sender, evidence, at).await?;
                owe(
                    &mut tx,
                    Owed::about_contact(
                        survivor,
                        owed_merged_key(&merge.id),
                        Timestamp::now(),
                        Some(merge.clone()),
                        owed.to_owned(),
                    ),
                );
                Some(merge)
            };
            if tx.commit().await? {
                return Ok(merge);
            }
        }
        Err(contended("contact", survivor))
    }

    async fn merge(
        &self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let merge = contacts::merge(&mut tx, survivor, absorbed, evidence, at).await?;
            if tx.commit().await? {
                return Ok(merge);
            }
        }
        Err(contended("contact", survivor))
    }

    async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Merge, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let undone = contacts::unmerge(&mut tx, survivor, absorbed, at).await?;
            owe(
                &mut tx,
                Owed::about_contact(
                    survivor,
                    owed_unmerged_key(&undone.id),
                    Timestamp::now(),
                    Some(undone.clone()),
                    owed.to_owned(),
                ),
            );
            if tx.commit().await? {
                return Ok(undone);
            }
        }
        Err(contended("contact", survivor))
    }

    async fn erase(
        &self,
        id: &str,
        at: Timestamp,
        owes: &(dyn for<'e> Fn(&'e Erased) -> String + Send + Sync),
    ) -> Result<Option<Erased>, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let Some(erased) = contacts::erase(&mut tx, id).await? else {
                return Ok(None);
            };
            let gone: HashSet<&str> = std::iter::once(id)
                .chain(erased.absorbed.iter().map(String::as_str))
                .collect();
            for (key, doc) in tx.scan(keys::TOKENS).await? {
                if matches!(&*doc, Doc::Id(owner) if gone.contains(owner.as_str())) {
                    tx.delete(key);
                }
            }
            // Owed events of an erased contact are not published: they carry its data.
            for contact in &gone {
                for (key, _) in tx.scan(&keys::owed_of(contact)).await? {
                    tx.delete(key);
                }
            }
            owe(
                &mut tx,
                Owed::about_contact(id, owed_erased_key(id), at, None, owes(&erased)),
            );
            if tx.commit().await? {
                return Ok(Some(erased));
            }
        }
        Err(contended("contact", id))
    }

    async fn close_idle(
        &self,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<Closed>, StoreError> {
        if let Some(cutoff) = self.cutoff() {
            self.apply_retention(cutoff).await?;
        }
        let mut closed = Vec::new();
        for (key, _) in scan_all(&self.backend, keys::OPEN).await? {
            if closed.len() >= limit {
                break;
            }
            let id = &key[keys::OPEN.len()..];
            if let Some(close) = self.close_if_idle(id, now, inactivity, payload).await? {
                closed.push(close);
            }
        }
        Ok(closed)
    }

    async fn owed_inbound(
        &self,
        user: &Handle,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<Owed>, StoreError> {
        let doc = self.read(keys::handle(user)).await?;
        let Some(contact) = doc.as_deref().and_then(Doc::as_id) else {
            return Ok(None);
        };
        let doc = self
            .read(keys::owed(contact, &owed_inbound_key(channel, external_id)))
            .await?;
        Ok(doc.and_then(|doc| doc.as_owed().cloned()))
    }

    async fn stale_owed(&self, before: Timestamp, limit: usize) -> Result<Vec<Owed>, StoreError> {
        let mut stale: Vec<Owed> = scan_all(&self.backend, keys::OWED)
            .await?
            .into_iter()
            .filter_map(|(_, doc)| doc.as_owed().filter(|owed| owed.at < before).cloned())
            .collect();
        stale.sort_by_key(|owed| owed.at);
        stale.truncate(limit);
        Ok(stale)
    }

    async fn idle_contacts(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut idle = Vec::new();
        for (_, doc) in scan_all(&self.backend, keys::CONTACTS).await? {
            if idle.len() >= limit {
                break;
            }
            let Some(doc) = doc.as_contact() else {
                continue;
            };
            if doc.merged_into.is_none() && self.last_activity(doc).await? < before {
                idle.push(doc.contact.id.clone());
            }
        }
        Ok(idle)
    }

    async fn settle(&self, owed: &[(String, String)]) -> Result<(), StoreError> {
        let writes = owed
            .iter()
            .map(|(contact, key)| Write {
                key: keys::owed(contact, key),
                doc: None,
                expires: None,
            })
            .collect();
        self.write(writes).await
    }

    async fn timeline(
        &self,
        conversation_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        let mut tx = self.tx();
        let span = tx.existing_thread(conversation_id).await?.timeline;
        let from = from.max(span.from);
        let end = from.saturating_add(limit as u64).min(span.next).max(from);
        let entries = threads::entries(&tx, conversation_id, from..end, self.cutoff()).await?;
        Ok(TimelinePage {
            next: (end < span.next).then_some(end),
            entries,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    fn outcomes(&self) -> &dyn OutcomeStore {
        self
    }

    fn backend(&self) -> &'static str {
        self.backend.name()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::memory::MemoryBackend;
    use crate::store::memory::tests::{ingest, policy};

    /// The memory backend, with commits that lose (as if another change came first) or
    /// fail (as if the database went away) on demand, writing nothing either way.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryBackend,
        lose: AtomicUsize,
        fail: AtomicUsize,
    }

    fn take(left: &AtomicUsize) -> bool {
        left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    #[async_trait]
    impl Backend for Flaky {
        async fn get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StoreError> {
            self.inner.get(keys).await
        }

        async fn commit(
            &self,
            expect: &[(String, Option<u64>)],
            writes: Vec<Write>,
        ) -> Result<bool, StoreError> {
            if take(&self.fail) {
                return Err(StoreError::Unavailable("connection reset".into()));
            }
            if take(&self.lose) {
                return Ok(false);
            }
            self.inner.commit(expect, writes).await
        }

        async fn scan(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, Versioned)>, StoreError> {
            self.inner.scan(prefix, after, limit).await
        }

        fn name(&self) -> &'static str {
            "flaky"
        }
    }

    fn user(name: &str) -> Handle {
        Handle {
            kind: crate::event::HandleKind::ChannelUser,
            value: format!("web:{name}"),
            verified: true,
        }
    }

    #[tokio::test]
    async fn a_lost_commit_is_decided_again_and_lands_once() {
        let store = Engine::on(Flaky::default(), None);
        store.backend.lose.store(3, Ordering::Relaxed);
        let now = Timestamp::now();
        let first = store
            .ingest(ingest("web", "ana", "m1", None, now), &policy())
            .await
            .expect("recorded on the fourth attempt")
            .expect("new");
        assert!(first.started);
        assert_eq!(first.conversation.messages, 1);
        assert_eq!(first.history.len(), 1);
        let owed = store
            .owed_inbound(&user("ana"), "web", "m1")
            .await
            .expect("ok");
        assert_eq!(
            owed.map(|owed| owed.conversation_id),
            Some(first.conversation.id)
        );
        let again = store
            .ingest(ingest("web", "ana", "m1", None, now), &policy())
            .await
            .expect("ok");
        assert!(again.is_none(), "a duplicate");
    }

    #[tokio::test]
    async fn a_failed_commit_writes_nothing_and_the_retry_records_the_message_once() {
        let store = Engine::on(Flaky::default(), None);
        store.backend.fail.store(1, Ordering::Relaxed);
        let now = Timestamp::now();
        let failed = store
            .ingest(ingest("web", "ana", "m1", None, now), &policy())
            .await;
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        // Nothing of the message is there: no contact, no dedupe key, no owed record.
        assert_eq!(
            store.contact_by_handle(&user("ana")).await.expect("ok"),
            None
        );
        assert!(
            store
                .backend
                .scan("", None, 10)
                .await
                .expect("ok")
                .is_empty()
        );
        let retried = store
            .ingest(ingest("web", "ana", "m1", None, now), &policy())
            .await
            .expect("ok")
            .expect("not a duplicate: the first attempt wrote nothing");
        assert_eq!(retried.conversation.messages, 1);
    }

    #[tokio::test]
    async fn a_record_that_keeps_changing_fails_with_its_name() {
        let store = Engine::on(Flaky::default(), None);
        store.backend.lose.store(usize::MAX, Ordering::Relaxed);
        let error = store
            .ingest(
                ingest("web", "ana", "m1", None, Timestamp::now()),
                &policy(),
            )
            .await
            .expect_err("never commits");
        assert!(
            error.to_string().contains("web:ana") && error.to_string().contains("kept changing"),
            "{error}"
        );
    }
}
