//! The embedded memory backend: one process, nothing survives a restart.
//!
//! Dedupe keys live in sharded, generation-rotated sets (bounded by TTL; a shard's rehash
//! touches 1/64 of the keys, so a growing set never stalls requests for long). Contacts and
//! conversations live under one mutex: every ingest is a few map operations, so the lock
//! is held for microseconds and each ingest is atomic.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use parking_lot::Mutex;

use super::model::{
    Closed, Contact, ContactDetails, Conversation, Erased, Ingest, IngestPolicy, Ingested,
    LinkStrength, Merge, Outbound, Owed, Person, ProbableLink, TimelineEntry, TimelinePage,
    merges_on, owed_closed_key, owed_erased_key, owed_inbound_key, owed_merged_key,
    owed_outbound_key, owed_unmerged_key, probable_keys, shared_handle_evidence,
};
use super::outcomes::{
    MemoryTables, OutcomeCommit, OutcomeStore, RollupWrite, StartedRef, Tracked,
};
use super::rules::{self, Threading, Windows};
use super::{ContextStore, StoreError};
use crate::event::{ConversationStatus, Handle, HandleKind, HistoryEntry};

const DEDUPE_SHARDS: usize = 64;

/// The memory backend.
pub struct MemoryStore {
    dedupe: Vec<Mutex<DedupeShard>>,
    state: Mutex<State>,
    tables: MemoryTables,
    retention: Option<Duration>,
}

#[derive(Default)]
struct DedupeShard {
    current: HashSet<String>,
    previous: HashSet<String>,
    rotated_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    contacts: HashMap<String, Contact>,
    /// Channel-user and verified handles → contact id.
    handles: HashMap<(HandleKind, String), String>,
    conversations: HashMap<String, Thread>,
    /// Contact id → its latest conversation.
    latest: HashMap<String, String>,
    /// Contact id → its conversations, oldest first.
    owned: HashMap<String, Vec<String>>,
    /// Absorbed contact id → survivor, while merged.
    merged_into: HashMap<String, String>,
    /// Survivor id → merges into it (undone ones included).
    merges: HashMap<String, Vec<Merge>>,
    /// Link token → (contact id, expiry).
    tokens: HashMap<String, (String, Instant)>,
    /// Signed-out console session id → when it would have expired.
    revoked_sessions: HashMap<String, Instant>,
    /// Probable-link key (name + e-mail domain) → contacts.
    probable: HashMap<String, HashSet<String>>,
    /// (contact id, key) → events a change owes, until settled.
    owed: HashMap<(String, String), Owed>,
}

struct Thread {
    conversation: Conversation,
    history: VecDeque<HistoryEntry>,
    timeline: Vec<TimelineEntry>,
    /// Timeline entries dropped by retention (cursors count from the first entry ever).
    trimmed: u64,
    /// Channel → end of its reply window.
    windows: Windows,
    /// Wall-clock time of the latest message (the sweeper's idea of activity, whatever
    /// times providers report).
    touched: Timestamp,
    /// The outcome record's version (0: none yet) and JSON.
    outcome: (u64, Option<String>),
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_retention(None)
    }

    /// An empty store dropping messages (history and timeline entries) older than
    /// `retention`.
    pub fn with_retention(retention: Option<Duration>) -> Self {
        Self {
            dedupe: (0..DEDUPE_SHARDS).map(|_| Mutex::default()).collect(),
            state: Mutex::default(),
            tables: MemoryTables::default(),
            retention,
        }
    }

    /// The oldest time retention keeps, if there is a retention.
    fn cutoff(&self) -> Option<Timestamp> {
        let retention = jiff::SignedDuration::try_from(self.retention?).ok()?;
        Timestamp::now().checked_sub(retention).ok()
    }

    /// Remember `key`; false when it was already known (within the TTL).
    fn first_sighting(&self, key: String, ttl: Duration) -> bool {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let mut shard = self.dedupe[hasher.finish() as usize % DEDUPE_SHARDS].lock();
        let now = Instant::now();
        // Two generations: a key lives between one and two TTLs, and expiry is a swap.
        match shard.rotated_at {
            Some(at) if now.duration_since(at) < ttl => {}
            // Both generations are older than a TTL: every key in them has lived one TTL.
            Some(at) if now.duration_since(at) >= ttl * 2 => {
                shard.current.clear();
                shard.previous.clear();
                shard.rotated_at = Some(now);
            }
            Some(_) => {
                let current = std::mem::take(&mut shard.current);
                shard.previous = current;
                shard.rotated_at = Some(now);
            }
            None => shard.rotated_at = Some(now),
        }
        if shard.previous.contains(&key) {
            return false;
        }
        shard.current.insert(key)
    }
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn ingest(
        &self,
        ingest: Ingest,
        policy: &IngestPolicy,
    ) -> Result<Option<Ingested>, StoreError> {
        let key = owed_inbound_key(&ingest.channel, &ingest.external_id);
        if !self.first_sighting(key.clone(), policy.dedupe_ttl) {
            return Ok(None);
        }
        let mut state = self.state.lock();
        // Under one lock: finding the sender, merging it into the owner of a verified
        // handle it shares, and recording the event there are one atomic step.
        let sender = state.find_or_create(&ingest.person, ingest.at);
        let merged = state.merge_on_shared_handle(&sender, &ingest);
        let contact_id = merged
            .as_ref()
            .map_or(sender, |merge| merge.survivor.clone());
        state.upsert_person(&contact_id, &ingest.person);
        let mut result = state.touch_conversation(&contact_id, &ingest, policy);
        result.merged = merged;
        if let Some(payload) = ingest.owed {
            state.owe(Owed {
                contact_id: contact_id.clone(),
                key,
                at: Timestamp::now(),
                conversation_id: result.conversation.id.clone(),
                started: result.started,
                switched_from: result.switched_from.clone(),
                merged: result.merged.clone(),
                payload,
            });
        }
        if let Some(cutoff) = self.cutoff()
            && let Some(thread) = state.conversations.get_mut(&result.conversation.id)
        {
            thread.retain(cutoff);
            result.history.retain(|entry| entry.at >= cutoff);
        }
        Ok(Some(result))
    }

    async fn record_outbound(
        &self,
        outbound: Outbound,
        policy: &IngestPolicy,
    ) -> Result<Ingested, StoreError> {
        let owed_key = owed_outbound_key(&outbound.message.event_id);
        let mut state = self.state.lock();
        let thread = state
            .conversations
            .get_mut(&outbound.conversation_id)
            .ok_or_else(|| not_found("conversation", &outbound.conversation_id))?;
        let entry = rules::apply_outbound(&mut thread.conversation, &outbound.message);
        thread.touched = Timestamp::now();
        thread.timeline.push(entry);
        push_history(&mut thread.history, outbound.message, policy.history_cap);
        thread.cap_timeline(policy.timeline_cap);
        if let Some(cutoff) = self.cutoff() {
            thread.retain(cutoff);
        }
        let conversation = thread.conversation.clone();
        let history = last(&thread.history, policy.history_depth);
        let contact = state
            .contacts
            .get(&conversation.contact_id)
            .cloned()
            .ok_or_else(|| not_found("contact", &conversation.contact_id))?;
        state.owe(Owed {
            contact_id: contact.id.clone(),
            key: owed_key,
            at: Timestamp::now(),
            conversation_id: conversation.id.clone(),
            started: false,
            switched_from: None,
            merged: None,
            payload: outbound.owed,
        });
        Ok(Ingested {
            contact,
            conversation,
            started: false,
            first_inbound: false,
            switched_from: None,
            history,
            merged: None,
        })
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        Ok(self.state.lock().contacts.get(id).cloned())
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(self
            .state
            .lock()
            .conversations
            .get(id)
            .map(|thread| thread.conversation.clone()))
    }

    async fn history(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let state = self.state.lock();
        let thread = state
            .conversations
            .get(conversation_id)
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        Ok(last(&thread.history, limit))
    }

    async fn contact_details(&self, id: &str) -> Result<Option<ContactDetails>, StoreError> {
        Ok(self.state.lock().details(id))
    }

    async fn put_link_token(
        &self,
        token: &str,
        contact_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let now = Instant::now();
        state.tokens.retain(|_, (_, expiry)| *expiry > now);
        state
            .tokens
            .insert(token.to_owned(), (contact_id.to_owned(), now + ttl));
        Ok(())
    }

    async fn link_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        let state = self.state.lock();
        Ok(state
            .tokens
            .get(token)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(contact, _)| contact.clone()))
    }

    async fn drop_link_token(&self, token: &str) -> Result<(), StoreError> {
        self.state.lock().tokens.remove(token);
        Ok(())
    }

    async fn revoke_session(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let now = Instant::now();
        // Forget what has expired anyway: the map stays as small as the live sessions.
        state.revoked_sessions.retain(|_, expiry| *expiry > now);
        state.revoked_sessions.insert(id.to_owned(), now + ttl);
        Ok(())
    }

    async fn session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .state
            .lock()
            .revoked_sessions
            .get(id)
            .is_some_and(|expiry| *expiry > Instant::now()))
    }

    async fn link_sender(
        &self,
        person: &Person,
        survivor: &str,
        evidence: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Option<Merge>, StoreError> {
        let mut state = self.state.lock();
        if !state.contacts.contains_key(survivor) {
            return Err(not_found("contact", survivor));
        }
        let sender = state.resolve_contact(person, at);
        if sender == survivor {
            return Ok(None);
        }
        let merge = state.merge(survivor, &sender, evidence, at)?;
        state.owe(Owed::about_contact(
            survivor,
            owed_merged_key(&merge.id),
            Timestamp::now(),
            Some(merge.clone()),
            owed.to_owned(),
        ));
        Ok(Some(merge))
    }

    async fn merge(
        &self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        self.state.lock().merge(survivor, absorbed, evidence, at)
    }

    async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Merge, StoreError> {
        let mut state = self.state.lock();
        let undone = state.unmerge(survivor, absorbed, at)?;
        state.owe(Owed::about_contact(
            survivor,
            owed_unmerged_key(&undone.id),
            Timestamp::now(),
            Some(undone.clone()),
            owed.to_owned(),
        ));
        Ok(undone)
    }

    async fn erase(
        &self,
        id: &str,
        at: Timestamp,
        owes: &(dyn for<'e> Fn(&'e Erased) -> String + Send + Sync),
    ) -> Result<Option<Erased>, StoreError> {
        let erased = {
            let mut state = self.state.lock();
            let erased = state.erase(id);
            // Under the same lock: the erasure and what it owes are one step here.
            if let Some(erased) = &erased {
                state.owe(Owed::about_contact(
                    id,
                    owed_erased_key(id),
                    at,
                    None,
                    owes(erased),
                ));
            }
            erased
        };
        if let Some(erased) = &erased {
            self.tables.forget(&erased.conversations);
        }
        Ok(erased)
    }

    async fn close_idle(
        &self,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<Closed>, StoreError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        if let Some(cutoff) = self.cutoff() {
            for thread in state.conversations.values_mut() {
                thread.retain(cutoff);
            }
        }
        let mut closed = Vec::new();
        for (contact_id, conversation_id) in &state.latest {
            if closed.len() >= limit {
                break;
            }
            let Some(thread) = state.conversations.get_mut(conversation_id) else {
                continue;
            };
            if thread.conversation.status == ConversationStatus::Closed
                || rules::is_active(&thread.conversation, thread.touched, now, inactivity)
            {
                continue;
            }
            let entry = rules::close(&mut thread.conversation, now);
            thread.timeline.push(entry);
            if let Some(contact) = state.contacts.get(contact_id) {
                let owed = Owed {
                    contact_id: contact_id.clone(),
                    key: owed_closed_key(conversation_id),
                    at: Timestamp::now(),
                    conversation_id: conversation_id.clone(),
                    started: false,
                    switched_from: None,
                    merged: None,
                    payload: payload(),
                };
                closed.push(Closed {
                    contact: contact.clone(),
                    conversation: thread.conversation.clone(),
                    owed,
                });
            }
        }
        for closed in &closed {
            state.owe(closed.owed.clone());
        }
        Ok(closed)
    }

    async fn owed_inbound(
        &self,
        user: &Handle,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<Owed>, StoreError> {
        let state = self.state.lock();
        let Some(contact_id) = state.handles.get(&(user.kind, user.value.clone())) else {
            return Ok(None);
        };
        let key = (contact_id.clone(), owed_inbound_key(channel, external_id));
        Ok(state.owed.get(&key).cloned())
    }

    async fn stale_owed(&self, before: Timestamp, limit: usize) -> Result<Vec<Owed>, StoreError> {
        let state = self.state.lock();
        let mut stale: Vec<Owed> = state
            .owed
            .values()
            .filter(|owed| owed.at < before)
            .cloned()
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
        let state = self.state.lock();
        Ok(state
            .contacts
            .values()
            .filter(|contact| !state.merged_into.contains_key(&contact.id))
            .filter(|contact| state.last_activity(contact) < before)
            .map(|contact| contact.id.clone())
            .take(limit)
            .collect())
    }

    async fn settle(&self, owed: &[(String, String)]) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        for key in owed {
            state.owed.remove(key);
        }
        Ok(())
    }

    async fn timeline(
        &self,
        conversation_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        let state = self.state.lock();
        let thread = state
            .conversations
            .get(conversation_id)
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        let from = from.max(thread.trimmed);
        let start = usize::try_from(from - thread.trimmed).unwrap_or(usize::MAX);
        let entries: Vec<TimelineEntry> = thread
            .timeline
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        let end = from + entries.len() as u64;
        let total = thread.trimmed + thread.timeline.len() as u64;
        Ok(TimelinePage {
            next: (end < total).then_some(end),
            entries,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn outcomes(&self) -> &dyn OutcomeStore {
        self
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[async_trait]
impl OutcomeStore for MemoryStore {
    async fn tracked(&self, conversation_id: &str) -> Result<Option<Tracked>, StoreError> {
        let state = self.state.lock();
        Ok(state
            .conversations
            .get(conversation_id)
            .map(|thread| Tracked {
                conversation: thread.conversation.clone(),
                version: thread.outcome.0,
                record: thread.outcome.1.clone(),
            }))
    }

    async fn commit(&self, commit: &OutcomeCommit<'_>) -> Result<bool, StoreError> {
        {
            let mut state = self.state.lock();
            let thread = state
                .conversations
                .get_mut(commit.conversation_id)
                .ok_or_else(|| not_found("conversation", commit.conversation_id))?;
            if thread.outcome.0 != commit.version {
                return Ok(false);
            }
            thread.outcome = (commit.version + 1, Some(commit.record.to_owned()));
            if let Some((key, payload)) = commit.owed {
                state.owe(Owed {
                    contact_id: commit.contact_id.to_owned(),
                    key: key.to_owned(),
                    at: Timestamp::now(),
                    conversation_id: commit.conversation_id.to_owned(),
                    started: false,
                    switched_from: None,
                    merged: None,
                    payload: payload.to_owned(),
                });
            }
        }
        self.tables.note(commit);
        Ok(true)
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.tables.due(now, limit))
    }

    async fn undue(&self, conversation_id: &str) -> Result<(), StoreError> {
        self.tables.undue(conversation_id);
        Ok(())
    }

    async fn add_rollups(
        &self,
        once: &[String],
        writes: &[RollupWrite<'_>],
    ) -> Result<bool, StoreError> {
        Ok(self.tables.add_rollups(once, writes))
    }

    async fn rollups(
        &self,
        table: &str,
        buckets: &[String],
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        Ok(self.tables.rollups(table, buckets))
    }

    async fn keep_conversion(&self, id: &str, body: &str) -> Result<Option<String>, StoreError> {
        Ok(self.tables.keep_conversion(id, body))
    }

    async fn conversion(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.tables.conversion(id))
    }

    async fn keep_receipt(
        &self,
        id: &str,
        destination: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        self.tables.keep_receipt(id, destination, body);
        Ok(())
    }

    async fn receipts(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.tables.receipts(id))
    }

    async fn started(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<&StartedRef>,
        limit: usize,
    ) -> Result<Vec<StartedRef>, StoreError> {
        Ok(self.tables.started(from_ms, to_ms, after, limit))
    }

    async fn owe_once(
        &self,
        contact_id: &str,
        key: &str,
        payload: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        if state
            .owed
            .contains_key(&(contact_id.to_owned(), key.to_owned()))
        {
            return Ok(false);
        }
        state.owe(Owed::about_contact(
            contact_id,
            key.to_owned(),
            Timestamp::now(),
            None,
            payload.to_owned(),
        ));
        Ok(true)
    }

    async fn contact_by_handle(&self, handle: &Handle) -> Result<Option<String>, StoreError> {
        let state = self.state.lock();
        Ok(state
            .handles
            .get(&(handle.kind, handle.value.clone()))
            .cloned())
    }
}

impl State {
    /// The contact's latest activity: its creation, or the latest message of any of its
    /// conversations (by event time or by when it was received).
    fn last_activity(&self, contact: &Contact) -> Timestamp {
        self.owned
            .get(&contact.id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.conversations.get(id))
            .map(|thread| thread.conversation.last_activity_at.max(thread.touched))
            .fold(contact.created_at, Timestamp::max)
    }

    /// Keep `owed` until it is settled.
    fn owe(&mut self, owed: Owed) {
        self.owed
            .insert((owed.contact_id.clone(), owed.key.clone()), owed);
    }

    /// Find the contact by its channel user id, else by a verified phone/e-mail, else
    /// create it; attach any new handles.
    fn resolve_contact(&mut self, person: &Person, at: Timestamp) -> String {
        let id = self.find_or_create(person, at);
        self.upsert_person(&id, person);
        id
    }

    /// The contact owning the sender's channel user id, else one of its verified
    /// phones/e-mails, else a new (empty) contact.
    fn find_or_create(&mut self, person: &Person, at: Timestamp) -> String {
        let known = std::iter::once(&person.user)
            .chain(person.handles.iter().filter(|handle| handle.verified))
            .find_map(|handle| {
                self.handles
                    .get(&(handle.kind, handle.value.clone()))
                    .cloned()
            });
        let id = known.unwrap_or_else(crate::ids::contact);
        self.contacts.entry(id.clone()).or_insert_with(|| Contact {
            id: id.clone(),
            name: None,
            handles: Vec::new(),
            created_at: at,
        });
        id
    }

    /// Record the sender's name and handles on contact `id`, and index them.
    fn upsert_person(&mut self, id: &str, person: &Person) {
        for (key, _) in probable_keys(person.name.as_deref(), &person.handles) {
            self.probable.entry(key).or_default().insert(id.to_owned());
        }
        let Some(contact) = self.contacts.get_mut(id) else {
            return;
        };
        rules::add_person(contact, person);
        for handle in std::iter::once(&person.user).chain(&person.handles) {
            // First claim wins: a handle already owned by another contact stays with it
            // (the Redis backend claims with SET NX, so both behave the same).
            if rules::identifies(handle) {
                self.handles
                    .entry((handle.kind, handle.value.clone()))
                    .or_insert_with(|| id.to_owned());
            }
        }
    }

    /// When the sender (contact `sender`) reports a verified phone/e-mail that another
    /// contact owns, merge the sender into that owner, unless a merge of the two was
    /// undone before (an operator separated them: a handle they share must not join them
    /// again). A merge the records refuse is logged and skipped: the event is still
    /// recorded, on the sender's contact.
    fn merge_on_shared_handle(&mut self, sender: &str, ingest: &Ingest) -> Option<Merge> {
        let (handle, owner) = ingest
            .person
            .handles
            .iter()
            .filter(|handle| merges_on(handle))
            .find_map(|handle| {
                let owner = self.handles.get(&(handle.kind, handle.value.clone()))?;
                (owner != sender).then(|| (handle, owner.clone()))
            })?;
        if self.unmerged_before(&owner, sender) {
            return None;
        }
        let evidence = shared_handle_evidence(handle, &ingest.channel);
        match self.merge(&owner, sender, &evidence, ingest.at) {
            Ok(merge) => {
                // In the same step as the ingest here; kept all the same, so both backends
                // answer alike (the publisher settles it with the event's record).
                if let Some(payload) = &ingest.merged_owed {
                    self.owe(Owed::about_contact(
                        &owner,
                        owed_merged_key(&merge.id),
                        Timestamp::now(),
                        Some(merge.clone()),
                        payload.clone(),
                    ));
                }
                Some(merge)
            }
            Err(error) => {
                tracing::warn!(%error, survivor = %owner, absorbed = %sender, "contacts sharing a verified handle not merged");
                None
            }
        }
    }

    /// Whether a merge between `a` and `b` (either way) was undone.
    fn unmerged_before(&self, a: &str, b: &str) -> bool {
        let undone = |survivor: &str, absorbed: &str| {
            self.merges.get(survivor).is_some_and(|merges| {
                merges
                    .iter()
                    .any(|merge| merge.absorbed == absorbed && merge.undone_at.is_some())
            })
        };
        undone(a, b) || undone(b, a)
    }

    /// Record the event on the contact's latest conversation, or on a new one when the
    /// rules say so ([`rules::threading`]).
    fn touch_conversation(
        &mut self,
        contact_id: &str,
        ingest: &Ingest,
        policy: &IngestPolicy,
    ) -> Ingested {
        let latest = self
            .latest
            .get(contact_id)
            .and_then(|id| self.conversations.get_mut(id));
        let threading = rules::threading(
            latest.as_ref().map(|thread| &thread.conversation),
            ingest.at,
            policy.inactivity,
        );
        let started = matches!(threading, Threading::Start { .. });
        let thread = match (threading, latest) {
            (Threading::Continue, Some(thread)) => thread,
            (threading, latest) => {
                if let (Threading::Start { close_latest: true }, Some(previous)) =
                    (threading, latest)
                {
                    let entry = rules::close(&mut previous.conversation, ingest.at);
                    previous.timeline.push(entry);
                }
                let thread = new_thread(contact_id, &ingest.channel, ingest.at);
                let id = thread.conversation.id.clone();
                self.latest.insert(contact_id.to_owned(), id.clone());
                self.owned
                    .entry(contact_id.to_owned())
                    .or_default()
                    .push(id.clone());
                self.conversations.entry(id).or_insert(thread)
            }
        };
        let applied = rules::apply_inbound(&mut thread.conversation, &mut thread.windows, ingest);
        if let Some(message) = &ingest.message {
            thread.touched = Timestamp::now();
            push_history(&mut thread.history, message.clone(), policy.history_cap);
        }
        thread.timeline.extend(applied.timeline);
        thread.cap_timeline(policy.timeline_cap);
        let conversation = thread.conversation.clone();
        let history = last(&thread.history, policy.history_depth);
        let contact = self
            .contacts
            .get(contact_id)
            .cloned()
            .unwrap_or_else(|| Contact {
                id: contact_id.to_owned(),
                name: None,
                handles: Vec::new(),
                created_at: ingest.at,
            });
        Ingested {
            contact,
            conversation,
            started,
            first_inbound: applied.first_inbound,
            switched_from: applied.switched_from,
            history,
            merged: None,
        }
    }
}

impl State {
    fn details(&self, id: &str) -> Option<ContactDetails> {
        let contact = self.contacts.get(id)?.clone();
        let merges = self.merges.get(id).cloned().unwrap_or_default();
        let mut conversations = self.owned.get(id).cloned().unwrap_or_default();
        for merge in merges.iter().filter(|merge| merge.undone_at.is_none()) {
            conversations.extend(self.owned.get(&merge.absorbed).cloned().unwrap_or_default());
        }
        let probable_links = self.probable_links(&contact, &merges);
        Some(ContactDetails {
            contact,
            merged_into: self.merged_into.get(id).cloned(),
            probable_links,
            merges,
            conversations,
            latest_conversation: self.latest.get(id).cloned(),
        })
    }

    fn probable_links(&self, contact: &Contact, merges: &[Merge]) -> Vec<ProbableLink> {
        let mut links: Vec<ProbableLink> = Vec::new();
        for (key, evidence) in probable_keys(contact.name.as_deref(), &contact.handles) {
            let mut others: Vec<&String> = self.probable.get(&key).into_iter().flatten().collect();
            others.sort();
            for other in others {
                let merged = merges
                    .iter()
                    .any(|merge| &merge.absorbed == other && merge.undone_at.is_none())
                    || self.merged_into.get(&contact.id) == Some(other);
                if *other != contact.id
                    && !merged
                    && self.contacts.contains_key(other)
                    && !links.iter().any(|link| &link.contact_id == other)
                {
                    links.push(ProbableLink {
                        contact_id: other.clone(),
                        strength: LinkStrength::Probable,
                        evidence: evidence.clone(),
                    });
                }
            }
        }
        links
    }

    fn merge(
        &mut self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        if survivor == absorbed {
            return Err(StoreError::Conflict(
                "a contact cannot be merged into itself".into(),
            ));
        }
        let (Some(target), Some(source)) =
            (self.contacts.get(survivor), self.contacts.get(absorbed))
        else {
            let missing = if self.contacts.contains_key(survivor) {
                absorbed
            } else {
                survivor
            };
            return Err(not_found("contact", missing));
        };
        if let Some(into) = self.merged_into.get(absorbed) {
            return match self.live_merge(into, absorbed) {
                Some(merge) if into == survivor => Ok(merge.clone()),
                _ => Err(StoreError::Conflict(format!(
                    "contact `{absorbed}` is merged into `{into}`"
                ))),
            };
        }
        if let Some(into) = self.merged_into.get(survivor) {
            return Err(StoreError::Conflict(format!(
                "contact `{survivor}` is merged into `{into}`; merge into that one"
            )));
        }
        let merge = Merge::verified(target, source, evidence, at);
        let moved = merge.handles.clone();
        for owner in self.handles.values_mut().filter(|owner| *owner == absorbed) {
            *owner = survivor.to_owned();
        }
        if let Some(target) = self.contacts.get_mut(survivor) {
            for handle in &moved {
                rules::add_handle(target, handle);
            }
        }
        self.merged_into
            .insert(absorbed.to_owned(), survivor.to_owned());
        self.merges
            .entry(survivor.to_owned())
            .or_default()
            .push(merge.clone());
        Ok(merge)
    }

    fn live_merge(&self, survivor: &str, absorbed: &str) -> Option<&Merge> {
        self.merges
            .get(survivor)?
            .iter()
            .find(|merge| merge.absorbed == absorbed && merge.undone_at.is_none())
    }

    fn unmerge(
        &mut self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        let merge = self
            .merges
            .get_mut(survivor)
            .and_then(|merges| {
                merges
                    .iter_mut()
                    .find(|merge| merge.absorbed == absorbed && merge.undone_at.is_none())
            })
            .ok_or_else(|| not_found("merge", &format!("{absorbed} into {survivor}")))?;
        merge.undone_at = Some(at);
        let merge = merge.clone();
        for handle in &merge.handles {
            if let Some(owner) = self.handles.get_mut(&(handle.kind, handle.value.clone()))
                && owner == survivor
            {
                *owner = absorbed.to_owned();
            }
        }
        if let Some(target) = self.contacts.get_mut(survivor) {
            target.handles.retain(|have| {
                !merge
                    .handles
                    .iter()
                    .any(|moved| moved.kind == have.kind && moved.value == have.value)
            });
        }
        self.merged_into.remove(absorbed);
        Ok(merge)
    }

    fn erase(&mut self, id: &str) -> Option<Erased> {
        let details = self.details(id)?;
        let latest = self
            .latest
            .get(id)
            .and_then(|cv| self.conversations.get(cv))
            .map(|thread| thread.conversation.clone());
        let absorbed: Vec<String> = details
            .merges
            .iter()
            .filter(|merge| merge.undone_at.is_none())
            .map(|merge| merge.absorbed.clone())
            .collect();
        for contact in std::iter::once(id.to_owned()).chain(absorbed.iter().cloned()) {
            self.contacts.remove(&contact);
            self.handles.retain(|_, owner| *owner != contact);
            for conversation in self.owned.remove(&contact).unwrap_or_default() {
                self.conversations.remove(&conversation);
            }
            self.latest.remove(&contact);
            self.merges.remove(&contact);
            self.merged_into.remove(&contact);
            self.tokens.retain(|_, (owner, _)| *owner != contact);
            // Owed events of an erased contact are not published: they carry its data.
            self.owed.retain(|(owner, _), _| *owner != contact);
            for members in self.probable.values_mut() {
                members.remove(&contact);
            }
        }
        Some(Erased {
            contact_id: id.to_owned(),
            absorbed,
            conversations: details.conversations,
            latest,
        })
    }
}

impl Thread {
    /// Drop history and timeline entries older than `cutoff`.
    fn retain(&mut self, cutoff: Timestamp) {
        while self.history.front().is_some_and(|entry| entry.at < cutoff) {
            self.history.pop_front();
        }
        let old = self
            .timeline
            .iter()
            .take_while(|entry| entry.at < cutoff)
            .count();
        self.timeline.drain(..old);
        self.trimmed += old as u64;
    }

    /// Keep at most `cap` timeline entries, dropping the oldest.
    fn cap_timeline(&mut self, cap: usize) {
        let over = self.timeline.len().saturating_sub(cap.max(1));
        self.timeline.drain(..over);
        self.trimmed += over as u64;
    }
}

fn new_thread(contact_id: &str, channel: &str, at: Timestamp) -> Thread {
    let (conversation, started) =
        rules::opened(crate::ids::conversation(), contact_id, channel, at);
    Thread {
        conversation,
        history: VecDeque::new(),
        timeline: vec![started],
        windows: Windows::new(),
        trimmed: 0,
        touched: Timestamp::now(),
        outcome: (0, None),
    }
}

fn push_history(history: &mut VecDeque<HistoryEntry>, entry: HistoryEntry, cap: usize) {
    history.push_back(entry);
    while history.len() > cap.max(1) {
        history.pop_front();
    }
}

fn last(history: &VecDeque<HistoryEntry>, limit: usize) -> Vec<HistoryEntry> {
    history
        .iter()
        .skip(history.len().saturating_sub(limit))
        .cloned()
        .collect()
}

fn not_found(kind: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Direction;

    /// Small caps, a day of inactivity.
    pub(crate) fn policy() -> IngestPolicy {
        IngestPolicy {
            timeline_cap: 10_000,
            dedupe_ttl: Duration::from_secs(3600),
            inactivity: Duration::from_secs(24 * 3600),
            history_cap: 3,
            history_depth: 10,
        }
    }

    fn handle(kind: HandleKind, value: &str, verified: bool) -> Handle {
        Handle {
            kind,
            value: value.to_owned(),
            verified,
        }
    }

    /// An inbound text message of `user` on `channel` (with a verified `phone`), owing
    /// an empty payload.
    pub(crate) fn ingest(
        channel: &str,
        user: &str,
        id: &str,
        phone: Option<&str>,
        at: Timestamp,
    ) -> Ingest {
        Ingest {
            merged_owed: None,
            channel: channel.to_owned(),
            external_id: id.to_owned(),
            at,
            person: Person {
                user: handle(HandleKind::ChannelUser, &format!("{channel}:{user}"), true),
                name: Some("Ana".into()),
                handles: phone
                    .map(|p| handle(HandleKind::Phone, p, true))
                    .into_iter()
                    .collect(),
            },
            message: Some(HistoryEntry {
                event_id: format!("evt_{id}"),
                at,
                channel: channel.to_owned(),
                direction: Direction::Inbound,
                external_id: Some(id.to_owned()),
                text: Some(format!("text {id}")),
                parts: Vec::new(),
            }),
            referral: None,
            reply_window: None,
            owed: Some(String::new()),
        }
    }

    #[tokio::test]
    async fn duplicate_is_dropped_and_conversation_continues() {
        let store = MemoryStore::new();
        let now = Timestamp::now();
        let first = store
            .ingest(ingest("web", "v1", "m1", None, now), &policy())
            .await
            .expect("ok")
            .expect("new");
        assert!(first.started);
        assert!(
            store
                .ingest(ingest("web", "v1", "m1", None, now), &policy())
                .await
                .expect("ok")
                .is_none()
        );
        let second = store
            .ingest(ingest("web", "v1", "m2", None, now), &policy())
            .await
            .expect("ok")
            .expect("new");
        assert!(!second.started);
        assert_eq!(second.conversation.id, first.conversation.id);
        assert_eq!(second.conversation.messages, 2);
        assert_eq!(second.history.len(), 2);
    }

    #[tokio::test]
    async fn verified_phone_links_channels_and_switch_is_reported() {
        let store = MemoryStore::new();
        let now = Timestamp::now();
        let web = store
            .ingest(
                ingest("web", "v1", "m1", Some("+34600111222"), now),
                &policy(),
            )
            .await
            .expect("ok")
            .expect("new");
        let wa = store
            .ingest(
                ingest("wa", "34600111222", "w1", Some("+34600111222"), now),
                &policy(),
            )
            .await
            .expect("ok")
            .expect("new");
        assert_eq!(wa.contact.id, web.contact.id);
        assert_eq!(wa.conversation.id, web.conversation.id);
        assert_eq!(wa.switched_from.as_deref(), Some("web"));
        assert_eq!(wa.conversation.channels_used, vec!["web", "wa"]);
        assert_eq!(wa.contact.user_on("wa"), Some("34600111222"));
    }

    #[tokio::test]
    async fn history_is_capped_and_inactivity_opens_a_new_conversation() {
        let store = MemoryStore::new();
        let now = Timestamp::now();
        for i in 0..5 {
            store
                .ingest(ingest("web", "v1", &format!("m{i}"), None, now), &policy())
                .await
                .expect("ok");
        }
        let later = now
            .checked_add(jiff::SignedDuration::from_hours(25))
            .expect("time");
        let next = store
            .ingest(ingest("web", "v1", "m9", None, later), &policy())
            .await
            .expect("ok")
            .expect("new");
        assert!(next.started);
        let history = store.history(&next.conversation.id, 10).await.expect("ok");
        assert_eq!(history.len(), 1);
    }

    #[test]
    fn dedupe_keys_expire_after_two_generations() {
        let store = MemoryStore::new();
        let ttl = Duration::from_millis(20);
        assert!(store.first_sighting("k".into(), ttl));
        assert!(!store.first_sighting("k".into(), ttl));
        std::thread::sleep(Duration::from_millis(25));
        assert!(
            !store.first_sighting("other".into(), ttl) || !store.first_sighting("k".into(), ttl)
        );
        std::thread::sleep(Duration::from_millis(50));
        store.first_sighting("rotate".into(), ttl);
        std::thread::sleep(Duration::from_millis(25));
        store.first_sighting("rotate-again".into(), ttl);
        assert!(store.first_sighting("k".into(), ttl));
    }
}
