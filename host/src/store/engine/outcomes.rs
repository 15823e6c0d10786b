//! The outcome tables over a [`Backend`]: each conversation's outcome record lives in
//! its conversation's record, so a commit is a compare-and-set of that record; the due
//! and started indexes and the rollup counters are keys of their own (`keys.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::records::Doc;
use super::tx::scan_all;
use super::{ATTEMPTS, Backend, Engine, contended, expiry, keys, owe};
use crate::event::Handle;
use crate::store::StoreError;
use crate::store::model::Owed;
use crate::store::outcomes::{OutcomeCommit, OutcomeStore, RollupWrite, StartedRef, Tracked};

/// How long a bucket remembers the debts it took (a retried publish comes within
/// minutes).
const DEBTS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

#[async_trait]
impl<B: Backend> OutcomeStore for Engine<B> {
    async fn tracked(&self, conversation_id: &str) -> Result<Option<Tracked>, StoreError> {
        let doc = self.read(keys::thread(conversation_id)).await?;
        Ok(doc.and_then(|doc| {
            doc.as_thread().map(|thread| Tracked {
                conversation: thread.conversation.clone(),
                version: thread.outcome_version,
                record: thread.outcome.clone(),
            })
        }))
    }

    async fn commit(&self, commit: &OutcomeCommit<'_>) -> Result<bool, StoreError> {
        let id = commit.conversation_id;
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let thread = tx.existing_thread(id).await?;
            if thread.outcome_version != commit.version {
                return Ok(false);
            }
            thread.outcome_version = commit.version + 1;
            thread.outcome = Some(commit.record.to_owned());
            let started = (commit.version == 0).then(|| {
                let ms = commit.started_at.as_millisecond();
                let key = keys::started(ms, id);
                thread.started_key = Some(key.clone());
                (key, ms)
            });
            if let Some((key, ms)) = started {
                tx.put(
                    key,
                    Doc::At {
                        ms,
                        id: id.to_owned(),
                    },
                );
            }
            if let Some(due) = commit.due {
                let due_of = keys::due_of(id);
                if let Some(doc) = tx.get(&due_of).await?
                    && let Doc::At { ms, .. } = &*doc
                {
                    tx.delete(keys::due(*ms, id));
                }
                let ms = due.as_millisecond();
                let at = Doc::At {
                    ms,
                    id: id.to_owned(),
                };
                tx.put(keys::due(ms, id), at.clone());
                tx.put(due_of, at);
            }
            if let Some((key, payload)) = commit.owed {
                owe(
                    &mut tx,
                    Owed::about_conversation(
                        commit.contact_id,
                        key.to_owned(),
                        Timestamp::now(),
                        id,
                        payload.to_owned(),
                    ),
                );
            }
            if tx.commit().await? {
                return Ok(true);
            }
        }
        Err(contended("conversation", id))
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        let now = now.as_millisecond();
        let mut due = Vec::new();
        let mut after: Option<String> = None;
        'pages: loop {
            let page = self
                .backend
                .scan(keys::DUE, after.as_deref(), limit.max(1))
                .await?;
            let full = page.len() == limit.max(1);
            for (key, entry) in page {
                match &*entry.doc {
                    Doc::At { ms, id } if *ms <= now => due.push(id.clone()),
                    Doc::At { .. } => break 'pages,
                    _ => {}
                }
                if due.len() >= limit {
                    break 'pages;
                }
                after = Some(key);
            }
            if !full {
                break;
            }
        }
        Ok(due)
    }

    async fn undue(&self, conversation_id: &str) -> Result<(), StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let due_of = keys::due_of(conversation_id);
            let Some(doc) = tx.get(&due_of).await? else {
                return Ok(());
            };
            if let Doc::At { ms, .. } = &*doc {
                tx.delete(keys::due(*ms, conversation_id));
            }
            tx.delete(due_of);
            if tx.commit().await? {
                return Ok(());
            }
        }
        Err(contended("conversation", conversation_id))
    }

    async fn add_rollups(
        &self,
        once: &[String],
        writes: &[RollupWrite<'_>],
    ) -> Result<bool, StoreError> {
        let mut buckets: BTreeMap<&str, Vec<&RollupWrite<'_>>> = BTreeMap::new();
        for write in writes {
            buckets
                .entry(write.bucket.as_ref())
                .or_default()
                .push(write);
        }
        let mut took_all = true;
        for (bucket, writes) in buckets {
            took_all &= self.add_to_bucket(bucket, once, &writes).await?;
        }
        Ok(took_all)
    }

    async fn rollups(
        &self,
        table: &str,
        buckets: &[String],
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        let keys: Vec<String> = buckets
            .iter()
            .map(|bucket| keys::rollup(bucket, table))
            .collect();
        Ok(self
            .backend
            .get(&keys)
            .await?
            .into_iter()
            .map(|entry| match entry.as_ref().map(|entry| &*entry.doc) {
                Some(Doc::Counters(counters)) => HashMap::clone(counters),
                _ => HashMap::new(),
            })
            .collect())
    }

    async fn keep_conversion(&self, id: &str, body: &str) -> Result<Option<String>, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let key = keys::conversion(id);
            if let Some(kept) = tx.get(&key).await? {
                return Ok(kept.as_text().map(str::to_owned));
            }
            tx.put(key, Doc::Text(body.to_owned()));
            if tx.commit().await? {
                return Ok(None);
            }
        }
        Err(contended("conversion", id))
    }

    async fn conversion(&self, id: &str) -> Result<Option<String>, StoreError> {
        let doc = self.read(keys::conversion(id)).await?;
        Ok(doc.and_then(|doc| doc.as_text().map(str::to_owned)))
    }

    async fn keep_receipt(
        &self,
        id: &str,
        destination: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        self.write(vec![super::Write {
            key: keys::receipt(id, destination),
            doc: Some(std::sync::Arc::new(Doc::Text(body.to_owned()))),
            expires: None,
        }])
        .await
    }

    async fn receipts(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(scan_all(&self.backend, &keys::receipts(id))
            .await?
            .into_iter()
            .filter_map(|(_, doc)| doc.as_text().map(str::to_owned))
            .collect())
    }

    async fn started(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<&StartedRef>,
        limit: usize,
    ) -> Result<Vec<StartedRef>, StoreError> {
        let mut start = keys::started_before(from_ms);
        if let Some(after) = after {
            start = start.max(keys::started(after.at_ms, &after.conversation_id));
        }
        let page = self
            .backend
            .scan(keys::STARTED, Some(&start), limit)
            .await?;
        Ok(page
            .into_iter()
            .filter_map(|(_, entry)| match &*entry.doc {
                Doc::At { ms, id } => Some(StartedRef {
                    at_ms: *ms,
                    conversation_id: id.clone(),
                }),
                _ => None,
            })
            .take_while(|started| started.at_ms < to_ms)
            .collect())
    }

    async fn owe_once(
        &self,
        contact_id: &str,
        key: &str,
        payload: &str,
    ) -> Result<bool, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            if tx.get(&keys::owed(contact_id, key)).await?.is_some() {
                return Ok(false);
            }
            owe(
                &mut tx,
                Owed::about_contact(
                    contact_id,
                    key.to_owned(),
                    Timestamp::now(),
                    None,
                    payload.to_owned(),
                ),
            );
            if tx.commit().await? {
                return Ok(true);
            }
        }
        Err(contended("contact", contact_id))
    }

    async fn contact_by_handle(&self, handle: &Handle) -> Result<Option<String>, StoreError> {
        let doc = self.read(keys::handle(handle)).await?;
        Ok(doc.and_then(|doc| doc.as_id().map(str::to_owned)))
    }
}

impl<B: Backend> Engine<B> {
    /// Add one bucket's `writes` unless it has taken a debt of `once` before; whether it
    /// took them.
    async fn add_to_bucket(
        &self,
        bucket: &str,
        once: &[String],
        writes: &[&RollupWrite<'_>],
    ) -> Result<bool, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            for debt in once {
                if tx.get(&keys::rollup_once(bucket, debt)).await?.is_some() {
                    return Ok(false);
                }
            }
            for debt in once {
                tx.put_until(
                    keys::rollup_once(bucket, debt),
                    Doc::Mark,
                    expiry(DEBTS_KEPT),
                );
            }
            let mut tables: BTreeMap<&str, HashMap<String, i64>> = BTreeMap::new();
            for write in writes {
                if !tables.contains_key(write.table.as_ref()) {
                    let counters = match tx
                        .get(&keys::rollup(bucket, &write.table))
                        .await?
                        .as_deref()
                    {
                        Some(Doc::Counters(counters)) => HashMap::clone(counters),
                        _ => HashMap::new(),
                    };
                    tables.insert(write.table.as_ref(), counters);
                }
                if let Some(counters) = tables.get_mut(write.table.as_ref()) {
                    let n = counters.entry(write.field.to_string()).or_insert(0);
                    *n += write.n;
                    if *n == 0 {
                        counters.remove(write.field.as_ref());
                    }
                }
            }
            for (table, counters) in tables {
                let key = keys::rollup(bucket, table);
                if counters.is_empty() {
                    tx.delete(key);
                } else {
                    tx.put(key, Doc::Counters(Box::new(counters)));
                }
            }
            if tx.commit().await? {
                return Ok(true);
            }
        }
        Err(contended("rollup bucket", bucket))
    }
}
