//! The Redis backend: many gateway instances share one Redis or Redis Cluster.
//!
//! Layout and atomicity (details in docs/redis-keys.md): every key of one contact carries
//! the hash tag `{<contact id>}`, so the ingest script — dedupe, contact upsert,
//! conversation continue/open, history append, attribution — runs atomically in one slot.
//! Dedupe is therefore scoped to the contact the sender's channel-user handle resolves to,
//! which is stable for a provider event id (it comes from one sender).
//!
//! The indexes that *find* a contact are single keys in their own slots, each written
//! with one atomic command, so instances never race on a read-modify-write:
//! - handle → contact: `SET NX` (first claim wins; `SET NX GET` tells the loser the winner),
//!   or set by the script that makes the contact in the handle key's slot (below),
//! - conversation → contact: written with the script when the contact is new, else right
//!   after a script that opened a conversation (idempotent, retried in the background if
//!   Redis fails just then; the event itself is never failed after the script committed).
//!
//! A contact made by a sender's first event gets an id in the slot of the sender's handle
//! key (its home slot, `home.rs`), so one script (`apply.lua`) looks the sender up and
//! records the event as the context rules decided it (`plan.rs`): one round trip for a
//! known sender in an open conversation. A contact in another slot (made before home
//! slots, or a merge's survivor) costs one redirect; a sender reporting verified handles
//! its contact does not hold yet, or a new sender reporting any, takes the lookup path
//! (handle lookup; claim; script). Counts in docs/redis-keys.md.
//!
//! Every other change of a contact (a business message, the sweeper's close, a merge, an
//! unmerge, a linked sender's details) is decided by the same rules on what was just read
//! and applied by `change.lua` (`change.rs`), guarded on the facts the decision read.
//!
//! Rare: the lookup shows that a verified phone/e-mail of the sender belongs to another
//! contact. The sender's contact is then merged into that owner before the script (one
//! trip to check the event is no duplicate and the pair was never unmerged, then the
//! ordinary merge steps), so the event lands on the survivor; the ingest reports the merge
//! for `contact.merged`.

mod change;
mod conn;
mod feed;
mod home;
mod keys;
mod outcomes;
mod plan;
pub mod plugins;
mod recent;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable as _};
use futures::future::try_join_all;
use jiff::Timestamp;
use redis::Script;

use super::model::{
    Closed, Contact, ContactDetails, Conversation, Erased, Ingest, IngestPolicy, Ingested,
    LinkStrength, Merge, Outbound, Owed, Person, ProbableLink, TimelineEntry, TimelinePage,
    merges_on, owed_erased_key, owed_inbound_key, owed_outbound_key, owed_unmerged_key,
    probable_keys, shared_handle_evidence,
};
use super::{ContextStore, StoreError, rules};
use crate::event::{Attribution, ConversationStatus, Handle, HistoryEntry, Referral};
pub use crate::redis_url::{RedisTls, is_redis_url, redact, seeds};
use conn::{Conn, ScriptCall};
use recent::{Answered, Recent};

/// How often a conversation index that could not be written is retried.
const INDEX_RETRIES: usize = 50;

/// Contacts whose state an instance keeps a copy of: the most recently active ones. A
/// contact not among them costs its next message one request more (its sender one more
/// too, when it is not among [`SENDERS`]).
const HEADS: usize = 20_000;

/// What the copies may weigh together, in KiB ([`plan::Head::weight`]): about
/// [`HEADS`] contacts without history, fewer when subscriptions want their last messages
/// (each copy then holds them).
const HEADS_KIB: u64 = 40 * 1024;

/// Senders whose contact an instance remembers.
const SENDERS: usize = 20_000;

/// An instance's copies of contacts, by contact id.
type Heads = quick_cache::sync::Cache<String, Arc<plan::Head>, plan::HeadWeight>;
/// An instance's senders: contact id by handle key.
type Senders = quick_cache::sync::Cache<String, String>;

/// How many times an event is decided again when other writers keep changing its
/// contact between the decision and the write.
const APPLY_TRIES: usize = 8;

/// Number of leading reply fields before the conversation (`name, created_at, handles`).
const CONTACT_FIELDS: usize = 3;
/// Conversation fields in a script reply: id + the 13 hash fields.
const CONVERSATION_FIELDS: usize = 14;

/// The Redis backend.
pub struct RedisStore {
    conn: Conn,
    display: String,
    apply_script: Script,
    /// This instance's copies of active contacts ([`plan::Head`]) by contact id: what the
    /// rules decide from.
    heads: Arc<Heads>,
    /// The contact of each recently seen sender, by its channel-user handle key.
    senders: Arc<Senders>,
    /// Applies a business message, a close, a merge, an unmerge or a linked sender's
    /// details ([`change::Change`]).
    change_script: Script,
    /// Reads a contact as stored ([`plan::Head`]).
    head_script: Script,
    repoint_script: Script,
    unindex_script: Script,
    erase_script: Script,
    outcome_script: Script,
    rollup_script: Script,
    round_trips: Arc<AtomicU64>,
    retention: Option<Duration>,
    /// The tasks following other instances' erasures, stopped with the store.
    _following: Option<Following>,
}

/// Background tasks aborted when dropped.
struct Following(Vec<tokio::task::AbortHandle>);

impl Drop for Following {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl RedisStore {
    /// Connect (lazily) to the Redis named by `url`: `redis://[user:password@]host:port[/db]`,
    /// `rediss://…` (TLS), `redis+cluster://[auth@]h1:p1,h2:p2` / `rediss+cluster://…`, or
    /// several comma-separated `redis://` URLs (a cluster's seed nodes).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, None)
    }

    /// [`RedisStore::open`] with a message retention (`None`: kept with the conversation).
    pub fn open_with(url: &str, retention: Option<Duration>) -> Result<Self, StoreError> {
        Self::connect(url, retention, &RedisTls::default())
    }

    /// [`RedisStore::open_with`], trusting `tls` for `rediss://` connections.
    pub fn connect(
        url: &str,
        retention: Option<Duration>,
        tls: &RedisTls,
    ) -> Result<Self, StoreError> {
        crate::tls::ensure_crypto_provider();
        let target = conn::open(url, tls)?;
        let heads = Arc::new(Heads::with_weighter(HEADS, HEADS_KIB, plan::HeadWeight));
        let senders = Arc::new(Senders::new(SENDERS));
        let following = forget_erased(seeds(url)?, tls, &heads, &senders);
        Ok(Self {
            conn: target.conn,
            display: target.display,
            apply_script: Script::new(concat!(
                include_str!("common.lua"),
                include_str!("apply.lua")
            )),
            heads,
            senders,
            _following: following,
            change_script: Script::new(concat!(
                include_str!("common.lua"),
                include_str!("change.lua")
            )),
            head_script: Script::new(concat!(
                include_str!("common.lua"),
                include_str!("head.lua")
            )),
            repoint_script: Script::new(include_str!("repoint.lua")),
            unindex_script: Script::new(include_str!("unindex.lua")),
            erase_script: Script::new(include_str!("erase.lua")),
            outcome_script: Script::new(concat!(
                include_str!("common.lua"),
                include_str!("outcome.lua")
            )),
            rollup_script: Script::new(include_str!("rollup.lua")),
            round_trips: Arc::new(AtomicU64::new(0)),
            retention,
        })
    }

    /// Where it connects, password removed (for logs).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Round trips made since start (each a set of concurrent commands), for benchmarks.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Messages before this time are gone (message retention).
    fn cutoff(&self) -> Option<Timestamp> {
        let retention = jiff::SignedDuration::try_from(self.retention?).ok()?;
        Timestamp::now().checked_sub(retention).ok()
    }

    /// The last `keep` messages of conversation `conversation_id` after a script's answer
    /// whose history part is `answer` (its `messages`, then the entries the caller lacked
    /// after position `held`), with `before` (what this instance held) and the event's
    /// `own` message; `None` when no history was asked for (`keep` is 0).
    fn recent_after(
        &self,
        before: Option<&Recent>,
        conversation_id: &str,
        (held, keep): (u64, usize),
        answer: &[String],
        own: Option<&HistoryEntry>,
    ) -> Result<Option<Recent>, StoreError> {
        let Some((messages, fetched)) = answer.split_first().filter(|_| keep > 0) else {
            return Ok(None);
        };
        let answered = Answered {
            conversation_id,
            known: held,
            count: messages
                .parse()
                .map_err(|_| corrupt("script answer", "messages is not a number"))?,
            fetched: parse_history(fetched)?,
            own,
            keep,
            cutoff: self.cutoff(),
        };
        Ok(Some(Recent::after(before, answered)))
    }

    /// How many contacts this instance holds a copy of (for benchmarks and tests).
    pub fn copies(&self) -> usize {
        self.heads.len()
    }

    fn retention_arg(&self) -> String {
        self.retention
            .map(|retention| micros(retention).to_string())
            .unwrap_or_default()
    }

    fn trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    fn unavailable(&self, error: redis::RedisError) -> StoreError {
        StoreError::Unavailable(format!("redis {}: {error}", self.display))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))
    }

    /// Who owns each handle (one round trip).
    async fn owners(&self, handles: &[&Handle]) -> Result<Vec<Option<String>>, StoreError> {
        self.trip();
        try_join_all(handles.iter().map(|handle| {
            self.query::<Option<String>>(redis::cmd("GET").arg(keys::handle(handle)).clone())
        }))
        .await
    }

    /// Point `handle` at `contact_id` unless someone did first; returns the owner.
    async fn claim(&self, handle: &Handle, contact_id: &str) -> Result<String, StoreError> {
        let previous: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(keys::handle(handle))
                    .arg(contact_id)
                    .arg("NX")
                    .arg("GET")
                    .clone(),
            )
            .await?;
        Ok(previous.unwrap_or_else(|| contact_id.to_owned()))
    }

    /// Resolve the sender to a contact id: its channel-user handle's owner, else the owner
    /// of one of its verified handles, else a new id (see [`Resolved`]).
    async fn resolve(&self, person: &Person) -> Result<Resolved, StoreError> {
        let indexed: Vec<&Handle> = std::iter::once(&person.user)
            .chain(person.handles.iter().filter(|handle| handle.verified))
            .collect();
        let owners = self.owners(&indexed).await?;
        if let Some(Some(owner)) = owners.first() {
            let unowned = indexed
                .iter()
                .zip(&owners)
                .skip(1)
                .filter(|(_, owner)| owner.is_none())
                .map(|(handle, _)| (*handle).clone())
                .collect();
            return Ok(Resolved {
                shared: shared_handle(&indexed, &owners, owner),
                contact: owner.clone(),
                fresh: false,
                unowned,
                new_sender: false,
                verified: verified_owners(&indexed, &owners),
            });
        }
        let linked = owners.iter().skip(1).flatten().next().cloned();
        let fresh = linked.is_none();
        // A new contact lives in the slot of the sender's handle key (its home slot), so
        // its later events take the one-request path.
        let candidate = linked.unwrap_or_else(|| {
            home::contact_id_in(home::slot_of_key(&keys::handle(&person.user)))
                .unwrap_or_else(crate::ids::contact)
        });
        // The channel user decides; verified handles nobody owns yet join the same contact.
        self.trip();
        let unowned: Vec<&Handle> = indexed
            .iter()
            .zip(&owners)
            .skip(1)
            .filter(|(_, owner)| owner.is_none())
            .map(|(handle, _)| *handle)
            .collect();
        let (winner, _) = futures::try_join!(
            self.claim(&person.user, &candidate),
            try_join_all(unowned.iter().map(|handle| self.claim(handle, &candidate))),
        )?;
        if winner != candidate {
            // Another instance claimed this sender first: point the verified handles we
            // just claimed for our candidate at the winner instead (rare; one more trip).
            self.trip();
            try_join_all(
                unowned
                    .iter()
                    .map(|handle| self.repoint(keys::handle(handle), &candidate, &winner)),
            )
            .await?;
        }
        Ok(Resolved {
            shared: shared_handle(&indexed, &owners, &winner),
            fresh: fresh && winner == candidate,
            verified: verified_owners(&indexed, &owners),
            contact: winner,
            unowned: Vec::new(),
            new_sender: true,
        })
    }

    /// The sender (contact `sender`) reported verified `handle`, which `owner` owns:
    /// merge the sender into the owner with the ordinary merge steps. Skipped when the
    /// event is a duplicate on the sender's contact (a retry merges nothing), or when a
    /// merge of the two was undone before (an operator separated them; a handle they share
    /// must not join them again). Both checks cost one round trip, only in this rare case.
    /// A merge the records refuse is logged and skipped: the event is still recorded, on
    /// the sender's contact.
    async fn merge_on_shared_handle(
        &self,
        sender: &str,
        owner: &str,
        handle: &Handle,
        ingest: &Ingest,
        member: &str,
    ) -> Result<Option<Merge>, StoreError> {
        self.trip();
        let (owner_merges, sender_merges, seen) = futures::try_join!(
            self.merges_of(owner),
            self.merges_of(sender),
            self.query::<Option<f64>>(
                redis::cmd("ZSCORE")
                    .arg(keys::seen(sender))
                    .arg(member)
                    .clone()
            ),
        )?;
        let now_ms = Timestamp::now().as_millisecond() as f64;
        if seen.is_some_and(|expiry| expiry > now_ms) {
            return Ok(None);
        }
        let undone = |merges: &[(String, Merge)], absorbed: &str| {
            merges
                .iter()
                .any(|(_, merge)| merge.absorbed == absorbed && merge.undone_at.is_some())
        };
        if undone(&owner_merges, sender) || undone(&sender_merges, owner) {
            return Ok(None);
        }
        let evidence = shared_handle_evidence(handle, &ingest.channel);
        let owed = ingest.merged_owed.as_deref();
        match self
            .merge_owing(owner, sender, &evidence, ingest.at, owed)
            .await
        {
            Ok(merge) => Ok(Some(merge)),
            Err(error @ (StoreError::Conflict(_) | StoreError::NotFound { .. })) => {
                tracing::warn!(%error, survivor = %owner, absorbed = %sender, "contacts sharing a verified handle not merged");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Compare-and-set of an index key: `from` → `to` (`""` deletes). True when changed.
    async fn repoint(&self, key: String, from: &str, to: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let changed: i64 = self
            .repoint_script
            .key(key)
            .arg(from)
            .arg(to)
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(changed == 1)
    }

    /// The merges into `contact_id`, as stored (raw JSON) and parsed.
    async fn merges_of(&self, contact_id: &str) -> Result<Vec<(String, Merge)>, StoreError> {
        let raw: Vec<String> = self
            .query(
                redis::cmd("LRANGE")
                    .arg(keys::merges(contact_id))
                    .arg(0)
                    .arg(-1)
                    .clone(),
            )
            .await?;
        raw.into_iter()
            .map(|json| parse_json(&json).map(|merge| (json, merge)))
            .collect()
    }

    async fn merged_into(&self, contact_id: &str) -> Result<Option<String>, StoreError> {
        self.query(
            redis::cmd("HGET")
                .arg(keys::contact(contact_id))
                .arg("merged_into")
                .clone(),
        )
        .await
    }

    async fn conversation_ids(&self, contact_id: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            redis::cmd("LRANGE")
                .arg(keys::conversations(contact_id))
                .arg(0)
                .arg(-1)
                .clone(),
        )
        .await
    }

    /// Copy the dedupe entries of `from` into `to` (idempotent), so a provider retry of an
    /// event recorded under `from` is still recognized once its sender resolves to `to`.
    async fn copy_seen(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.trip();
        let entries: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(keys::seen(from))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .clone(),
            )
            .await?;
        for chunk in entries.chunks(500) {
            self.trip();
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(keys::seen(to)).arg("GT");
            for (member, score) in chunk {
                cmd.arg(*score).arg(member);
            }
            self.query::<()>(cmd).await?;
        }
        Ok(())
    }

    /// Contacts sharing a probable-link key with `contact` (not merged with it, still
    /// existing).
    async fn probable_links(
        &self,
        contact: &Contact,
        merges: &[Merge],
        merged_into: Option<&str>,
    ) -> Result<Vec<ProbableLink>, StoreError> {
        let keys = probable_keys(contact.name.as_deref(), &contact.handles);
        let members: Vec<Vec<String>> =
            try_join_all(keys.iter().map(|(key, _)| {
                self.query(redis::cmd("SMEMBERS").arg(keys::probable(key)).clone())
            }))
            .await?;
        let mut links: Vec<ProbableLink> = Vec::new();
        for ((_, evidence), mut others) in keys.iter().zip(members) {
            others.sort();
            for other in others {
                let merged = merged_into == Some(other.as_str())
                    || merges
                        .iter()
                        .any(|merge| merge.absorbed == other && merge.undone_at.is_none());
                if other != contact.id
                    && !merged
                    && !links.iter().any(|link| link.contact_id == other)
                {
                    links.push(ProbableLink {
                        contact_id: other,
                        strength: LinkStrength::Probable,
                        evidence: evidence.clone(),
                    });
                }
            }
        }
        Ok(links)
    }

    /// Delete one contact: its index entries first (so nothing resolves to it any more),
    /// then every key under its hash tag, in one script, except the owed record `kept`.
    async fn erase_one(&self, contact_id: &str, kept: Option<&str>) -> Result<(), StoreError> {
        let contact = self.contact(contact_id).await?;
        let conversations = self.conversation_ids(contact_id).await?;
        let tokens: Vec<String> = self
            .query(
                redis::cmd("SMEMBERS")
                    .arg(keys::tokens_of(contact_id))
                    .clone(),
            )
            .await?;
        if let Some(contact) = &contact {
            try_join_all(
                probable_keys(contact.name.as_deref(), &contact.handles)
                    .iter()
                    .map(|(key, _)| {
                        self.query::<()>(
                            redis::cmd("SREM")
                                .arg(keys::probable(key))
                                .arg(contact_id)
                                .clone(),
                        )
                    }),
            )
            .await?;
        }
        let handles = contact.map(|contact| contact.handles).unwrap_or_default();
        try_join_all(
            handles
                .iter()
                .map(|handle| self.repoint(keys::handle(handle), contact_id, "")),
        )
        .await?;
        try_join_all(conversations.iter().map(|cv| {
            self.query::<()>(redis::cmd("DEL").arg(keys::conversation_index(cv)).clone())
        }))
        .await?;
        try_join_all(
            tokens.iter().map(|token| {
                self.query::<()>(redis::cmd("DEL").arg(keys::link_token(token)).clone())
            }),
        )
        .await?;
        for index in [keys::open_shard, keys::activity_shard] {
            self.query::<()>(
                redis::cmd("ZREM")
                    .arg(index(keys::shard_of(contact_id)))
                    .arg(contact_id)
                    .clone(),
            )
            .await?;
        }
        // All in one slot: one script. Owed events of an erased contact are not
        // published (they carry its data), except the erasure's own.
        let mut invocation = self.erase_script.key(keys::owed(contact_id));
        invocation
            .key(keys::contact(contact_id))
            .key(keys::seen(contact_id))
            .key(keys::conversations(contact_id))
            .key(keys::merges(contact_id))
            .key(keys::tokens_of(contact_id));
        for cv in &conversations {
            invocation
                .key(keys::conversation(contact_id, cv))
                .key(keys::outcome(contact_id, cv))
                .key(keys::history(contact_id, cv))
                .key(keys::timeline(contact_id, cv));
        }
        invocation.arg(kept.unwrap_or_default());
        let mut conn = self.conn.clone();
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(())
    }

    /// Merge `absorbed` into `survivor` (see [`ContextStore::merge`]); with `owed`, the
    /// survivor keeps the merge's owed record (`contact.merged`) in the script that
    /// records the merge.
    async fn merge_owing(
        &self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
        owed: Option<&str>,
    ) -> Result<Merge, StoreError> {
        let mut decided = None;
        for _ in 0..APPLY_TRIES {
            // Every step below is one round trip (counted, like the ingest's).
            self.trip();
            let (target, source, merges) = futures::try_join!(
                self.stored_contact(survivor),
                self.stored_contact(absorbed),
                self.merges_of(survivor),
            )?;
            let target = target.ok_or_else(|| not_found("contact", survivor))?;
            let source = source.ok_or_else(|| not_found("contact", absorbed))?;
            let merges = merges.iter().map(|(_, merge)| merge);
            let (merge, existing) =
                match rules::merge(target.side(), merges, source.side(), evidence, at)? {
                    rules::Merging::Existing(merge) => (merge.clone(), true),
                    rules::Merging::New(merge) => (merge, false),
                };
            // Dedupe entries first, then the record, then the handles: until a handle
            // points at the survivor its events still land on (and are deduped by) the
            // absorbed one.
            self.copy_seen(absorbed, survivor).await?;
            if existing && owed.is_none() {
                // Nothing to write: a retry completes the steps below.
                decided = Some((merge, source.contact.handles));
                break;
            }
            let committed = Timestamp::now();
            let tail = owed
                .map(|payload| owed_tail(Some(&merge), Some(payload)))
                .transpose()?;
            let owing = tail
                .as_deref()
                .map(|tail| (tail, committed.as_microsecond()));
            let change = change::merge(&target, &merge, existing, owing)?;
            self.trip();
            // Beside it, when the merge owes its event: the hint that makes the record
            // findable by the relay.
            let (changed, _) = futures::try_join!(
                self.change(survivor, &change, None),
                self.hint_owed_if(owed.is_some(), survivor, committed.as_millisecond()),
            )?;
            if changed.is_some() {
                decided = Some((merge, source.contact.handles));
                break;
            }
        }
        let (merge, moving) = decided.ok_or_else(|| changed_meanwhile(survivor))?;
        self.trip();
        // With it: the owed-record hint of the absorbed contact by its id. A hint naming a
        // sender finds the contact its handle points at, which is the survivor once
        // re-pointed: the absorbed contact's records must stay findable.
        futures::try_join!(
            self.query::<()>(
                redis::cmd("HSET")
                    .arg(keys::contact(absorbed))
                    .arg("merged_into")
                    .arg(survivor)
                    .clone(),
            ),
            self.hint_owed(absorbed, Timestamp::now().as_millisecond()),
        )?;
        self.trip();
        try_join_all(
            moving
                .iter()
                .map(|handle| self.repoint(keys::handle(handle), absorbed, survivor)),
        )
        .await?;
        Ok(merge)
    }

    /// Keep the owed record of erasing `contact_id` (at `at`, `payload`) and point the
    /// relay at it: the erasure's first write.
    async fn owe_erasure(
        &self,
        contact_id: &str,
        at: Timestamp,
        payload: &str,
    ) -> Result<(), StoreError> {
        let record = format!(
            "{}\u{1f}\u{1f}0\u{1f}\u{1f}{}",
            at.as_microsecond(),
            owed_tail(None, Some(payload))?
        );
        futures::try_join!(
            self.query::<()>(
                redis::cmd("HSET")
                    .arg(keys::owed(contact_id))
                    .arg(owed_erased_key(contact_id))
                    .arg(record)
                    .clone(),
            ),
            self.hint_owed(contact_id, at.as_millisecond()),
        )?;
        Ok(())
    }

    /// Point the relay at the contact's owed records (when the change `owes`): `ZADD
    /// GT`, so the score is the latest owed write and the relay's compare-and-remove
    /// (`unindex.lua`) never drops a hint a newer record needs.
    ///
    /// Sent with it, in the same round trip: the contact's activity (`og:act:{shard}`,
    /// also `ZADD GT`), which `[store] contact_retention` reads.
    async fn hint_change(
        &self,
        contact_id: &str,
        now_ms: i64,
        owes: bool,
    ) -> Result<(), StoreError> {
        futures::try_join!(
            self.hint_owed_if(owes, contact_id, now_ms),
            self.mark_activity(contact_id, now_ms)
        )
        .map(drop)
    }

    /// [`Self::hint_owed`] when the change `owes` a record; nothing otherwise.
    async fn hint_owed_if(&self, owes: bool, member: &str, now_ms: i64) -> Result<(), StoreError> {
        if owes {
            self.hint_owed(member, now_ms).await
        } else {
            Ok(())
        }
    }

    /// `ZADD GT` of `member` (a contact id, or a [`keys::sender_member`]) into its shard of
    /// the owed-record hint.
    async fn hint_owed(&self, member: &str, now_ms: i64) -> Result<(), StoreError> {
        self.zadd_gt(keys::owed_shard(keys::shard_of(member)), now_ms, member)
            .await
    }

    /// `ZADD GT` of the contact's activity (`og:act:{shard}`), which `[store]
    /// contact_retention` reads. Written for a new contact and moved forward by the
    /// retention sweep itself, which checks the contact's latest conversation before
    /// erasing (so messages need not write it).
    async fn mark_activity(&self, contact_id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.zadd_gt(
            keys::activity_shard(keys::shard_of(contact_id)),
            at_ms,
            contact_id,
        )
        .await
    }

    /// `ZADD key GT score member`: a hint's score only moves forward.
    async fn zadd_gt(&self, key: String, score: i64, member: &str) -> Result<(), StoreError> {
        self.query(
            redis::cmd("ZADD")
                .arg(key)
                .arg("GT")
                .arg(score)
                .arg(member)
                .clone(),
        )
        .await
    }

    /// When the contact's latest conversation last saw a message (ms), if it has one.
    async fn last_message_ms(
        &self,
        contact_id: &str,
        latest: Option<String>,
    ) -> Result<Option<i64>, StoreError> {
        let Some(conversation_id) = latest else {
            return Ok(None);
        };
        let touched: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(keys::conversation(contact_id, &conversation_id))
                    .arg("touched_at")
                    .clone(),
            )
            .await?;
        touched
            .map(|micros| parse_time(&micros).map(|at| at.as_millisecond()))
            .transpose()
    }

    /// The contact an owed-record hint `member` names: a contact id, or a sender whose
    /// handle is looked up (`None` when the handle is gone).
    async fn contact_of_member(&self, member: &str) -> Result<Option<String>, StoreError> {
        match keys::member_handle_key(member) {
            Some(handle_key) => self.query(redis::cmd("GET").arg(handle_key).clone()).await,
            None => Ok(Some(member.to_owned())),
        }
    }

    /// The owed records of `contact_id` (`None`: nothing to look at), found under the
    /// hint `member` with `cutoff_ms`: when the contact owes nothing, the hint goes
    /// (unless a newer write moved it).
    async fn owed_of(
        &self,
        shard: u32,
        member: &str,
        contact_id: Option<&str>,
        cutoff_ms: i64,
    ) -> Result<Vec<Owed>, StoreError> {
        let fields: Vec<(String, String)> = match contact_id {
            Some(contact_id) => {
                self.query(redis::cmd("HGETALL").arg(keys::owed(contact_id)).clone())
                    .await?
            }
            None => Vec::new(),
        };
        if fields.is_empty() {
            self.unindex(&keys::owed_shard(shard), member, cutoff_ms)
                .await?;
        }
        let contact_id = contact_id.unwrap_or_default();
        fields
            .into_iter()
            .map(|(key, record)| parse_owed(contact_id, key, &record))
            .collect()
    }

    /// Up to `limit` members of the index sorted set `key` whose score (ms) is at most
    /// `cutoff_ms`, oldest first.
    async fn members_until(
        &self,
        key: &str,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.query(
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(cutoff_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .clone(),
        )
        .await
    }

    /// Remove `contact_id` from the index sorted set `key` unless a write moved its score
    /// past `cutoff_ms` meanwhile (`unindex.lua`).
    async fn unindex(&self, key: &str, contact_id: &str, cutoff_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .unindex_script
            .key(key)
            .arg(contact_id)
            .arg(cutoff_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(())
    }

    /// Note activity in the open-conversation index (after a sweep found the conversation
    /// active, and beside an outbound message).
    async fn mark_active(&self, contact_id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.zadd_gt(
            keys::open_shard(keys::shard_of(contact_id)),
            at.as_millisecond(),
            contact_id,
        )
        .await
    }

    /// Sweep one shard of the open-conversation index.
    async fn close_idle_in(
        &self,
        shard: u32,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<Closed>, StoreError> {
        let key = keys::open_shard(shard);
        let cutoff_ms = now.as_millisecond() - millis(inactivity);
        let candidates = self.members_until(&key, cutoff_ms, limit).await?;
        let mut closed = Vec::new();
        for contact_id in candidates {
            match self.sweep(&contact_id, now, inactivity, payload).await? {
                Swept::Active(at) => {
                    // Activity the index missed (e.g. an older event time): catch up.
                    self.mark_active(&contact_id, at).await?;
                    continue;
                }
                Swept::Closed(done) => closed.push(*done),
                Swept::Gone => {}
            }
            self.unindex(&key, &contact_id, cutoff_ms).await?;
        }
        Ok(closed)
    }

    /// Close the contact's latest conversation if the rules find it idle at `now`
    /// ([`change::sweep`]), from the contact as stored; decided again when another
    /// writer moved it meanwhile.
    async fn sweep(
        &self,
        contact_id: &str,
        now: Timestamp,
        inactivity: Duration,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Swept, StoreError> {
        let payload = payload();
        let tail = owed_tail(None, Some(&payload))?;
        for _ in 0..APPLY_TRIES {
            let head = self.stored(contact_id).await?;
            let committed = Timestamp::now();
            let change = match change::sweep(&head, now, inactivity, committed, &tail)? {
                change::Sweep::Gone => return Ok(Swept::Gone),
                change::Sweep::Active(at) => return Ok(Swept::Active(at)),
                change::Sweep::Close(change) => change,
            };
            // Sent together: a close that commits must be findable by the relay.
            let (changed, hinted) = futures::join!(
                self.change(contact_id, &change, None),
                self.hint_change(contact_id, committed.as_millisecond(), true),
            );
            if let Err(error) = hinted {
                tracing::warn!(%error, contact = %contact_id, "owed-record hint not written beside a close");
            }
            let Some(reply) = changed? else { continue };
            let (ingested, _) = parse_reply(contact_id, &reply)?;
            let conversation_id = ingested.conversation.id.clone();
            return Ok(Swept::Closed(Box::new(Closed {
                contact: ingested.contact,
                owed: Owed::about_conversation(
                    contact_id,
                    change.owed.0,
                    committed,
                    &conversation_id,
                    payload,
                ),
                conversation: ingested.conversation,
            })));
        }
        Err(changed_meanwhile(contact_id))
    }

    /// The contact as stored, with its latest conversation (head.lua).
    async fn stored(&self, contact_id: &str) -> Result<plan::Head, StoreError> {
        let mut invocation = ScriptCall::new(&self.head_script, [keys::contact(contact_id)]);
        invocation
            .arg(keys::contact_prefix(contact_id))
            .arg(contact_id);
        let reply = self.conn_eval(invocation).await?.unwrap_or_default();
        match reply.as_slice() {
            [outcome, owner, stored @ ..] if outcome == "stale" => {
                plan::Head::parse(owner, stored, Timestamp::now())
            }
            _ => Err(corrupt("head.lua answer", "not a contact")),
        }
    }

    /// Apply `change` to the contact with change.lua: `describe` of the contact and the
    /// conversation as stored after it (with its `messages` and, of the last
    /// `policy.history_depth` messages, those after position `held` but the change's
    /// own; `["ok"]` for a change of no conversation), or `None` when a guard failed and
    /// nothing was written. Without a policy nothing caps the timeline and no history is
    /// read.
    async fn change(
        &self,
        contact_id: &str,
        change: &change::Change,
        history: Option<(&IngestPolicy, u64)>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let (history_cap, depth, timeline_cap, held) = match history {
            Some((policy, held)) => (
                policy.history_cap.max(1).to_string(),
                policy.history_depth,
                policy.timeline_cap.max(1).to_string(),
                held,
            ),
            None => ("1".to_owned(), 0, String::new(), 0),
        };
        let mut call = ScriptCall::new(&self.change_script, [keys::contact(contact_id)]);
        call.arg(keys::contact_prefix(contact_id))
            .arg(&change.conversation_id)
            .arg(&change.history)
            .arg(history_cap)
            .arg(depth)
            .arg(&change.timeline)
            .arg(timeline_cap)
            .arg(&change.owed.0)
            .arg(&change.owed.1)
            .arg(self.retention_arg())
            .arg(Timestamp::now().as_microsecond())
            .arg(held);
        op_args(&mut call, &change.guards, &change.writes);
        let reply = self.conn_eval(call).await?.unwrap_or_default();
        match reply.as_slice() {
            [outcome] if outcome == "stale" => Ok(None),
            _ => Ok(Some(reply)),
        }
    }

    /// Contact `id` as a merge reads it (`None`: it does not exist).
    async fn stored_contact(&self, id: &str) -> Result<Option<change::Stored>, StoreError> {
        let values: Vec<Option<String>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys::contact(id))
                    .arg(&change::Stored::FIELDS)
                    .clone(),
            )
            .await?;
        change::Stored::parse(id, &values)
    }

    /// Write the index entries of a newly opened conversation: the conversation index and
    /// the open-conversation hint the sweeper reads (two slots, sent together). Later
    /// messages of an open conversation do not refresh the hint: the sweeper re-checks
    /// each candidate and moves a stale hint forward itself (see `close_idle_in`), once
    /// per `inactivity` per active contact instead of one write per message.
    async fn write_index(
        conn: &Conn,
        conversation_id: &str,
        contact_id: &str,
        at: Timestamp,
    ) -> redis::RedisResult<()> {
        let (mut index, mut hint) = (conn.clone(), conn.clone());
        let mut set = redis::cmd("SET");
        set.arg(keys::conversation_index(conversation_id))
            .arg(contact_id);
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(keys::open_shard(keys::shard_of(contact_id)))
            .arg("GT")
            .arg(at.as_millisecond())
            .arg(contact_id);
        futures::try_join!(
            set.query_async::<()>(&mut index),
            zadd.query_async::<()>(&mut hint),
        )
        .map(drop)
    }

    /// [`Self::write_index`] with this store's connection and error.
    async fn index_conversation(
        &self,
        conversation_id: &str,
        contact_id: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        Self::write_index(&self.conn, conversation_id, contact_id, at)
            .await
            .map_err(|error| self.unavailable(error))
    }

    /// [`Self::write_index`], retried in the background with a logged reason (up to
    /// [`INDEX_RETRIES`] times, backing off to 5 s): the event itself was recorded and
    /// must be published.
    fn index_conversation_later(&self, conversation_id: String, contact_id: String, at: Timestamp) {
        let conn = self.conn.clone();
        let target = self.display.clone();
        tokio::spawn(async move {
            let written = (|| Self::write_index(&conn, &conversation_id, &contact_id, at))
                .retry(
                    ExponentialBuilder::new()
                        .with_min_delay(Duration::from_millis(100))
                        .with_max_delay(Duration::from_secs(5))
                        .with_max_times(INDEX_RETRIES)
                        .with_jitter(),
                )
                .notify(|error, _| {
                    tracing::error!(conversation = %conversation_id, contact = %contact_id, redis = %target, %error, "cannot write the conversation index; retrying");
                })
                .await;
            match written {
                Ok(()) => {
                    tracing::info!(conversation = %conversation_id, "conversation index written after retry")
                }
                Err(error) => {
                    tracing::error!(conversation = %conversation_id, contact = %contact_id, %error, "conversation index not written: retries exhausted")
                }
            }
        });
    }

    /// The contact owning conversation `id`.
    async fn owner_of(&self, conversation_id: &str) -> Result<Option<String>, StoreError> {
        self.query(
            redis::cmd("GET")
                .arg(keys::conversation_index(conversation_id))
                .clone(),
        )
        .await
    }

    /// The one-request path: apply.lua looks the sender's channel-user handle up on its
    /// own slot and, when the contact lives there too (its home slot), records the event
    /// at once; a sender seen for the first time becomes a contact in that slot. Sent
    /// beside it: the owed-record hint, naming the sender (the contact is not known
    /// before the answer).
    async fn arrive(
        &self,
        ingest: &Ingest,
        policy: &IngestPolicy,
        event: &EventArgs,
    ) -> Result<Arrival, StoreError> {
        let user = &ingest.person.user;
        let handle_key = keys::handle(user);
        let slot = home::slot_of_key(&handle_key);
        let verified: Vec<String> = ingest
            .person
            .handles
            .iter()
            .filter(|handle| handle.verified)
            .map(keys::verified_field)
            .collect();
        // A new sender with verified handles may belong to their owner: the client
        // resolves it (`resolve`).
        let new_contact = if verified.is_empty() {
            home::contact_id_in(slot)
        } else {
            None
        };
        let target = Target::Arrive {
            handle_key,
            slot: match self.conn {
                Conn::Cluster(_) => slot.to_string(),
                Conn::Single(_) => String::new(),
            },
            new_contact: new_contact.unwrap_or_default(),
            verified: verified.join("\u{1f}"),
        };
        let member = keys::sender_member(user);
        let hint = self.hint_owed_if(ingest.owed.is_some(), &member, event.now_ms);
        let (applied, hinted) =
            futures::join!(self.apply(ingest, policy, event, &target, None, &[]), hint);
        let (outcome, ingested) = match applied? {
            Applied::Recorded(None) => return Ok(Arrival::Recorded(None)),
            Applied::Recorded(Some(recorded)) => recorded,
            Applied::Check => return Ok(Arrival::Check),
            Applied::Moved(owner) => return Ok(Arrival::Moved(owner)),
        };
        if let Err(error) = hinted {
            tracing::warn!(%error, contact = %ingested.contact.id, "owed-record hint not written beside the ingest: until the contact's next change only a provider retry finds this event's record if the gateway dies before publishing");
        }
        if outcome == "new" {
            self.after_new_sender(ingest, &ingested).await;
        } else if ingested.started {
            self.trip();
            self.index_started(&ingested).await;
        }
        Ok(Arrival::Recorded(Some(ingested)))
    }

    /// Record an inbound event on its contact as the context rules decide it
    /// ([`plan::plan`]), from this instance's copy of the contact (or, with none, as if
    /// the contact were new), with apply.lua. A copy other writers made stale is
    /// replaced by the contact as stored, which comes back in the same answer, and the
    /// event is decided again.
    async fn apply(
        &self,
        ingest: &Ingest,
        policy: &IngestPolicy,
        event: &EventArgs,
        target: &Target,
        merged: Option<&Merge>,
        confirmed: &[String],
    ) -> Result<Applied, StoreError> {
        let tail = owed_tail(merged, ingest.owed.as_deref())?;
        let text = plan::EventText {
            entry: &event.entry,
            handles: &event.handles_json,
            referral: &event.referral,
            proposed: &event.proposed,
            now_ms: event.now_ms,
            owed_tail: &tail,
            confirmed,
        };
        // The sender's contact as this instance last saw it (the one-request path only;
        // a named contact is its own answer).
        let (sender_key, known) = match target {
            Target::Arrive { handle_key, .. } => (
                std::borrow::Cow::Borrowed(handle_key.as_str()),
                self.senders.get(handle_key.as_str()),
            ),
            Target::Contact(_) => (
                std::borrow::Cow::Owned(keys::handle(&ingest.person.user)),
                None,
            ),
        };
        let contact = match (target, &known) {
            (_, Some(known)) => known.clone(),
            (Target::Arrive { new_contact, .. }, None) => new_contact.clone(),
            (Target::Contact(id), None) => id.clone(),
        };
        let mut head = self
            .heads
            .get(&contact)
            .unwrap_or_else(|| Arc::new(plan::Head::unknown(&contact, ingest.at)));
        let keep = policy.history_returned();
        for _ in 0..APPLY_TRIES {
            let plan = plan::plan(&head, ingest, policy, &text, merged)?;
            let held = Recent::known(head.recent.as_ref(), &plan.conversation_id, keep);
            let call = self.apply_call(&plan, target, event, policy, held);
            self.trip();
            let Some(reply) = self.conn_eval(call).await? else {
                return Ok(Applied::Recorded(None));
            };
            match reply.as_slice() {
                [outcome] if outcome == "check" => return Ok(Applied::Check),
                [outcome, owner] if outcome == "moved" => {
                    return Ok(Applied::Moved(owner.clone()));
                }
                [outcome, owner, stored @ ..] if outcome == "stale" => {
                    let mut stored = plan::Head::parse(owner, stored, ingest.at)?;
                    // What it holds of a conversation's messages stays true.
                    stored.recent = head.recent.clone();
                    head = Arc::new(stored);
                }
                [outcome, owner, count, rest @ ..] => {
                    let count: usize = count
                        .parse()
                        .map_err(|_| corrupt("apply.lua answer", count))?;
                    let (values, history) = rest
                        .split_at_checked(count)
                        .ok_or_else(|| corrupt("apply.lua answer", "too few values"))?;
                    let recent = self.recent_after(
                        head.recent.as_ref(),
                        &plan.conversation_id,
                        (held, keep),
                        history,
                        ingest.message.as_ref(),
                    )?;
                    let history = recent.as_ref().map(Recent::history).unwrap_or_default();
                    let (ingested, mut head) = plan.finish(owner, values, history)?;
                    head.recent = recent;
                    self.heads.insert(owner.clone(), Arc::new(head));
                    if known.as_ref() != Some(owner) {
                        self.senders.insert(sender_key.into_owned(), owner.clone());
                    }
                    let outcome = match outcome.as_str() {
                        "new" => "new",
                        "known" => "known",
                        _ => "ok",
                    };
                    return Ok(Applied::Recorded(Some((outcome, ingested))));
                }
                _ => {
                    return Err(StoreError::Unavailable(format!(
                        "unexpected apply.lua answer ({} fields)",
                        reply.len()
                    )));
                }
            }
        }
        self.heads.remove(&contact);
        Err(changed_meanwhile(&contact))
    }

    /// The apply.lua call for `plan`.
    fn apply_call(
        &self,
        plan: &plan::Plan,
        target: &Target,
        event: &EventArgs,
        policy: &IngestPolicy,
        held: u64,
    ) -> ScriptCall<'_> {
        let (key, contact, slot, new_contact, verified) = match target {
            Target::Arrive {
                handle_key,
                slot,
                new_contact,
                verified,
            } => (
                handle_key.clone(),
                "",
                slot.as_str(),
                new_contact.as_str(),
                verified.as_str(),
            ),
            Target::Contact(id) => (keys::contact(id), id.as_str(), "", "", ""),
        };
        let mut call = ScriptCall::new(&self.apply_script, [key]);
        call.arg(keys::ROOT)
            .arg(contact)
            .arg(&event.member)
            .arg(event.now_ms)
            .arg(millis(policy.dedupe_ttl))
            .arg(&plan.conversation_id)
            .arg(&plan.latest_id)
            .arg(&plan.close_entry)
            .arg(if plan.opened { "1" } else { "" })
            .arg(&plan.history)
            .arg(policy.history_cap.max(1))
            .arg(policy.history_depth)
            .arg(held)
            .arg(&plan.timeline)
            .arg(policy.timeline_cap.max(1))
            .arg(&plan.owed)
            .arg(self.retention_arg())
            .arg(slot)
            .arg(new_contact)
            .arg(verified);
        match plan::short_form(plan) {
            Some((form, values)) => {
                call.arg(form);
                for value in values {
                    call.arg(value);
                }
            }
            None => op_args(&mut call, &plan.guards, &plan.writes),
        }
        call
    }

    /// What a contact made by apply.lua for a new sender needs besides: its first
    /// conversation's index, its activity for `[store] contact_retention`, its
    /// probable-link entries. One round trip; a failure is logged (the conversation index
    /// is retried), never returned: the event is recorded.
    async fn after_new_sender(&self, ingest: &Ingest, ingested: &Ingested) {
        let contact_id = &ingested.contact.id;
        let conversation_id = &ingested.conversation.id;
        let now = Timestamp::now();
        let probable = probable_keys(ingest.person.name.as_deref(), &ingest.person.handles);
        self.trip();
        let (index, others) = futures::join!(
            self.index_conversation(conversation_id, contact_id, now),
            futures::future::try_join(
                self.mark_activity(contact_id, now.as_millisecond()),
                try_join_all(probable.iter().map(|(key, _)| {
                    self.query::<()>(
                        redis::cmd("SADD")
                            .arg(keys::probable(key))
                            .arg(contact_id)
                            .clone(),
                    )
                })),
            ),
        );
        if let Err(error) = index {
            tracing::error!(%error, conversation = %conversation_id, "conversation index not written; retrying in the background");
            self.index_conversation_later(conversation_id.clone(), contact_id.clone(), now);
        }
        if let Err(error) = others {
            tracing::warn!(%error, contact = %contact_id, "a new contact's activity or probable-link entry not written: retention finds it at its next message, a probable link is not repaired");
        }
    }

    /// Index a conversation the event opened (after the script: its id is known only
    /// then); retried in the background if that fails.
    async fn index_started(&self, ingested: &Ingested) {
        let now = Timestamp::now();
        let id = &ingested.conversation.id;
        let contact_id = &ingested.contact.id;
        if let Err(error) = self.index_conversation(id, contact_id, now).await {
            tracing::error!(%error, conversation = %id, "conversation index not written; retrying in the background");
            self.index_conversation_later(id.clone(), contact_id.clone(), now);
        }
    }

    /// The path for what apply.lua leaves to the client: look the sender and its
    /// verified handles up (`resolve`), merge on a verified handle another contact owns,
    /// then record.
    async fn resolve_and_record(
        &self,
        ingest: Ingest,
        policy: &IngestPolicy,
        event: EventArgs,
    ) -> Result<Option<Ingested>, StoreError> {
        let resolved = self.resolve(&ingest.person).await?;
        // Rare: the sender reports a verified phone/e-mail another contact owns. Merge it
        // into that owner first, so the event continues the owner's conversation.
        let merged = match &resolved.shared {
            Some((handle, owner)) => {
                self.merge_on_shared_handle(
                    &resolved.contact,
                    owner,
                    handle,
                    &ingest,
                    &event.member,
                )
                .await?
            }
            None => None,
        };
        if merged.is_some() {
            crate::fault::point("after_shared_merge");
        }
        self.record(&ingest, policy, &event, resolved, merged).await
    }

    /// Record the event on the contact `resolved` names (or the survivor of `merged`):
    /// the script, with the writes that need no answer from it in the same round trip.
    async fn record(
        &self,
        ingest: &Ingest,
        policy: &IngestPolicy,
        event: &EventArgs,
        resolved: Resolved,
        merged: Option<Merge>,
    ) -> Result<Option<Ingested>, StoreError> {
        let Resolved {
            contact: sender,
            fresh,
            unowned,
            new_sender,
            verified,
            ..
        } = resolved;
        let contact_id = merged
            .as_ref()
            .map_or(sender, |merge| merge.survivor.clone());
        // Verified handles found pointing at this contact: later events carrying them
        // take the one-request path.
        let confirmed = verified
            .iter()
            .filter(|(_, owner)| owner.as_deref() == Some(contact_id.as_str()))
            .map(|(handle, _)| keys::verified_field(handle))
            .collect::<Vec<_>>();
        let target = Target::Contact(contact_id.clone());
        // Last round trip: the script, plus the writes that need no answer from it.
        // A new sender joins the probable-link index (known senders are indexed already).
        let probable = if new_sender {
            probable_keys(ingest.person.name.as_deref(), &ingest.person.handles)
        } else {
            Vec::new()
        };
        // The script's answer decides: once it committed, the event must be published
        // (a provider retry would be a duplicate), so a failed side write is logged and
        // repaired, never turned into an error.
        let (applied, side) = futures::join!(
            self.apply(ingest, policy, event, &target, merged.as_ref(), &confirmed),
            async {
                futures::try_join!(
                    async {
                        try_join_all(probable.iter().map(|(key, _)| {
                            self.query::<()>(
                                redis::cmd("SADD")
                                    .arg(keys::probable(key))
                                    .arg(&contact_id)
                                    .clone(),
                            )
                        }))
                        .await
                        .map(drop)
                    },
                    async {
                        if fresh {
                            self.index_conversation(&event.proposed, &contact_id, Timestamp::now())
                                .await
                        } else {
                            Ok(())
                        }
                    },
                    async {
                        // A known sender's verified handles no contact owns yet: first wins.
                        try_join_all(unowned.iter().map(|handle| self.claim(handle, &contact_id)))
                            .await
                            .map(drop)
                    },
                    self.hint_change(&contact_id, event.now_ms, ingest.owed.is_some()),
                )
            }
        );
        let applied = applied?;
        let side_failed = side
            .map_err(|error| {
                tracing::warn!(%error, contact = %contact_id, "an index write beside the ingest failed: a new conversation's index is retried in the background, unclaimed verified handles on the contact's next event, a probable-link entry is not repaired, an owed-record hint on the contact's next change (until then only a provider retry finds this event's record if the gateway dies before publishing)");
            })
            .is_err();
        let ingested = match applied {
            Applied::Recorded(Some((_, ingested))) => ingested,
            Applied::Recorded(None) => return Ok(None),
            Applied::Check | Applied::Moved(_) => {
                return Err(StoreError::Unavailable(
                    "apply.lua asked to resolve a contact it was named".into(),
                ));
            }
        };
        let proposed = &event.proposed;
        if side_failed && fresh && ingested.conversation.id == *proposed {
            self.index_conversation_later(proposed.clone(), contact_id.clone(), Timestamp::now());
        }
        if ingested.started && !(fresh && ingested.conversation.id == *proposed) {
            self.trip();
            self.index_started(&ingested).await;
        }
        if fresh && ingested.conversation.id != *proposed {
            // A concurrent event of this new sender opened the conversation first.
            let _ = self
                .query::<()>(
                    redis::cmd("DEL")
                        .arg(keys::conversation_index(proposed))
                        .clone(),
                )
                .await;
        }
        Ok(Some(ingested))
    }

    async fn conn_eval(
        &self,
        invocation: ScriptCall<'_>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.conn.clone();
        invocation
            .invoke(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))
    }
}

#[async_trait]
impl ContextStore for RedisStore {
    async fn ingest(
        &self,
        ingest: Ingest,
        policy: &IngestPolicy,
    ) -> Result<Option<Ingested>, StoreError> {
        let event = EventArgs::new(&ingest)?;
        match self.arrive(&ingest, policy, &event).await? {
            Arrival::Recorded(ingested) => Ok(ingested),
            // Found, but its keys live in another slot: one more request, on that slot.
            Arrival::Moved(owner) if !reports_verified(&ingest.person) => {
                self.record(&ingest, policy, &event, Resolved::known(owner), None)
                    .await
            }
            Arrival::Moved(_) | Arrival::Check => {
                self.resolve_and_record(ingest, policy, event).await
            }
        }
    }

    async fn record_outbound(
        &self,
        outbound: Outbound,
        policy: &IngestPolicy,
    ) -> Result<Ingested, StoreError> {
        let conversation_id = &outbound.conversation_id;
        self.trip();
        let contact_id = self
            .owner_of(conversation_id)
            .await?
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        let entry = serde_json::to_string(&outbound.message).map_err(internal)?;
        let tail = owed_tail(None, Some(&outbound.owed))?;
        let owed_field = owed_outbound_key(&outbound.message.event_id);
        let conversation_key = keys::conversation(&contact_id, conversation_id);
        // The instance's copy, when the business answers the contact's latest conversation
        // (the usual case): the decision reads only its channel, which the script guards,
        // and the answer is the conversation as stored. Otherwise it is read first.
        let head = self.heads.get(&contact_id);
        let mut copy = head.as_ref().and_then(|head| {
            head.latest()
                .filter(|(latest, _)| latest.id == *conversation_id)
                .map(|(latest, _)| latest.clone())
        });
        let keep = policy.history_returned();
        let before = head.as_ref().and_then(|head| head.recent.as_ref());
        let held = Recent::known(before, conversation_id, keep);
        for _ in 0..APPLY_TRIES {
            let conversation = match copy.take() {
                Some(conversation) => conversation,
                None => {
                    self.trip();
                    let stored: Vec<String> = self
                        .query(redis::cmd("HGETALL").arg(&conversation_key).clone())
                        .await?;
                    plan::stored_conversation(conversation_id, &stored)?
                        .ok_or_else(|| not_found("conversation", conversation_id))?
                }
            };
            let now = Timestamp::now();
            let change = change::outbound(
                conversation,
                &outbound.message,
                &entry,
                now,
                (owed_field.clone(), &tail),
            )?;
            self.trip();
            let (changed, marked, hinted) = futures::join!(
                self.change(&contact_id, &change, Some((policy, held))),
                self.mark_active(&contact_id, now),
                self.hint_change(&contact_id, now.as_millisecond(), true),
            );
            if let Err(error) = marked {
                tracing::warn!(%error, contact = %contact_id, "open-conversation hint not moved; the sweeper re-checks the conversation before it closes it");
            }
            if let Err(error) = hinted {
                tracing::warn!(%error, contact = %contact_id, "owed-record hint not written; the contact's next change writes it");
            }
            let Some(reply) = changed? else { continue };
            let (mut ingested, rest) = parse_reply(&contact_id, &reply)?;
            let Some(recent) = self.recent_after(
                before,
                conversation_id,
                (held, keep),
                rest,
                Some(&outbound.message),
            )?
            else {
                return Ok(ingested);
            };
            ingested.history = recent.history();
            // The copy of the contact keeps deciding (a business message changes nothing
            // it reads); it now holds this message too.
            if let Some(head) = &head
                && head
                    .latest()
                    .is_some_and(|(latest, _)| latest.id == *conversation_id)
            {
                let mut head = plan::Head::clone(head);
                head.recent = Some(recent);
                self.heads.insert(contact_id.clone(), Arc::new(head));
            }
            return Ok(ingested);
        }
        Err(changed_meanwhile(&contact_id))
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        Ok(self.stored_contact(id).await?.map(|stored| stored.contact))
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let Some(contact_id) = self.owner_of(id).await? else {
            return Ok(None);
        };
        let fields: Vec<Option<String>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys::conversation(&contact_id, id))
                    .arg(&CONVERSATION_HASH_FIELDS)
                    .clone(),
            )
            .await?;
        if fields.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        let mut values = vec![id.to_owned()];
        values.extend(fields.into_iter().map(Option::unwrap_or_default));
        parse_conversation(&values).map(Some)
    }

    async fn history(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let contact_id = self
            .owner_of(conversation_id)
            .await?
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let entries: Vec<String> = self
            .query(
                redis::cmd("LRANGE")
                    .arg(keys::history(&contact_id, conversation_id))
                    .arg(-(limit.min(i64::MAX as usize) as i64))
                    .arg(-1)
                    .clone(),
            )
            .await?;
        entries
            .iter()
            .map(|entry| parse_json(stored_history(entry)))
            .collect()
    }

    async fn contact_details(&self, id: &str) -> Result<Option<ContactDetails>, StoreError> {
        let Some(contact) = self.contact(id).await? else {
            return Ok(None);
        };
        let (merged_into, merges, mut conversations, latest_conversation) = futures::try_join!(
            self.merged_into(id),
            self.merges_of(id),
            self.conversation_ids(id),
            self.query::<Option<String>>(
                redis::cmd("HGET")
                    .arg(keys::contact(id))
                    .arg("latest")
                    .clone()
            ),
        )?;
        let merges: Vec<Merge> = merges.into_iter().map(|(_, merge)| merge).collect();
        let probable_links = self
            .probable_links(&contact, &merges, merged_into.as_deref())
            .await?;
        let absorbed = try_join_all(
            merges
                .iter()
                .filter(|merge| merge.undone_at.is_none())
                .map(|merge| self.conversation_ids(&merge.absorbed)),
        )
        .await?;
        conversations.extend(absorbed.into_iter().flatten());
        Ok(Some(ContactDetails {
            contact,
            merged_into,
            merges,
            conversations,
            latest_conversation,
            probable_links,
        }))
    }

    async fn put_link_token(
        &self,
        token: &str,
        contact_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let seconds = ttl.as_secs().max(1);
        futures::try_join!(
            self.query::<()>(
                redis::cmd("SET")
                    .arg(keys::link_token(token))
                    .arg(contact_id)
                    .arg("EX")
                    .arg(seconds)
                    .clone()
            ),
            self.query::<()>(
                redis::cmd("SADD")
                    .arg(keys::tokens_of(contact_id))
                    .arg(token)
                    .clone()
            ),
        )?;
        Ok(())
    }

    async fn link_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("GET").arg(keys::link_token(token)).clone())
            .await
    }

    async fn drop_link_token(&self, token: &str) -> Result<(), StoreError> {
        self.query(redis::cmd("DEL").arg(keys::link_token(token)).clone())
            .await
    }

    async fn revoke_session(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        // Whole seconds, rounded up: the record must not go before the session does.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        self.query(
            redis::cmd("SET")
                .arg(keys::revoked_session(id))
                .arg(1)
                .arg("EX")
                .arg(seconds.max(1))
                .clone(),
        )
        .await
    }

    async fn session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let found: i64 = self
            .query(redis::cmd("EXISTS").arg(keys::revoked_session(id)).clone())
            .await?;
        Ok(found > 0)
    }

    async fn link_sender(
        &self,
        person: &Person,
        survivor: &str,
        evidence: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Option<Merge>, StoreError> {
        let Resolved {
            contact: sender,
            unowned,
            ..
        } = self.resolve(person).await?;
        if sender == survivor {
            return Ok(None);
        }
        // The sender's contact must exist to be merged (and restored by an unmerge).
        let mut written = false;
        for _ in 0..APPLY_TRIES {
            let stored = self.stored_contact(&sender).await?;
            let Some(change) =
                change::sender(&sender, stored.as_ref(), person, at.as_microsecond())?
            else {
                written = true;
                break;
            };
            if self.change(&sender, &change, None).await?.is_some() {
                written = true;
                break;
            }
        }
        if !written {
            return Err(changed_meanwhile(&sender));
        }
        try_join_all(unowned.iter().map(|handle| self.claim(handle, &sender))).await?;
        self.merge_owing(survivor, &sender, evidence, at, Some(owed))
            .await
            .map(Some)
    }

    async fn merge(
        &self,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        self.merge_owing(survivor, absorbed, evidence, at, None)
            .await
    }

    async fn unmerge(
        &self,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
        owed: &str,
    ) -> Result<Merge, StoreError> {
        let missing = || not_found("merge", &format!("{absorbed} into {survivor}"));
        let mut done = None;
        for _ in 0..APPLY_TRIES {
            let (stored, merges) =
                futures::try_join!(self.stored_contact(survivor), self.merges_of(survivor))?;
            let (position, merge) = merges
                .iter()
                .map(|(_, merge)| merge)
                .enumerate()
                .find(|(_, merge)| rules::is_live_merge_of(merge, absorbed))
                .ok_or_else(missing)?;
            let stored = stored.ok_or_else(missing)?;
            let mut undone = merge.clone();
            undone.undone_at = Some(at);
            let committed = Timestamp::now();
            let tail = owed_tail(Some(&undone), Some(owed))?;
            let owing = (
                owed_unmerged_key(&merge.id),
                tail.as_str(),
                committed.as_microsecond(),
            );
            let change = change::unmerge(&stored, position, &undone, owing)?;
            // Beside it: the hint that makes the owed record findable by the relay, which
            // also keeps the survivor's other records findable once the handles point
            // away (see `merge`).
            let (changed, _) = futures::try_join!(
                self.change(survivor, &change, None),
                self.hint_owed(survivor, committed.as_millisecond()),
            )?;
            if changed.is_some() {
                done = Some(undone);
                break;
            }
        }
        let undone = done.ok_or_else(|| changed_meanwhile(survivor))?;
        try_join_all(
            undone
                .handles
                .iter()
                .map(|handle| self.repoint(keys::handle(handle), survivor, absorbed)),
        )
        .await?;
        self.query::<()>(
            redis::cmd("HDEL")
                .arg(keys::contact(absorbed))
                .arg("merged_into")
                .clone(),
        )
        .await?;
        self.copy_seen(survivor, absorbed).await?;
        Ok(undone)
    }

    async fn erase(
        &self,
        id: &str,
        at: Timestamp,
        owes: &(dyn for<'e> Fn(&'e Erased) -> String + Send + Sync),
    ) -> Result<Option<Erased>, StoreError> {
        let Some(details) = self.contact_details(id).await? else {
            return Ok(None);
        };
        let latest = match details.latest_conversation.clone() {
            Some(cv) => self.conversation(&cv).await?,
            None => None,
        };
        let absorbed = details.live_absorbed();
        let erased = Erased {
            contact_id: id.to_owned(),
            absorbed,
            conversations: details.conversations,
            latest,
        };
        // The debt first: from here a crash leaves the rest to the relay.
        self.owe_erasure(id, at, &owes(&erased)).await?;
        for contact in &erased.absorbed {
            self.erase_one(contact, None).await?;
        }
        crate::fault::point("mid_erase");
        self.erase_one(id, Some(&owed_erased_key(id))).await?;
        // The copies of the erased contacts go with them: this instance's now, the
        // others' when they hear it. (A copy an instance missed the news of is dropped at
        // its next event, as the guards fail on the keys now gone; until then it ages out
        // of that instance's cache.)
        let ids: Vec<&str> = std::iter::once(id)
            .chain(erased.absorbed.iter().map(String::as_str))
            .collect();
        let handles: Vec<String> = details.contact.handles.iter().map(keys::handle).collect();
        forget(&self.heads, &self.senders, &ids, &handles);
        let news = format!("{}\u{1e}{}", ids.join("\u{1f}"), handles.join("\u{1f}"));
        if let Err(error) = self
            .query::<()>(redis::cmd("PUBLISH").arg(keys::ERASED).arg(news).clone())
            .await
        {
            tracing::warn!(%error, contact = %id, "erasure not announced: other instances drop their copies of the contact at its next event, or as they age out");
        }
        Ok(Some(erased))
    }

    async fn close_idle(
        &self,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
        payload: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<Closed>, StoreError> {
        let mut closed = Vec::new();
        for shard in 0..keys::OPEN_SHARDS {
            if closed.len() >= limit {
                break;
            }
            let more = self
                .close_idle_in(shard, now, inactivity, limit - closed.len(), payload)
                .await?;
            closed.extend(more);
        }
        Ok(closed)
    }

    async fn owed_inbound(
        &self,
        user: &Handle,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<Owed>, StoreError> {
        // Only on a duplicate (a provider retry): two trips off the common path.
        self.trip();
        let Some(contact_id) = self
            .query::<Option<String>>(redis::cmd("GET").arg(keys::handle(user)).clone())
            .await?
        else {
            return Ok(None);
        };
        let key = owed_inbound_key(channel, external_id);
        self.trip();
        let record: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(keys::owed(&contact_id))
                    .arg(&key)
                    .clone(),
            )
            .await?;
        record
            .map(|record| parse_owed(&contact_id, key, &record))
            .transpose()
    }

    async fn stale_owed(&self, before: Timestamp, limit: usize) -> Result<Vec<Owed>, StoreError> {
        let cutoff_ms = before.as_millisecond();
        let mut stale = Vec::new();
        // A contact can be hinted by its id and by its senders: read it once.
        let mut visited = std::collections::HashSet::new();
        for shard in 0..keys::OPEN_SHARDS {
            if stale.len() >= limit {
                break;
            }
            let members = self
                .members_until(&keys::owed_shard(shard), cutoff_ms, limit - stale.len())
                .await?;
            for member in members {
                let contact_id = self.contact_of_member(&member).await?;
                if let Some(contact_id) = &contact_id
                    && !visited.insert(contact_id.clone())
                {
                    continue;
                }
                let owed = self
                    .owed_of(shard, &member, contact_id.as_deref(), cutoff_ms)
                    .await?;
                stale.extend(owed.into_iter().filter(|owed| owed.at < before));
            }
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
        for shard in 0..keys::OPEN_SHARDS {
            if idle.len() >= limit {
                break;
            }
            let contacts = self
                .members_until(
                    &keys::activity_shard(shard),
                    before.as_millisecond(),
                    limit - idle.len(),
                )
                .await?;
            for contact_id in contacts {
                let (merged_into, latest): (Option<String>, Option<String>) = self
                    .query(
                        redis::cmd("HMGET")
                            .arg(keys::contact(&contact_id))
                            .arg("merged_into")
                            .arg("latest")
                            .clone(),
                    )
                    .await?;
                if merged_into.is_some() {
                    // Erased with its survivor; its own activity no longer counts.
                    self.query::<()>(
                        redis::cmd("ZREM")
                            .arg(keys::activity_shard(shard))
                            .arg(&contact_id)
                            .clone(),
                    )
                    .await?;
                    continue;
                }
                // Messages do not move the hint (that would cost a write each): the
                // latest conversation knows the contact's last message either way.
                if let Some(active_ms) = self.last_message_ms(&contact_id, latest).await?
                    && active_ms > before.as_millisecond()
                {
                    self.mark_activity(&contact_id, active_ms).await?;
                    continue;
                }
                idle.push(contact_id);
            }
        }
        Ok(idle)
    }

    async fn settle(&self, owed: &[(String, String)]) -> Result<(), StoreError> {
        // One HDEL per contact (its slot), sent together: one trip.
        self.trip();
        let mut by_contact: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (contact_id, key) in owed {
            by_contact.entry(contact_id).or_default().push(key);
        }
        try_join_all(by_contact.into_iter().map(|(contact_id, keys)| {
            self.query::<()>(
                redis::cmd("HDEL")
                    .arg(keys::owed(contact_id))
                    .arg(keys)
                    .clone(),
            )
        }))
        .await
        .map(drop)
    }

    async fn timeline(
        &self,
        conversation_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        let contact_id = self
            .owner_of(conversation_id)
            .await?
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        let key = keys::timeline(&contact_id, conversation_id);
        // Retention drops entries from the front; cursors count from the first entry ever.
        let trimmed: Option<u64> = self
            .query(
                redis::cmd("HGET")
                    .arg(keys::conversation(&contact_id, conversation_id))
                    .arg("tl_trimmed")
                    .clone(),
            )
            .await?;
        let trimmed = trimmed.unwrap_or(0);
        let from = from.max(trimmed);
        let start = i64::try_from(from - trimmed).unwrap_or(i64::MAX);
        let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)) - 1;
        let (raw, length): (Vec<String>, u64) = futures::try_join!(
            self.query(redis::cmd("LRANGE").arg(&key).arg(start).arg(stop).clone()),
            self.query(redis::cmd("LLEN").arg(&key).clone()),
        )?;
        let total = trimmed + length;
        let entries = raw
            .iter()
            .map(|json| parse_json::<StoredEntry>(json).and_then(StoredEntry::entry))
            .collect::<Result<Vec<_>, _>>()?;
        let end = from + entries.len() as u64;
        Ok(TimelinePage {
            next: (end < total).then_some(end),
            entries,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let answer: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))?;
        if answer == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "redis {}: PING answered `{answer}`",
                self.display
            )))
        }
    }

    fn round_trips(&self) -> Option<u64> {
        Some(RedisStore::round_trips(self))
    }

    fn outcomes(&self) -> &dyn super::OutcomeStore {
        self
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

/// Who sent an event, as the handle index says (first round trip of an ingest).
struct Resolved {
    /// The contact the event goes to.
    contact: String,
    /// Nothing of the contact exists yet (its first event opens its first conversation).
    fresh: bool,
    /// A known sender's verified handles nobody owns yet (claimed beside the script).
    unowned: Vec<Handle>,
    /// The channel user was not indexed before this event.
    new_sender: bool,
    /// A verified phone/e-mail of the sender that another contact owns, with that owner.
    shared: Option<(Handle, String)>,
    /// The sender's verified handles with their owners as looked up.
    verified: Vec<(Handle, Option<String>)>,
}

impl Resolved {
    /// A known sender whose contact is `contact` (apply.lua found it in another slot).
    fn known(contact: String) -> Self {
        Self {
            contact,
            fresh: false,
            unowned: Vec::new(),
            new_sender: false,
            shared: None,
            verified: Vec::new(),
        }
    }
}

/// What a sweep did to one contact.
enum Swept {
    /// Nothing open.
    Gone,
    /// Still active: its latest activity.
    Active(Timestamp),
    /// Closed its latest conversation.
    Closed(Box<Closed>),
}

/// What the one-request path did. Returned once per ingest and matched at once: boxing
/// the recorded event would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Arrival {
    /// Recorded (`None`: a duplicate).
    Recorded(Option<Ingested>),
    /// The sender's contact lives in another slot.
    Moved(String),
    /// The client must look the sender up itself (nothing was written).
    Check,
}

/// Where apply.lua finds the contact.
enum Target {
    /// Through the sender's channel-user handle key (the one-request path).
    Arrive {
        /// The handle key (`KEYS[1]`).
        handle_key: String,
        /// Its slot in a Redis Cluster, `""` on one server.
        slot: String,
        /// The id a new sender gets (in that slot), `""` when the client must resolve a
        /// new sender itself.
        new_contact: String,
        /// Contact hash fields of the verified handles the sender reports, `\x1f`-joined.
        verified: String,
    },
    /// The contact with this id.
    Contact(String),
}

/// What apply.lua did. Matched at once, like [`Arrival`].
#[allow(clippy::large_enum_variant)]
enum Applied {
    /// Recorded (`None`: a duplicate), with how the sender was found (`known`, `new` or
    /// `ok`: the contact was named).
    Recorded(Option<(&'static str, Ingested)>),
    /// The sender's contact lives in another slot.
    Moved(String),
    /// The client must look the sender up itself (nothing was written).
    Check,
}

/// The parts of an inbound event every path of an ingest sends to the script, made once.
struct EventArgs {
    /// Dedupe member (and owed key) `<channel>\x1f<external id>`.
    member: String,
    /// The sender's handles (JSON).
    handles_json: String,
    /// The history entry (JSON), `""` when the event is no message.
    entry: String,
    /// The referral (JSON) or `""`.
    referral: String,
    /// The id a conversation this event opens gets.
    proposed: String,
    /// Now (ms), the dedupe clock.
    now_ms: i64,
}

impl EventArgs {
    fn new(ingest: &Ingest) -> Result<Self, StoreError> {
        let handles: Vec<&Handle> = std::iter::once(&ingest.person.user)
            .chain(&ingest.person.handles)
            .collect();
        let json = |value: Option<String>| value.unwrap_or_default();
        Ok(Self {
            member: keys::dedupe_member(&ingest.channel, &ingest.external_id),
            handles_json: serde_json::to_string(&handles).map_err(internal)?,
            entry: json(
                ingest
                    .message
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(internal)?,
            ),
            referral: json(
                ingest
                    .referral
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(internal)?,
            ),
            proposed: crate::ids::conversation(),
            now_ms: Timestamp::now().as_millisecond(),
        })
    }
}

/// Whether the sender reports a verified handle (its owner must be looked up).
/// Drop the copies of contacts `ids` and the senders of handle keys `handles`.
fn forget(heads: &Heads, senders: &Senders, ids: &[&str], handles: &[String]) {
    for id in ids {
        heads.remove(*id);
    }
    for handle in handles {
        senders.remove(handle.as_str());
    }
}

/// Follow the erasures other instances announce ([`keys::ERASED`]) and drop the copies
/// of the erased contacts, until the store is dropped. Without a Tokio runtime (a store
/// opened outside one) nothing follows them: copies then go at their contact's next
/// event or as they age out.
fn forget_erased(
    seeds: Vec<String>,
    tls: &RedisTls,
    heads: &Arc<Heads>,
    senders: &Arc<Senders>,
) -> Option<Following> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (to, mut heard) = tokio::sync::mpsc::channel(64);
    let follow = runtime.spawn(feed::follow(
        seeds,
        tls.clone(),
        keys::ERASED,
        "erasure announcements lost; resubscribing (copies of contacts erased meanwhile go at their next event)",
        to,
        |heard| heard,
    ));
    let (heads, senders) = (heads.clone(), senders.clone());
    let apply = runtime.spawn(async move {
        while let Some(news) = heard.recv().await {
            if let feed::Heard::Message(news) = news {
                let (ids, handles) = news.split_once('\u{1e}').unwrap_or((&news, ""));
                let ids: Vec<&str> = ids.split('\u{1f}').filter(|id| !id.is_empty()).collect();
                let handles: Vec<String> = handles
                    .split('\u{1f}')
                    .filter(|key| !key.is_empty())
                    .map(str::to_owned)
                    .collect();
                forget(&heads, &senders, &ids, &handles);
            }
        }
    });
    Some(Following(vec![follow.abort_handle(), apply.abort_handle()]))
}

fn reports_verified(person: &Person) -> bool {
    person.handles.iter().any(|handle| handle.verified)
}

/// The first verified phone/e-mail among `indexed` (the channel user first, then the
/// verified handles) whose owner in `owners` is not `contact`.
fn shared_handle(
    indexed: &[&Handle],
    owners: &[Option<String>],
    contact: &str,
) -> Option<(Handle, String)> {
    indexed
        .iter()
        .zip(owners)
        .skip(1)
        .filter(|(handle, _)| merges_on(handle))
        .find_map(|(handle, owner)| {
            let owner = owner.as_deref().filter(|owner| *owner != contact)?;
            Some(((*handle).clone(), owner.to_owned()))
        })
}

/// The verified handles among `indexed` (after the channel user) with their `owners`.
fn verified_owners(
    indexed: &[&Handle],
    owners: &[Option<String>],
) -> Vec<(Handle, Option<String>)> {
    indexed
        .iter()
        .zip(owners)
        .skip(1)
        .map(|(handle, owner)| ((*handle).clone(), owner.clone()))
        .collect()
}

/// The conversation hash fields, in reply order (after the conversation id).
const CONVERSATION_HASH_FIELDS: [&str; 13] = [
    "contact",
    "status",
    "started_at",
    "last_at",
    "channels",
    "current",
    "previous",
    "messages",
    "reply_until",
    "first_touch",
    "last_touch",
    "first_in",
    "awaiting",
];

/// The caller's part of an owed record: `<merge JSON or empty>\x1f<payload>`; empty when
/// the change owes nothing (the script then writes no record).
fn owed_tail(merged: Option<&Merge>, payload: Option<&str>) -> Result<String, StoreError> {
    let Some(payload) = payload else {
        return Ok(String::new());
    };
    let merged = merged
        .map(serde_json::to_string)
        .transpose()
        .map_err(internal)?
        .unwrap_or_default();
    Ok(format!("{merged}\u{1f}{payload}"))
}

/// The guards and writes a script takes as a list (`read_ops` in common.lua): their
/// count, then 4 arguments each.
fn op_args(call: &mut ScriptCall<'_>, guards: &[plan::Op<'_>], writes: &[plan::Op<'_>]) {
    call.arg(guards.len());
    for op in guards.iter().chain(writes) {
        call.arg(op.target).arg(op.op).arg(&op.field).arg(&op.value);
    }
}

/// The error when other writers changed a contact every time a change was decided.
fn changed_meanwhile(contact_id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "contact `{contact_id}` changed by other writers {APPLY_TRIES} times while a change was decided"
    ))
}

/// An owed record as `owe` (common.lua) writes it: commit time (µs), conversation,
/// whether the change opened it, the channel it switched from, then the caller's `tail`.
fn owed_record(
    at_us: i64,
    conversation_id: &str,
    started: bool,
    switched_from: Option<&str>,
    tail: &str,
) -> String {
    let started = if started { "1" } else { "0" };
    let switched = switched_from.unwrap_or_default();
    format!("{at_us}\u{1f}{conversation_id}\u{1f}{started}\u{1f}{switched}\u{1f}{tail}")
}

/// An owed record as [`owed_record`] makes it.
fn parse_owed(contact_id: &str, key: String, record: &str) -> Result<Owed, StoreError> {
    let mut fields = record.splitn(6, '\u{1f}');
    let mut next = || fields.next().ok_or_else(|| corrupt("owed record", record));
    let at = parse_time(next()?)?;
    let conversation_id = next()?.to_owned();
    let started = next()? == "1";
    let switched_from = Some(next()?.to_owned()).filter(|channel| !channel.is_empty());
    let merged = Some(next()?)
        .filter(|json| !json.is_empty())
        .map(parse_json)
        .transpose()?;
    let payload = next()?.to_owned();
    Ok(Owed {
        contact_id: contact_id.to_owned(),
        key,
        at,
        conversation_id,
        started,
        switched_from,
        merged,
        payload,
    })
}

/// A script reply (see `describe` in common.lua) → what ingest did.
/// A `describe` reply (common.lua): what it says, with no history, and what follows the
/// conversation (its `messages` and history entries, when history was asked for).
fn parse_reply<'r>(
    contact_id: &str,
    reply: &'r [String],
) -> Result<(Ingested, &'r [String]), StoreError> {
    let head = CONTACT_FIELDS + CONVERSATION_FIELDS + 2;
    if reply.len() < head {
        return Err(StoreError::Unavailable(format!(
            "unexpected script reply ({} fields)",
            reply.len()
        )));
    }
    let contact = parse_contact(contact_id, &reply[0], &reply[1], &reply[2])?;
    let conversation =
        parse_conversation(&reply[CONTACT_FIELDS..CONTACT_FIELDS + CONVERSATION_FIELDS])?;
    // Flags (common.lua `reply`): `1` opened the conversation, `f` first customer message.
    let started = reply[head - 2].starts_with('1');
    let first_inbound = reply[head - 2].ends_with('f');
    let switched_from = Some(reply[head - 1].clone()).filter(|channel| !channel.is_empty());
    let ingested = Ingested {
        contact,
        conversation,
        started,
        first_inbound,
        switched_from,
        history: Vec::new(),
        merged: None,
    };
    Ok((ingested, &reply[head..]))
}

/// History entries as stored (`"<time µs> <JSON>"`).
fn parse_history(entries: &[String]) -> Result<Vec<HistoryEntry>, StoreError> {
    entries
        .iter()
        .map(|entry| parse_json(stored_history(entry)))
        .collect()
}

fn parse_contact(
    id: &str,
    name: &str,
    created_at: &str,
    handles: &str,
) -> Result<Contact, StoreError> {
    Ok(Contact {
        id: id.to_owned(),
        name: Some(name.to_owned()).filter(|name| !name.is_empty()),
        handles: parse_list(handles)?,
        created_at: parse_time(created_at)?,
    })
}

/// `[id, contact, status, started_at, last_at, channels, current, previous, messages,
/// reply_until, first_touch, last_touch, first_in, awaiting]` → the conversation.
fn parse_conversation(values: &[String]) -> Result<Conversation, StoreError> {
    let [
        id,
        contact,
        status,
        started_at,
        last_at,
        channels,
        current,
        previous,
        messages,
        reply_until,
        first_touch,
        last_touch,
        first_in,
        awaiting,
    ] = values
    else {
        return Err(corrupt("conversation", "wrong number of fields"));
    };
    Ok(Conversation {
        id: id.clone(),
        contact_id: contact.clone(),
        status: match status.as_str() {
            "closed" => ConversationStatus::Closed,
            _ => ConversationStatus::Open,
        },
        started_at: parse_time(started_at)?,
        last_activity_at: parse_time(last_at)?,
        channels_used: parse_list(channels)?,
        current_channel: current.clone(),
        previous_channel: Some(previous.clone()).filter(|channel| !channel.is_empty()),
        messages: messages
            .parse()
            .map_err(|_| corrupt("conversation", "messages is not a number"))?,
        reply_window_until: optional(reply_until, parse_time)?,
        attribution: Attribution {
            first_touch: optional(first_touch, parse_json::<Referral>)?.map(Arc::new),
            last_touch: optional(last_touch, parse_json::<Referral>)?.map(Arc::new),
        },
        first_inbound_at: optional(first_in, parse_time)?,
        awaiting_since: optional(awaiting, parse_time)?,
    })
}

fn optional<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

/// A JSON array written by Lua's cjson, which encodes an empty array as `{}`.
fn parse_list<T: serde::de::DeserializeOwned>(json: &str) -> Result<Vec<T>, StoreError> {
    if json == "{}" || json.is_empty() {
        return Ok(Vec::new());
    }
    parse_json(json)
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|error| corrupt("record", &error.to_string()))
}

fn parse_time(micros: &str) -> Result<Timestamp, StoreError> {
    micros
        .parse::<i64>()
        .ok()
        .and_then(|value| Timestamp::from_microsecond(value).ok())
        .ok_or_else(|| corrupt("timestamp", micros))
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX / 4)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

fn corrupt(what: &str, detail: &str) -> StoreError {
    StoreError::Unavailable(format!("unreadable {what} in redis: {detail}"))
}

fn internal(error: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot encode a record: {error}"))
}

fn not_found(kind: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

/// A timeline entry as the scripts write it (time in µs).
#[derive(serde::Deserialize)]
struct StoredEntry {
    #[serde(rename = "type")]
    kind: String,
    at_us: i64,
    channel: String,
    #[serde(default)]
    previous_channel: Option<String>,
    #[serde(default)]
    message: Option<HistoryEntry>,
    #[serde(default)]
    referral: Option<Arc<Referral>>,
}

impl StoredEntry {
    fn entry(self) -> Result<TimelineEntry, StoreError> {
        Ok(TimelineEntry {
            kind: self.kind,
            at: Timestamp::from_microsecond(self.at_us)
                .map_err(|error| corrupt("timeline", &error.to_string()))?,
            channel: self.channel,
            previous_channel: self.previous_channel,
            message: self.message,
            referral: self.referral,
        })
    }
}

/// A stored history entry (`"<time µs> <JSON>"`) without its time prefix.
fn stored_history(stored: &str) -> &str {
    match stored.split_once(' ') {
        Some((time, json)) if time.bytes().all(|byte| byte.is_ascii_digit()) => json,
        _ => stored,
    }
}
