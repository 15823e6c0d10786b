//! The shared plugin registry: which plugin versions the fleet knows (their wasm bytes and
//! what they said about themselves) and which version serves each channel.
//!
//! Every gateway instance on one store sees the same registry. An activation is a
//! compare-and-set on the channel's record (two operators racing on two instances get one
//! winner and one `Conflict`) that bumps a revision and announces it; the other instances
//! hear the announcement ([`PluginRegistry::changes`]) or notice the revision on their
//! periodic reconcile, fetch the bytes by digest and install the version themselves.
//!
//! Backends: the [engine](super::Engine) (on the memory backend: one process, the
//! registry is this instance's own) and the Redis one (`store::redis::plugins`, keys in
//! docs/redis-keys.md); [`super::open_plugins`] picks one from the store URL.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::StoreError;

/// A plugin version known to the fleet (its wasm is stored beside it, by digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// SHA-256 of the wasm, hex.
    pub digest: String,
    /// Plugin id (`webchat`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The world it was built against (`omnigate:channel/channel@0.2.0`).
    pub world: String,
    /// Size of the wasm in bytes.
    pub size: usize,
    /// Where it came from (a file path, or `upload`).
    pub source: String,
    /// When it was first added.
    pub added_at: Timestamp,
    /// The ed25519 signature (base64) that came with the upload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Which version serves one channel across the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Digest of the active version.
    pub digest: String,
    /// When it was activated.
    pub since: Timestamp,
    /// Earlier digests, oldest first: a rollback returns to the last.
    pub history: Vec<String>,
    /// The instance that made the change (for logs).
    pub by: String,
}

/// Every channel's activation, with the registry revision they were read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activations {
    /// Bumped by every activation; 0 while nothing was ever activated.
    pub revision: u64,
    /// Channel id → activation. Channels absent here serve their configured file.
    pub channels: BTreeMap<String, Activation>,
}

/// Something changed in the registry, or may have while nobody was listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An activation was announced at this revision.
    Announced(u64),
    /// The announcement feed was (re)connected: changes may have been missed.
    Resubscribed,
}

/// The operations the plugin lifecycle needs from the store.
#[async_trait]
pub trait PluginRegistry: Send + Sync + 'static {
    /// Keep a version (its record and wasm). Adding a known digest again changes nothing.
    async fn put_version(&self, record: &PluginRecord, wasm: &[u8]) -> Result<(), StoreError>;

    /// Every version the fleet knows.
    async fn versions(&self) -> Result<Vec<PluginRecord>, StoreError>;

    /// The wasm of version `digest`, if kept.
    async fn wasm(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every channel's activation.
    async fn activations(&self) -> Result<Activations, StoreError>;

    /// Make `activation` the record of `channel` if its current record's digest is
    /// `expected` (`None`: no record yet), bump the revision and announce it. Returns the
    /// new revision; [`StoreError::Conflict`] when another change got there first.
    async fn activate(
        &self,
        channel: &str,
        expected: Option<&str>,
        activation: &Activation,
    ) -> Result<u64, StoreError>;

    /// Announcements of changes made by any instance (must be called inside a tokio
    /// runtime; the feed reconnects by itself and says so with [`Change::Resubscribed`]).
    fn changes(&self) -> mpsc::Receiver<Change>;

    /// The backend's name, for logs.
    fn backend(&self) -> &'static str;
}

/// The refusal of a compare-and-set that lost.
pub(crate) fn conflict(channel: &str, expected: Option<&str>, current: Option<&str>) -> StoreError {
    let name = |digest: Option<&str>| {
        digest.map_or_else(
            || "its configured file".to_owned(),
            |digest| digest.get(..12).unwrap_or(digest).to_owned(),
        )
    };
    StoreError::Conflict(format!(
        "channel `{channel}` changed meanwhile (expected {}, found {}): list the plugins and try again",
        name(expected),
        name(current)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(digest: &str) -> Activation {
        Activation {
            digest: digest.to_owned(),
            since: Timestamp::UNIX_EPOCH,
            history: Vec::new(),
            by: "test".to_owned(),
        }
    }

    #[tokio::test]
    async fn activation_is_a_compare_and_set_that_bumps_the_revision() {
        let registry = crate::store::MemoryStore::new();
        assert_eq!(
            registry.activate("web", None, &activation("a")).await.ok(),
            Some(1)
        );
        // A second writer that still believes there is no record loses.
        let lost = registry.activate("web", None, &activation("b")).await;
        assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
        assert_eq!(
            registry
                .activate("web", Some("a"), &activation("b"))
                .await
                .ok(),
            Some(2)
        );
        let all = registry.activations().await.expect("read");
        assert_eq!(all.revision, 2);
        assert_eq!(all.channels["web"].digest, "b");
    }

    #[tokio::test]
    async fn versions_are_kept_once_by_digest() {
        let registry = crate::store::MemoryStore::new();
        let record = PluginRecord {
            digest: "d1".into(),
            name: "webchat".into(),
            version: "0.1.0".into(),
            world: "omnigate:channel/channel@0.1.0".into(),
            size: 3,
            source: "upload".into(),
            added_at: Timestamp::UNIX_EPOCH,
            signature: None,
        };
        registry.put_version(&record, b"abc").await.expect("put");
        let again = PluginRecord {
            source: "elsewhere".into(),
            ..record.clone()
        };
        registry.put_version(&again, b"abc").await.expect("put");
        assert_eq!(registry.versions().await.expect("list"), vec![record]);
        assert_eq!(
            registry.wasm("d1").await.expect("get").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(registry.wasm("nope").await.expect("get"), None);
    }
}
