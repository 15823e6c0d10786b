//! The embedded memory backend: one process, nothing survives a restart.
//!
//! It is the reference [`Backend`]: records in 16 maps split by key hash (each with its
//! keys in order, for scans), each behind its own lock, so changes of different contacts rarely wait on each other. A
//! commit locks the maps of the keys it checks and writes, in order (so no two commits
//! can wait on each other), checks the versions and applies the writes. Expired records
//! read as absent and are dropped by the next commit that locks their map.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::HashMap;
use jiff::Timestamp;
use parking_lot::{Mutex, MutexGuard};

use super::StoreError;
use super::engine::{Backend, Doc, Engine, Versioned, Write};

/// The store on the memory backend.
pub type MemoryStore = Engine<MemoryBackend>;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_retention(None)
    }

    /// An empty store dropping messages (history and timeline entries) older than
    /// `retention`.
    pub fn with_retention(retention: Option<Duration>) -> Self {
        Engine::on(MemoryBackend::default(), retention)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

const SHARDS: usize = 16;

/// Records in memory.
pub struct MemoryBackend {
    shards: Vec<Mutex<Shard>>,
    /// The version of the latest commit: every commit takes the next one.
    clock: AtomicU64,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            clock: AtomicU64::new(0),
        }
    }
}

/// One map: records by key, their keys in order (for scans), and their expiries.
#[derive(Default)]
struct Shard {
    records: HashMap<String, Stored>,
    /// The keys of each kind (a key up to its first `/`) that was ever scanned, in
    /// order. A kind is indexed on its first scan and kept from then on; kinds only
    /// read by key (dedupe keys, messages) never pay for order, and a record rewritten
    /// in place (a conversation) costs one hash lookup.
    ordered: HashMap<String, BTreeSet<String>>,
    /// (expiry, key) of the records that expire, soonest first.
    expiring: BinaryHeap<Reverse<(Timestamp, String)>>,
}

struct Stored {
    version: u64,
    doc: Arc<Doc>,
    expires: Option<Timestamp>,
}

impl Stored {
    fn live(&self, now: Timestamp) -> bool {
        self.expires.is_none_or(|expires| expires > now)
    }

    fn versioned(&self) -> Versioned {
        Versioned {
            version: self.version,
            doc: self.doc.clone(),
        }
    }
}

impl Shard {
    fn live(&self, key: &str, now: Timestamp) -> Option<&Stored> {
        self.records.get(key).filter(|stored| stored.live(now))
    }

    fn apply(&mut self, write: Write, version: u64) {
        match write.doc {
            Some(doc) => {
                if let Some(expires) = write.expires {
                    self.expiring.push(Reverse((expires, write.key.clone())));
                }
                let stored = Stored {
                    version,
                    doc,
                    expires: write.expires,
                };
                match self.records.get_mut(&write.key) {
                    Some(old) => *old = stored,
                    None => {
                        if let Some(ordered) = self.ordered.get_mut(kind(&write.key)) {
                            ordered.insert(write.key.clone());
                        }
                        self.records.insert(write.key, stored);
                    }
                }
            }
            None => self.remove(&write.key),
        }
    }

    fn remove(&mut self, key: &str) {
        if self.records.remove(key).is_some()
            && let Some(ordered) = self.ordered.get_mut(kind(key))
        {
            ordered.remove(key);
        }
    }

    /// Drop the records expired by `now`.
    fn purge(&mut self, now: Timestamp) {
        while self
            .expiring
            .peek()
            .is_some_and(|Reverse((expires, _))| *expires <= now)
        {
            let Some(Reverse((expires, key))) = self.expiring.pop() else {
                break;
            };
            if self
                .records
                .get(&key)
                .is_some_and(|stored| stored.expires == Some(expires))
            {
                self.remove(&key);
            }
        }
    }
}

impl Shard {
    /// Index the keys of `prefix`'s kind in order, unless they are; `false` for a prefix
    /// without a kind.
    fn index(&mut self, prefix: &str) -> bool {
        let Some(at) = prefix.find('/') else {
            return false;
        };
        let kind = &prefix[..=at];
        if !self.ordered.contains_key(kind) {
            let keys = self
                .records
                .keys()
                .filter(|key| key.starts_with(kind))
                .cloned()
                .collect();
            self.ordered.insert(kind.to_owned(), keys);
        }
        true
    }

    /// Up to `limit` live records of `prefix` from `start`, in key order.
    fn scan(
        &self,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Vec<(String, Versioned)> {
        let in_range = |key: &&String| match start {
            Bound::Excluded(after) => key.as_str() > after,
            _ => true,
        };
        let pick = |key: &String| {
            let stored = self.live(key, now)?;
            Some((key.clone(), stored.versioned()))
        };
        match self.ordered.get(kind(prefix)) {
            Some(ordered) => ordered
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|key| key.starts_with(prefix))
                .filter_map(pick)
                .take(limit)
                .collect(),
            None => {
                let mut keys: Vec<&String> = self
                    .records
                    .keys()
                    .filter(|key| key.starts_with(prefix))
                    .filter(in_range)
                    .collect();
                keys.sort();
                keys.into_iter().filter_map(pick).take(limit).collect()
            }
        }
    }
}

/// A key's kind: the key up to and including its first `/` (the whole key without one).
fn kind(key: &str) -> &str {
    key.find('/').map_or(key, |at| &key[..=at])
}

impl MemoryBackend {
    fn shard_of(key: &str) -> usize {
        // A fixed fast hash: keys are the engine's, not an attacker's to collide on
        // (an id, a provider's message id), and the maps inside are seeded anyway.
        (foldhash::fast::FixedState::with_seed(0).hash_one(key) % SHARDS as u64) as usize
    }
}

/// The shard of `key` among those a commit locked.
fn locked_shard<'a>(
    locked: &'a mut [(usize, MutexGuard<'_, Shard>)],
    key: &str,
) -> Option<&'a mut Shard> {
    let id = MemoryBackend::shard_of(key);
    locked
        .iter_mut()
        .find(|(locked, _)| *locked == id)
        .map(|(_, guard)| &mut **guard)
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StoreError> {
        let now = Timestamp::now();
        Ok(keys
            .iter()
            .map(|key| {
                let shard = self.shards[Self::shard_of(key)].lock();
                shard.live(key, now).map(Stored::versioned)
            })
            .collect())
    }

    async fn commit(
        &self,
        expect: &[(String, Option<u64>)],
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        let mut ids: Vec<usize> = expect
            .iter()
            .map(|(key, _)| key)
            .chain(writes.iter().map(|write| &write.key))
            .map(|key| Self::shard_of(key))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // In index order: two commits never wait on each other.
        let mut locked: Vec<(usize, MutexGuard<'_, Shard>)> = ids
            .iter()
            .map(|id| (*id, self.shards[*id].lock()))
            .collect();
        let now = Timestamp::now();
        for (key, version) in expect {
            let Some(shard) = locked_shard(&mut locked, key) else {
                return Ok(false);
            };
            if shard.live(key, now).map(|stored| stored.version) != *version {
                return Ok(false);
            }
        }
        let version = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        for write in writes {
            if let Some(shard) = locked_shard(&mut locked, &write.key) {
                shard.apply(write, version);
            }
        }
        for (_, guard) in &mut locked {
            guard.purge(now);
        }
        Ok(true)
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        let now = Timestamp::now();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut found: Vec<(String, Versioned)> = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.index(prefix);
            found.extend(shard.scan(prefix, start, limit, now));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.truncate(limit);
        Ok(found)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::event::{Direction, Handle, HandleKind, HistoryEntry};
    use crate::store::ContextStore;
    use crate::store::model::{Ingest, IngestPolicy, Person};
    use crate::store::outcomes::OutcomeStore;

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

    fn write(key: &str, doc: Doc, expires: Option<Timestamp>) -> Write {
        Write {
            key: key.to_owned(),
            doc: Some(Arc::new(doc)),
            expires,
        }
    }

    #[tokio::test]
    async fn a_commit_applies_only_when_what_it_read_is_unchanged() {
        let backend = MemoryBackend::default();
        let key = "c/ct_1".to_owned();
        assert!(
            backend
                .commit(&[(key.clone(), None)], vec![write(&key, Doc::Mark, None)])
                .await
                .expect("ok")
        );
        let read = backend.get(std::slice::from_ref(&key)).await.expect("ok");
        let version = read[0].as_ref().map(|entry| entry.version);
        assert!(version.is_some());
        // A commit that still expects it absent loses and writes nothing.
        let other = write("c/ct_2", Doc::Mark, None);
        assert!(
            !backend
                .commit(&[(key.clone(), None)], vec![other])
                .await
                .expect("ok")
        );
        assert!(backend.get(&["c/ct_2".to_owned()]).await.expect("ok")[0].is_none());
        // Written again, the key has a new version: the old one no longer matches.
        assert!(
            backend
                .commit(
                    &[(key.clone(), version)],
                    vec![write(&key, Doc::Mark, None)]
                )
                .await
                .expect("ok")
        );
        assert!(
            !backend
                .commit(&[(key.clone(), version)], Vec::new())
                .await
                .expect("ok")
        );
    }

    #[tokio::test]
    async fn expired_records_read_as_absent_and_go() {
        let backend = MemoryBackend::default();
        let soon = Timestamp::now() + Duration::from_millis(20);
        let key = "d/web\u{1f}m1".to_owned();
        backend
            .commit(&[], vec![write(&key, Doc::Mark, Some(soon))])
            .await
            .expect("ok");
        assert!(backend.get(std::slice::from_ref(&key)).await.expect("ok")[0].is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(backend.get(std::slice::from_ref(&key)).await.expect("ok")[0].is_none());
        assert!(backend.scan("d/", None, 10).await.expect("ok").is_empty());
        // Absent once expired, also to a commit; the commit drops it from the map.
        assert!(
            backend
                .commit(
                    &[(key.clone(), None)],
                    vec![write("d/other", Doc::Mark, None)]
                )
                .await
                .expect("ok")
        );
        let shard = backend.shards[MemoryBackend::shard_of(&key)].lock();
        assert!(
            !shard.records.contains_key(&key)
                || MemoryBackend::shard_of(&key) != MemoryBackend::shard_of("d/other")
        );
    }

    #[tokio::test]
    async fn a_scan_lists_a_prefix_in_key_order_across_shards() {
        let backend = MemoryBackend::default();
        let writes = (0..40)
            .map(|n| write(&format!("o/{n:03}"), Doc::Mark, None))
            .collect();
        backend.commit(&[], writes).await.expect("ok");
        backend
            .commit(&[], vec![write("p/x", Doc::Mark, None)])
            .await
            .expect("ok");
        let first = backend.scan("o/", None, 10).await.expect("ok");
        let keys: Vec<&str> = first.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            (0..10).map(|n| format!("o/{n:03}")).collect::<Vec<_>>()
        );
        let rest = backend.scan("o/", Some("o/009"), 100).await.expect("ok");
        assert_eq!(rest.len(), 30);
        assert_eq!(rest[0].0, "o/010");
        // The kind is indexed now: later writes and deletions keep its order.
        let deleted = Write {
            key: "o/000".to_owned(),
            doc: None,
            expires: None,
        };
        let added = write("o/0005", Doc::Mark, None);
        backend.commit(&[], vec![deleted, added]).await.expect("ok");
        let first = backend.scan("o/", None, 3).await.expect("ok");
        let keys: Vec<&str> = first.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["o/0005", "o/001", "o/002"]);
        // A prefix without a kind still lists in order.
        let all = backend.scan("", None, 100).await.expect("ok");
        assert_eq!(all.len(), 41);
        assert!(all.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }
}
