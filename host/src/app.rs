//! The application state every request handler shares.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::delivery::Delivery;
use crate::pipeline::{ChannelMeta, Pipeline};
use crate::runtime::{Registry, Runtime};
use crate::secret::Secret;

/// Everything the request handlers share.
pub struct App {
    /// The WebAssembly runtime.
    pub runtime: Arc<Runtime>,
    /// Channel id → plugin binding.
    pub registry: Arc<Registry>,
    /// Channel id → what the pipeline needs to know about it.
    pub channels: ArcSwap<HashMap<String, ChannelMeta>>,
    /// The pipeline (and through it, the store).
    pub pipeline: Arc<Pipeline>,
    /// Delivery to downstream tools.
    pub delivery: Delivery,
    /// Bearer keys for `/v1`.
    pub api_keys: Vec<Secret>,
    /// `[identity]`: link tokens and their deep links.
    pub identity: crate::store::IdentitySettings,
}

impl App {
    /// The pipeline facts of channel `id`.
    pub fn channel_meta(&self, id: &str) -> Option<ChannelMeta> {
        self.channels.load().get(id).cloned()
    }
}
