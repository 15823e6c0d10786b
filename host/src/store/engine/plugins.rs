//! The plugin registry over a [`Backend`]: versions by digest, their wasm, and every
//! channel's activation in one record changed by compare-and-set.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::records::{Doc, StoredActivations};
use super::tx::scan_all;
use super::{ATTEMPTS, Backend, Engine, contended, keys};
use crate::store::StoreError;
use crate::store::plugins::{
    Activation, Activations, Change, PluginRecord, PluginRegistry, conflict,
};

#[async_trait]
impl<B: Backend> PluginRegistry for Engine<B> {
    async fn put_version(&self, record: &PluginRecord, wasm: &[u8]) -> Result<(), StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            if tx.get(&keys::plugin(&record.digest)).await?.is_some() {
                return Ok(());
            }
            tx.put(keys::wasm(&record.digest), Doc::Wasm(wasm.to_vec()));
            tx.put(
                keys::plugin(&record.digest),
                Doc::Plugin(Box::new(record.clone())),
            );
            if tx.commit().await? {
                return Ok(());
            }
        }
        Err(contended("plugin version", &record.digest))
    }

    async fn versions(&self) -> Result<Vec<PluginRecord>, StoreError> {
        Ok(scan_all(&self.backend, keys::PLUGINS)
            .await?
            .into_iter()
            .filter_map(|(_, doc)| match &*doc {
                Doc::Plugin(record) => Some(PluginRecord::clone(record)),
                _ => None,
            })
            .collect())
    }

    async fn wasm(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let doc = self.read(keys::wasm(digest)).await?;
        Ok(doc.and_then(|doc| match &*doc {
            Doc::Wasm(wasm) => Some(wasm.clone()),
            _ => None,
        }))
    }

    async fn activations(&self) -> Result<Activations, StoreError> {
        let doc = self.read(keys::ACTIVATIONS.to_owned()).await?;
        Ok(stored(doc.as_deref()).into())
    }

    async fn activate(
        &self,
        channel: &str,
        expected: Option<&str>,
        activation: &Activation,
    ) -> Result<u64, StoreError> {
        for _ in 0..ATTEMPTS {
            let mut tx = self.tx();
            let doc = tx.get(keys::ACTIVATIONS).await?;
            let mut activations = stored(doc.as_deref());
            let current = activations
                .channels
                .get(channel)
                .map(|active| active.digest.as_str());
            if current != expected {
                return Err(conflict(channel, expected, current));
            }
            activations.revision += 1;
            activations
                .channels
                .insert(channel.to_owned(), activation.clone());
            let revision = activations.revision;
            tx.put(
                keys::ACTIVATIONS.to_owned(),
                Doc::Activations(Box::new(activations)),
            );
            if tx.commit().await? {
                return Ok(revision);
            }
        }
        Err(contended("channel", channel))
    }

    fn changes(&self) -> mpsc::Receiver<Change> {
        // Instances sharing a backend notice another's activation on their periodic
        // reconcile (the revision moved); this process's own are applied where made.
        let (sender, receiver) = mpsc::channel(1);
        self.feeds.lock().push(sender);
        receiver
    }

    fn backend(&self) -> &'static str {
        self.backend.name()
    }
}

fn stored(doc: Option<&Doc>) -> StoredActivations {
    match doc {
        Some(Doc::Activations(activations)) => StoredActivations::clone(activations),
        _ => StoredActivations::default(),
    }
}
