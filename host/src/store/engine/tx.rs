//! One attempt at a change: reads remember the version they saw, writes wait in the
//! transaction, and the commit applies them only if nothing read has changed since
//! ([`Backend::commit`]). A failed commit writes nothing; the engine starts a new
//! transaction, reads again and decides again.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use jiff::Timestamp;

use super::backend::{Backend, Versioned, Write};
use super::keys;
use super::records::{ContactDoc, Doc, ThreadDoc};
use crate::store::StoreError;

/// A record read into a change: shared with the backend until the change takes it
/// to modify (`None`: absent or removed).
enum Slot<T> {
    Read(Option<Arc<Doc>>),
    Taken(Option<T>),
}

/// A change in progress.
pub struct Tx<'b> {
    backend: &'b dyn Backend,
    /// Every key read, with what it held (its version is checked at commit).
    read: HashMap<String, Option<Versioned>>,
    /// Contacts read: as read until changed (most changes only read the contact).
    contacts: HashMap<String, Slot<ContactDoc>>,
    /// Conversations read, as changed so far.
    threads: HashMap<String, Option<ThreadDoc>>,
    /// Other writes, by key.
    writes: HashMap<String, Write>,
}

impl<'b> Tx<'b> {
    /// A change on `backend`.
    pub fn new(backend: &'b dyn Backend) -> Self {
        Self {
            backend,
            read: HashMap::new(),
            contacts: HashMap::new(),
            threads: HashMap::new(),
            writes: HashMap::new(),
        }
    }

    /// The record under `key` as this change sees it (its own writes included); the
    /// commit checks it has not changed.
    pub async fn get(&mut self, key: &str) -> Result<Option<Arc<Doc>>, StoreError> {
        if let Some(write) = self.writes.get(key) {
            return Ok(write.doc.clone());
        }
        if let Some(read) = self.read.get(key) {
            return Ok(read.as_ref().map(|entry| entry.doc.clone()));
        }
        let key = key.to_owned();
        let entry = self
            .backend
            .get(std::slice::from_ref(&key))
            .await?
            .pop()
            .flatten();
        let doc = entry.as_ref().map(|entry| entry.doc.clone());
        self.read.insert(key, entry);
        Ok(doc)
    }

    /// The id an index entry under `key` points at.
    pub async fn id(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(key)
            .await?
            .and_then(|doc| doc.as_id().map(str::to_owned)))
    }

    /// Records that are written once and never changed (messages, timeline entries),
    /// read without a check at commit; this change's own writes included.
    pub async fn peek(&self, keys: Vec<String>) -> Result<Vec<Option<Arc<Doc>>>, StoreError> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|key| !self.writes.contains_key(*key))
            .cloned()
            .collect();
        let mut found = self.backend.get(&missing).await?.into_iter();
        Ok(keys
            .iter()
            .map(|key| match self.writes.get(key) {
                Some(write) => write.doc.clone(),
                None => found.next().flatten().map(|entry| entry.doc),
            })
            .collect())
    }

    /// Every record whose key starts with `prefix`, in key order, read without a check
    /// at commit (indexes the change only reads to find other records).
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Arc<Doc>)>, StoreError> {
        scan_all(self.backend, prefix).await
    }

    /// Keep `doc` under `key`.
    pub fn put(&mut self, key: String, doc: Doc) {
        self.put_until(key, doc, None);
    }

    /// Keep `doc` under `key` until `expires`.
    pub fn put_until(&mut self, key: String, doc: Doc, expires: Option<Timestamp>) {
        self.writes.insert(
            key.clone(),
            Write {
                key,
                doc: Some(Arc::new(doc)),
                expires,
            },
        );
    }

    /// Delete `key`.
    pub fn delete(&mut self, key: String) {
        self.writes.insert(
            key.clone(),
            Write {
                key,
                doc: None,
                expires: None,
            },
        );
    }

    /// Read contact `id` into the change; whether it exists.
    pub async fn load_contact(&mut self, id: &str) -> Result<bool, StoreError> {
        if !self.contacts.contains_key(id) {
            let doc = self.get(&keys::contact(id)).await?;
            self.contacts.insert(id.to_owned(), Slot::Read(doc));
        }
        Ok(self.contact(id).is_some())
    }

    /// Contact `id` as changed so far (read first with [`Tx::load_contact`]).
    pub fn contact(&self, id: &str) -> Option<&ContactDoc> {
        match self.contacts.get(id)? {
            Slot::Read(doc) => doc.as_deref()?.as_contact(),
            Slot::Taken(contact) => contact.as_ref(),
        }
    }

    /// Contact `id`, to change.
    pub fn contact_mut(&mut self, id: &str) -> Option<&mut ContactDoc> {
        let slot = self.contacts.get_mut(id)?;
        if let Slot::Read(doc) = slot {
            *slot = Slot::Taken(doc.as_deref().and_then(Doc::as_contact).cloned());
        }
        match slot {
            Slot::Taken(contact) => contact.as_mut(),
            Slot::Read(_) => None,
        }
    }

    /// Make contact `id` (first seen `at`) unless it exists.
    pub async fn ensure_contact(&mut self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        if !self.load_contact(id).await? {
            self.contacts
                .insert(id.to_owned(), Slot::Taken(Some(ContactDoc::new(id, at))));
        }
        Ok(())
    }

    /// Remove contact `id` (read first).
    pub fn remove_contact(&mut self, id: &str) {
        self.contacts.insert(id.to_owned(), Slot::Taken(None));
    }

    /// Read conversation `id` into the change; whether it exists.
    pub async fn load_thread(&mut self, id: &str) -> Result<bool, StoreError> {
        if !self.threads.contains_key(id) {
            let doc = self.get(&keys::thread(id)).await?;
            let thread = doc.and_then(|doc| doc.as_thread().cloned());
            self.threads.insert(id.to_owned(), thread);
        }
        Ok(self.thread(id).is_some())
    }

    /// Conversation `id`, read into the change to modify; `NotFound` when there is none.
    pub async fn existing_thread(&mut self, id: &str) -> Result<&mut ThreadDoc, StoreError> {
        self.load_thread(id).await?;
        self.thread_mut(id)
            .ok_or_else(|| not_found("conversation", id))
    }

    /// Conversation `id` as changed so far (read first with [`Tx::load_thread`]).
    pub fn thread(&self, id: &str) -> Option<&ThreadDoc> {
        self.threads.get(id)?.as_ref()
    }

    /// Conversation `id`, to change.
    pub fn thread_mut(&mut self, id: &str) -> Option<&mut ThreadDoc> {
        self.threads.get_mut(id)?.as_mut()
    }

    /// Keep a new conversation.
    pub fn insert_thread(&mut self, thread: ThreadDoc) {
        self.threads
            .insert(thread.conversation.id.clone(), Some(thread));
    }

    /// Remove conversation `id`.
    pub fn remove_thread(&mut self, id: &str) {
        self.threads.insert(id.to_owned(), None);
    }

    /// Apply the change if nothing it read has changed since; `false` when something
    /// did (nothing was written).
    pub async fn commit(mut self) -> Result<bool, StoreError> {
        let contacts = std::mem::take(&mut self.contacts);
        for (id, slot) in contacts {
            let Slot::Taken(now) = slot else {
                continue;
            };
            let key = keys::contact(&id);
            if self.changed(&key, now.as_ref(), Doc::as_contact) {
                self.set(key, now.map(|doc| Doc::Contact(Box::new(doc))));
            }
        }
        let threads = std::mem::take(&mut self.threads);
        for (id, now) in threads {
            let key = keys::thread(&id);
            if self.changed(&key, now.as_ref(), Doc::as_thread) {
                self.set(key, now.map(|doc| Doc::Thread(Box::new(doc))));
            }
        }
        if self.writes.is_empty() {
            return Ok(true);
        }
        let expect: Vec<(String, Option<u64>)> = self
            .read
            .into_iter()
            .map(|(key, entry)| (key, entry.map(|entry| entry.version)))
            .collect();
        self.backend
            .commit(&expect, self.writes.into_values().collect())
            .await
    }

    /// Whether `now` differs from what `key` held when read.
    fn changed<T: PartialEq>(
        &self,
        key: &str,
        now: Option<&T>,
        inner: fn(&Doc) -> Option<&T>,
    ) -> bool {
        let before = self
            .read
            .get(key)
            .and_then(Option::as_ref)
            .and_then(|entry| inner(&entry.doc));
        before != now
    }

    fn set(&mut self, key: String, doc: Option<Doc>) {
        match doc {
            Some(doc) => self.put(key, doc),
            None => self.delete(key),
        }
    }
}

/// Every record of `backend` whose key starts with `prefix`, in key order, read in pages.
pub async fn scan_all(
    backend: &dyn Backend,
    prefix: &str,
) -> Result<Vec<(String, Arc<Doc>)>, StoreError> {
    const PAGE: usize = 512;
    let mut all: Vec<(String, Arc<Doc>)> = Vec::new();
    loop {
        let after = all.last().map(|(key, _)| key.as_str());
        let page = backend.scan(prefix, after, PAGE).await?;
        let full = page.len() == PAGE;
        all.extend(page.into_iter().map(|(key, entry)| (key, entry.doc)));
        if !full {
            return Ok(all);
        }
    }
}

/// The error for a record that does not exist.
pub fn not_found(kind: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_owned(),
    }
}
