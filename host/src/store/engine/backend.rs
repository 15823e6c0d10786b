//! The one trait a store backend implements: keyed records read with their versions and
//! changed by an atomic compare-and-set of many keys, plus an ordered scan by prefix.
//!
//! Everything else (identity, threading, merges, erasure, owed records, outcome tables)
//! is the [engine](super::Engine)'s, written once over these three calls. The memory
//! backend (`store::memory`) is the reference implementation; a backend for another
//! database maps them onto its transactions (a `SELECT … FOR UPDATE` and one `COMMIT`,
//! or a conditional batch write).

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use super::records::Doc;
use crate::store::StoreError;

/// A record as stored, with the version of its latest write.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// Changes with every write of the key and never repeats for it (a key deleted and
    /// written again gets a new version), so a compare-and-set on it cannot be fooled by
    /// a record that went and came back.
    pub version: u64,
    /// The record.
    pub doc: Arc<Doc>,
}

/// One key's change in a [`Backend::commit`].
#[derive(Debug, Clone)]
pub struct Write {
    /// The key.
    pub key: String,
    /// The new record; `None` deletes the key.
    pub doc: Option<Arc<Doc>>,
    /// When the record expires (dedupe keys, link tokens, revoked sessions): from then
    /// on it reads as absent. `None`: it lives until deleted.
    pub expires: Option<Timestamp>,
}

/// Storage for the [engine](super::Engine): the one trait a new backend implements.
///
/// Keys are UTF-8 strings whose byte order is meaningful to [`Backend::scan`]; records
/// are [`Doc`]s (serde-serializable, for a backend that keeps bytes). An expired record
/// reads as absent everywhere, also in a commit's expectations.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The records of `keys`, in order (`None`: absent or expired).
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StoreError>;

    /// Atomically: when every key of `expect` is still at the version given (`None`:
    /// absent), apply every write and answer `true`; otherwise write nothing and answer
    /// `false` (the engine reads again and decides again).
    async fn commit(
        &self,
        expect: &[(String, Option<u64>)],
        writes: Vec<Write>,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` records whose key starts with `prefix`, in key order, after the key
    /// `after` (exclusive; `None`: from the first).
    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError>;

    /// The backend's name, for logs and `/readyz`.
    fn name(&self) -> &'static str;

    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
