//! The application state every request handler shares.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::delivery::Delivery;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::watch::DirWatch;
use crate::pipeline::{ChannelMeta, Pipeline};
use crate::runtime::{Registry, Runtime};
use crate::secret::Secret;

/// Everything the request handlers share.
pub struct App {
    /// The WebAssembly runtime.
    pub runtime: Arc<Runtime>,
    /// Channel id → plugin binding.
    pub registry: Arc<Registry>,
    /// Channel id → what the pipeline needs to know about it (swapped with the registry
    /// entry by the lifecycle).
    pub channels: Arc<ArcSwap<HashMap<String, ChannelMeta>>>,
    /// The pipeline (and through it, the store).
    pub pipeline: Arc<Pipeline>,
    /// Delivery to downstream tools.
    pub delivery: Delivery,
    /// Bearer keys for `/v1`.
    pub api_keys: Vec<Secret>,
    /// Bearer keys for `/admin`.
    pub admin_keys: Vec<Secret>,
    /// `[console]`: its keys and sessions; `None` when the console is disabled.
    pub console: Option<Arc<crate::console::session::Sessions>>,
    /// Bearer keys for `/metrics` (none: open).
    pub metrics_keys: Vec<Secret>,
    /// Largest plugin upload accepted on `/admin/plugins`.
    pub max_plugin_bytes: usize,
    /// Plugin versions and activations.
    pub lifecycle: Arc<Lifecycle>,
    /// The plugins directory watch, if `[plugins] watch` is on (stops when dropped).
    pub plugin_watch: Option<DirWatch>,
    /// `[identity]`: link tokens and their deep links.
    pub identity: crate::store::IdentitySettings,
    /// `[server] request_timeout`.
    pub request_timeout: std::time::Duration,
    /// `[server] public_url` and `trust_forwarded`: the URL providers called.
    pub public_url: crate::ingress::public_url::PublicUrl,
    /// Each channel's recent plugin errors (this process), for the console.
    pub plugin_errors: crate::runtime::RecentErrors,
}

impl App {
    /// The pipeline facts of channel `id`.
    pub fn channel_meta(&self, id: &str) -> Option<ChannelMeta> {
        self.channels.load().get(id).cloned()
    }
}
