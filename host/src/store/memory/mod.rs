//! The embedded memory backend: one process, nothing survives a restart.
//!
//! Nothing here is behind one lock, so messages of different contacts never wait on
//! each other:
//! - dedupe keys live in 64 generation-rotated shards (bounded by TTL; a shard's rehash
//!   touches 1/64 of the keys, so a growing set never stalls requests for long);
//! - contacts, with their conversations and merges, live in 16 shards by contact id
//!   (`shard.rs`): a change of one contact (a message either way, a close) locks its
//!   shard only;
//! - the handle, conversation and probable-link indexes and the owed records are maps
//!   split over locks by key (`index.rs`);
//! - a change of several contacts (a merge, its undoing, an erasure, a message whose
//!   verified handle another contact owns) locks every contact shard, in order
//!   (`all.rs`): those are rare, and each stays one atomic step.
//!
//! Lock order: contact shards (in order), then one index, owed-record or token lock at
//! a time. Nothing waits for a contact shard while holding any other lock, so no two
//! paths can wait on each other. A change's owed record is written before its contact
//! shard is unlocked: whoever sees the change sees its record.

mod all;
mod index;
mod shard;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use parking_lot::{Mutex, MutexGuard};

use self::all::AllShards;
use self::index::{Index, Sharded, shard_of};
use self::shard::{Shard, last, push_history};
use super::model::{
    Closed, Contact, ContactDetails, Conversation, Erased, Ingest, IngestPolicy, Ingested, Merge,
    Outbound, Owed, Person, TimelineEntry, TimelinePage, merges_on, owed_closed_key,
    owed_erased_key, owed_inbound_key, owed_merged_key, owed_outbound_key, owed_unmerged_key,
};
use super::outcomes::{
    MemoryTables, OutcomeCommit, OutcomeStore, RollupWrite, StartedRef, Tracked,
};
use super::rules;
use super::{ContextStore, StoreError};
use crate::event::{Handle, HistoryEntry};

const DEDUPE_SHARDS: usize = 64;
const CONTACT_SHARDS: usize = 16;

/// The memory backend.
pub struct MemoryStore {
    dedupe: Vec<Mutex<DedupeShard>>,
    /// Contacts by id (see the module's documentation).
    shards: Vec<Mutex<Shard>>,
    index: Index,
    /// (contact id, key) → events a change owes, until settled.
    owed: Sharded<(String, String), Owed>,
    /// Link token → (contact id, expiry).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Signed-out console session id → when it would have expired.
    revoked_sessions: Mutex<HashMap<String, Instant>>,
    tables: MemoryTables,
    retention: Option<Duration>,
}

#[derive(Default)]
struct DedupeShard {
    current: HashSet<String>,
    previous: HashSet<String>,
    rotated_at: Option<Instant>,
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
            shards: (0..CONTACT_SHARDS).map(|_| Mutex::default()).collect(),
            index: Index::default(),
            owed: Sharded::default(),
            tokens: Mutex::default(),
            revoked_sessions: Mutex::default(),
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

    /// The shard of contact `id`, locked.
    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        self.shards[shard_of(id, self.shards.len())].lock()
    }

    /// Every contact shard, locked in order.
    fn all(&self) -> AllShards<'_> {
        AllShards::lock(&self.shards)
    }

    /// The shard keeping conversation `id`, locked, or `NotFound`.
    fn conversation_shard(&self, id: &str) -> Result<MutexGuard<'_, Shard>, StoreError> {
        let owner = self
            .index
            .conversation_owner(id)
            .ok_or_else(|| not_found("conversation", id))?;
        Ok(self.shard(&owner))
    }

    /// Keep `owed` until it is settled.
    fn owe(&self, owed: Owed) {
        let key = (owed.contact_id.clone(), owed.key.clone());
        self.owed.lock(&key).insert(key, owed);
    }

    /// The contact owning the sender's channel user id, else one of its verified
    /// phones/e-mails; else a new contact id, whose claim on the channel user id is made
    /// here (two first messages of one new sender at once make one contact).
    fn sender(&self, person: &Person) -> String {
        std::iter::once(&person.user)
            .chain(person.handles.iter().filter(|handle| handle.verified))
            .find_map(|handle| self.index.owner(handle))
            .unwrap_or_else(|| self.index.claim(&person.user, &crate::ids::contact()))
    }

    /// A verified phone/e-mail the sender reports that another contact owns, with that
    /// owner: the merge it causes ([`AllShards::merge_on_shared_handle`]).
    fn shared_owner<'i>(&self, sender: &str, ingest: &'i Ingest) -> Option<(&'i Handle, String)> {
        ingest
            .person
            .handles
            .iter()
            .filter(|handle| merges_on(handle))
            .find_map(|handle| {
                let owner = self.index.owner(handle).filter(|owner| owner != sender)?;
                Some((handle, owner))
            })
    }

    /// Record the event on contact `contact_id`, whose shard is `shard` (locked), with
    /// the owed record of its events.
    fn record(
        &self,
        shard: &mut Shard,
        contact_id: &str,
        ingest: Ingest,
        merged: Option<Merge>,
        policy: &IngestPolicy,
    ) -> Ingested {
        shard.upsert_person(&self.index, contact_id, &ingest.person);
        let mut result = shard.touch_conversation(&self.index, contact_id, &ingest, policy);
        result.merged = merged;
        if let Some(payload) = ingest.owed {
            self.owe(Owed {
                contact_id: contact_id.to_owned(),
                key: owed_inbound_key(&ingest.channel, &ingest.external_id),
                at: Timestamp::now(),
                conversation_id: result.conversation.id.clone(),
                started: result.started,
                switched_from: result.switched_from.clone(),
                merged: result.merged.clone(),
                payload,
            });
        }
        if let Some(cutoff) = self.cutoff()
            && let Some(thread) = shard.conversations.get_mut(&result.conversation.id)
        {
            thread.retain(cutoff);
            result.history.retain(|entry| entry.at >= cutoff);
        }
        result
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
        if !self.first_sighting(key, policy.dedupe_ttl) {
            return Ok(None);
        }
        let sender = self.sender(&ingest.person);
        let result = match self.shared_owner(&sender, &ingest) {
            // Rare: the sender joins the owner of a verified handle it reports. Every
            // shard is locked, so the merge and the record are one step.
            Some((handle, owner)) => {
                let mut all = self.all();
                all.of(&sender).ensure_contact(&sender, ingest.at);
                let merged =
                    all.merge_on_shared_handle(&self.index, &sender, (handle, &owner), &ingest);
                if let (Some(merge), Some(payload)) = (&merged, &ingest.merged_owed) {
                    // In the same step as the ingest here; kept all the same, so both
                    // backends answer alike (the publisher settles it with the event's
                    // record).
                    self.owe(Owed::about_contact(
                        &owner,
                        owed_merged_key(&merge.id),
                        Timestamp::now(),
                        Some(merge.clone()),
                        payload.clone(),
                    ));
                }
                let contact_id = merged
                    .as_ref()
                    .map_or(sender, |merge| merge.survivor.clone());
                self.record(all.of(&contact_id), &contact_id, ingest, merged, policy)
            }
            None => {
                let mut shard = self.shard(&sender);
                shard.ensure_contact(&sender, ingest.at);
                self.record(&mut shard, &sender, ingest, None, policy)
            }
        };
        Ok(Some(result))
    }

    async fn record_outbound(
        &self,
        outbound: Outbound,
        policy: &IngestPolicy,
    ) -> Result<Ingested, StoreError> {
        let owed_key = owed_outbound_key(&outbound.message.event_id);
        let conversation_id = &outbound.conversation_id;
        let mut shard = self.conversation_shard(conversation_id)?;
        let thread = shard
            .conversations
            .get_mut(conversation_id)
            .ok_or_else(|| not_found("conversation", conversation_id))?;
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
        let contact = shard
            .contacts
            .get(&conversation.contact_id)
            .cloned()
            .ok_or_else(|| not_found("contact", &conversation.contact_id))?;
        self.owe(Owed {
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
        Ok(self.shard(id).contacts.get(id).cloned())
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let Some(owner) = self.index.conversation_owner(id) else {
            return Ok(None);
        };
        Ok(self
            .shard(&owner)
            .conversations
            .get(id)
            .map(|thread| thread.conversation.clone()))
    }

    async fn history(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let shard = self.conversation_shard(conversation_id)?;
        let thread = shard
            .conversations
            .get(conversation_id)
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        Ok(last(&thread.history, limit))
    }

    async fn contact_details(&self, id: &str) -> Result<Option<ContactDetails>, StoreError> {
        Ok(self.all().details(&self.index, id))
    }

    async fn put_link_token(
        &self,
        token: &str,
        contact_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut tokens = self.tokens.lock();
        let now = Instant::now();
        tokens.retain(|_, (_, expiry)| *expiry > now);
        tokens.insert(token.to_owned(), (contact_id.to_owned(), now + ttl));
        Ok(())
    }

    async fn link_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tokens
            .lock()
            .get(token)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(contact, _)| contact.clone()))
    }

    async fn drop_link_token(&self, token: &str) -> Result<(), StoreError> {
        self.tokens.lock().remove(token);
        Ok(())
    }

    async fn revoke_session(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut revoked = self.revoked_sessions.lock();
        let now = Instant::now();
        // Forget what has expired anyway: the map stays as small as the live sessions.
        revoked.retain(|_, expiry| *expiry > now);
        revoked.insert(id.to_owned(), now + ttl);
        Ok(())
    }

    async fn session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .revoked_sessions
            .lock()
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
        let mut all = self.all();
        if all.contact(survivor).is_none() {
            return Err(not_found("contact", survivor));
        }
        let sender = self.sender(person);
        let shard = all.of(&sender);
        shard.ensure_contact(&sender, at);
        shard.upsert_person(&self.index, &sender, person);
        if sender == survivor {
            return Ok(None);
        }
        let merge = all.merge(&self.index, survivor, &sender, evidence, at)?;
        self.owe(Owed::about_contact(
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
        self.all()
            .merge(&self.index, survivor, absorbed, evidence, at)
    }

    async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Merge, StoreError> {
        let mut all = self.all();
        let undone = all.unmerge(&self.index, survivor, absorbed, at)?;
        self.owe(Owed::about_contact(
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
            let mut all = self.all();
            let erased = all.erase(&self.index, id);
            // Under the same locks: the erasure and what it owes are one step here.
            if let Some(erased) = &erased {
                let gone: HashSet<&str> = std::iter::once(id)
                    .chain(erased.absorbed.iter().map(String::as_str))
                    .collect();
                self.tokens
                    .lock()
                    .retain(|_, (owner, _)| !gone.contains(owner.as_str()));
                // Owed events of an erased contact are not published: they carry its data.
                for mut shard in self.owed.each() {
                    shard.retain(|(owner, _), _| !gone.contains(owner.as_str()));
                }
                self.owe(Owed::about_contact(
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
        let cutoff = self.cutoff();
        let mut closed = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            if let Some(cutoff) = cutoff {
                for thread in shard.conversations.values_mut() {
                    thread.retain(cutoff);
                }
            }
            for (contact, conversation) in
                shard.close_idle(now, inactivity, limit.saturating_sub(closed.len()))
            {
                let owed = Owed {
                    contact_id: contact.id.clone(),
                    key: owed_closed_key(&conversation.id),
                    at: Timestamp::now(),
                    conversation_id: conversation.id.clone(),
                    started: false,
                    switched_from: None,
                    merged: None,
                    payload: payload(),
                };
                self.owe(owed.clone());
                closed.push(Closed {
                    contact,
                    conversation,
                    owed,
                });
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
        let Some(contact_id) = self.index.owner(user) else {
            return Ok(None);
        };
        let key = (contact_id, owed_inbound_key(channel, external_id));
        Ok(self.owed.lock(&key).get(&key).cloned())
    }

    async fn stale_owed(&self, before: Timestamp, limit: usize) -> Result<Vec<Owed>, StoreError> {
        let mut stale: Vec<Owed> = Vec::new();
        for shard in self.owed.each() {
            stale.extend(shard.values().filter(|owed| owed.at < before).cloned());
        }
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
        for shard in &self.shards {
            let shard = shard.lock();
            idle.extend(
                shard
                    .contacts
                    .values()
                    .filter(|contact| !shard.merged_into.contains_key(&contact.id))
                    .filter(|contact| shard.last_activity(contact) < before)
                    .map(|contact| contact.id.clone())
                    .take(limit - idle.len()),
            );
            if idle.len() >= limit {
                break;
            }
        }
        Ok(idle)
    }

    async fn settle(&self, owed: &[(String, String)]) -> Result<(), StoreError> {
        for key in owed {
            self.owed.lock(key).remove(key);
        }
        Ok(())
    }

    async fn timeline(
        &self,
        conversation_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        let shard = self.conversation_shard(conversation_id)?;
        let thread = shard
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
        let Some(owner) = self.index.conversation_owner(conversation_id) else {
            return Ok(None);
        };
        Ok(self
            .shard(&owner)
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
            let mut shard = self.conversation_shard(commit.conversation_id)?;
            let thread = shard
                .conversations
                .get_mut(commit.conversation_id)
                .ok_or_else(|| not_found("conversation", commit.conversation_id))?;
            if thread.outcome.0 != commit.version {
                return Ok(false);
            }
            thread.outcome = (commit.version + 1, Some(commit.record.to_owned()));
            if let Some((key, payload)) = commit.owed {
                self.owe(Owed {
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
        let key = (contact_id.to_owned(), key.to_owned());
        let mut shard = self.owed.lock(&key);
        if shard.contains_key(&key) {
            return Ok(false);
        }
        let owed = Owed::about_contact(
            contact_id,
            key.1.clone(),
            Timestamp::now(),
            None,
            payload.to_owned(),
        );
        shard.insert(key, owed);
        Ok(true)
    }

    async fn contact_by_handle(&self, handle: &Handle) -> Result<Option<String>, StoreError> {
        Ok(self.index.owner(handle))
    }
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
    use crate::event::{Direction, HandleKind};

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

    /// Messages of many senders on many threads, while merges and an erasure lock every
    /// shard: each message lands once on its contact, and nothing waits forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_senders_at_once_and_merges_between_them_keep_every_message() {
        let store = std::sync::Arc::new(MemoryStore::new());
        let now = Timestamp::now();
        let senders = 40;
        let per_sender = 25;
        let mut tasks = Vec::new();
        for sender in 0..senders {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..per_sender {
                    let id = format!("m{sender}-{n}");
                    store
                        .ingest(
                            ingest("web", &format!("v{sender}"), &id, None, now),
                            &policy(),
                        )
                        .await
                        .expect("ok")
                        .expect("new");
                    tokio::task::yield_now().await;
                }
            }));
        }
        let merging = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut merges = 0;
                while merges < 10 {
                    let owner = |n: usize| {
                        let store = store.clone();
                        async move {
                            let user = handle(HandleKind::ChannelUser, &format!("web:v{n}"), true);
                            store.contact_by_handle(&user).await.expect("ok")
                        }
                    };
                    if let (Some(a), Some(b)) =
                        (owner(merges * 2).await, owner(merges * 2 + 1).await)
                        && a != b
                    {
                        store.merge(&a, &b, "test", now).await.expect("merged");
                        merges += 1;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let all = async {
            for task in tasks {
                task.await.expect("sender");
            }
            merging.await.expect("merges");
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("no lock waits forever");
        // A merged sender's handle points at its survivor, whose details list the
        // absorbed contact's conversations too: count each survivor once.
        let mut survivors = HashSet::new();
        for sender in 0..senders {
            let user = handle(HandleKind::ChannelUser, &format!("web:v{sender}"), true);
            survivors.insert(
                store
                    .contact_by_handle(&user)
                    .await
                    .expect("ok")
                    .expect("known"),
            );
        }
        assert_eq!(survivors.len(), senders - 10);
        let mut messages = 0;
        for contact in survivors {
            let details = store
                .contact_details(&contact)
                .await
                .expect("ok")
                .expect("known");
            assert_eq!(details.merged_into, None);
            for conversation in details.conversations {
                messages += store
                    .conversation(&conversation)
                    .await
                    .expect("ok")
                    .expect("known")
                    .messages;
            }
        }
        assert_eq!(messages, (senders * per_sender) as u64);
        let erased = store
            .erase(
                &store
                    .contact_by_handle(&handle(HandleKind::ChannelUser, "web:v0", true))
                    .await
                    .expect("ok")
                    .expect("known"),
                now,
                &|_| String::new(),
            )
            .await
            .expect("ok")
            .expect("erased");
        assert_eq!(erased.absorbed.len(), 1, "v1 was merged into v0");
        for user in ["web:v0", "web:v1"] {
            let gone = handle(HandleKind::ChannelUser, user, true);
            assert_eq!(store.contact_by_handle(&gone).await.expect("ok"), None);
        }
    }

    /// Two first messages of one new sender at once make one contact: the first claim
    /// of its channel user id wins, and the other message lands on that contact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn first_messages_of_one_new_sender_at_once_make_one_contact() {
        let store = std::sync::Arc::new(MemoryStore::new());
        let now = Timestamp::now();
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .ingest(
                            ingest("web", "new", &format!("first-{n}"), None, now),
                            &policy(),
                        )
                        .await
                        .expect("ok")
                        .expect("new")
                })
            })
            .collect();
        let mut contacts = HashSet::new();
        let mut conversations = HashSet::new();
        for task in tasks {
            let ingested = task.await.expect("ingest");
            contacts.insert(ingested.contact.id);
            conversations.insert(ingested.conversation.id);
        }
        assert_eq!(contacts.len(), 1);
        assert_eq!(conversations.len(), 1);
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
