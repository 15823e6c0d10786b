//! The channels being served and the plugin versions serving them, swapped atomically.
//!
//! A call clones the channel's `Arc` out first, so calls in flight finish on the version
//! they started with while new calls see a swap at once; no lock is held across a call.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::channel::ChannelRuntime;

/// Channel id → the plugin instance factory serving it.
#[derive(Default)]
pub struct Registry {
    channels: ArcSwap<HashMap<String, Arc<ChannelRuntime>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel with `id`, if served.
    pub fn get(&self, id: &str) -> Option<Arc<ChannelRuntime>> {
        self.channels.load().get(id).cloned()
    }

    /// Serve `channel` under `id`, replacing any previous binding atomically.
    /// Returns the previous one.
    pub fn install(&self, id: &str, channel: Arc<ChannelRuntime>) -> Option<Arc<ChannelRuntime>> {
        let mut previous = None;
        self.channels.rcu(|current| {
            let mut next = HashMap::clone(current);
            previous = next.insert(id.to_owned(), channel.clone());
            next
        });
        previous
    }

    /// Stop serving `id`.
    pub fn remove(&self, id: &str) -> Option<Arc<ChannelRuntime>> {
        let mut previous = None;
        self.channels.rcu(|current| {
            let mut next = HashMap::clone(current);
            previous = next.remove(id);
            next
        });
        previous
    }

    /// All served channels, sorted by id.
    pub fn list(&self) -> Vec<(String, Arc<ChannelRuntime>)> {
        let mut all: Vec<_> = self
            .channels
            .load()
            .iter()
            .map(|(id, channel)| (id.clone(), channel.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
