//! The memory store's indexes: maps from a handle, a conversation or a probable-link key
//! to contacts, each split over locks by key so lookups of different keys never wait on
//! each other.

use std::borrow::Borrow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use parking_lot::{Mutex, MutexGuard};

use crate::event::{Handle, HandleKind};

/// How many locks each map is split over.
const SHARDS: usize = 16;

/// The shard of `key` among `count` (a fixed hash: the same key always lands in the
/// same shard, in every process).
pub(super) fn shard_of<Q: Hash + ?Sized>(key: &Q, count: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % count as u64) as usize
}

/// A hash map split over `SHARDS` locks by key.
pub(super) struct Sharded<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    /// The shard holding `key`, locked.
    pub(super) fn lock<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, HashMap<K, V>>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key, self.shards.len())].lock()
    }

    /// Every shard, one after the other.
    pub(super) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<K, V>>> {
        self.shards.iter().map(Mutex::lock)
    }
}

/// Who owns what.
#[derive(Default)]
pub(super) struct Index {
    /// Channel-user and verified handles → contact id. The first claim wins.
    handles: Sharded<(HandleKind, String), String>,
    /// Conversation id → the contact that opened it (whose shard keeps it).
    conversations: Sharded<String, String>,
    /// Probable-link key (name + e-mail domain) → contacts.
    probable: Sharded<String, HashSet<String>>,
}

impl Index {
    /// The contact owning `handle`.
    pub(super) fn owner(&self, handle: &Handle) -> Option<String> {
        let key = (handle.kind, handle.value.clone());
        self.handles.lock(&key).get(&key).cloned()
    }

    /// Give `handle` to `contact` unless another contact owns it; returns the owner.
    pub(super) fn claim(&self, handle: &Handle, contact: &str) -> String {
        let key = (handle.kind, handle.value.clone());
        self.handles
            .lock(&key)
            .entry(key)
            .or_insert_with(|| contact.to_owned())
            .clone()
    }

    /// Move `handle` from contact `from` to contact `to` (nothing when `from` does not own
    /// it).
    pub(super) fn repoint(&self, handle: &Handle, from: &str, to: &str) {
        let key = (handle.kind, handle.value.clone());
        if let Some(owner) = self.handles.lock(&key).get_mut(&key)
            && owner == from
        {
            to.clone_into(owner);
        }
    }

    /// Forget `handle` if `contact` owns it.
    pub(super) fn release(&self, handle: &Handle, contact: &str) {
        let key = (handle.kind, handle.value.clone());
        let mut shard = self.handles.lock(&key);
        if shard.get(&key).is_some_and(|owner| owner == contact) {
            shard.remove(&key);
        }
    }

    /// The contact whose shard keeps conversation `id`.
    pub(super) fn conversation_owner(&self, id: &str) -> Option<String> {
        self.conversations.lock(id).get(id).cloned()
    }

    /// Conversation `id` is kept with contact `contact`.
    pub(super) fn keep_conversation(&self, id: &str, contact: &str) {
        self.conversations
            .lock(id)
            .insert(id.to_owned(), contact.to_owned());
    }

    /// Forget conversation `id`.
    pub(super) fn forget_conversation(&self, id: &str) {
        self.conversations.lock(id).remove(id);
    }

    /// Add `contact` under probable-link `key`.
    pub(super) fn add_probable(&self, key: String, contact: &str) {
        let mut shard = self.probable.lock(&key);
        let members = shard.entry(key).or_default();
        if !members.contains(contact) {
            members.insert(contact.to_owned());
        }
    }

    /// The contacts under probable-link `key`, sorted.
    pub(super) fn probable(&self, key: &str) -> Vec<String> {
        let mut members: Vec<String> = self
            .probable
            .lock(key)
            .get(key)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        members.sort();
        members
    }

    /// Take `contact` out of every probable-link key.
    pub(super) fn forget_probable(&self, contact: &str) {
        for mut shard in self.probable.each() {
            for members in shard.values_mut() {
                members.remove(contact);
            }
        }
    }
}
