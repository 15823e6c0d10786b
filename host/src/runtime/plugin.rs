//! A loaded plugin: compiled, checked against the contract, pre-instantiated, described.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::contract::{self, v0_2::types::PluginInfo};
use super::error::LoadError;

/// One plugin version, ready to instantiate for any number of channels.
pub struct Plugin {
    /// What the plugin said about itself.
    pub info: PluginInfo,
    /// SHA-256 of the wasm bytes, hex.
    pub digest: String,
    /// Contract version it was built against.
    pub contract: &'static str,
    /// A channel or a destination plugin.
    pub role: Role,
    /// `id@version`, for logs and errors.
    pub label: Arc<str>,
    pub(crate) pre: contract::Pre,
    /// The same component linked for fiberless `handle-webhook` calls
    /// ([`super::fiberless`]); `None` for destination plugins or when it would not link.
    pub(crate) fiberless: Option<contract::Pre>,
    /// Set once a fiberless `handle-webhook` reached an import only the async path
    /// serves: from then on this plugin's webhooks take the async path.
    pub(crate) webhooks_need_async: AtomicBool,
}

impl Plugin {
    /// What fiberless `handle-webhook` calls instantiate, while they are still tried.
    pub(crate) fn fiberless_webhooks(&self) -> Option<&contract::Pre> {
        self.fiberless
            .as_ref()
            .filter(|_| !self.webhooks_need_async.load(Ordering::Relaxed))
    }

    /// Whether webhooks are served without a fiber (for tests and the console).
    pub fn serves_webhooks_fiberless(&self) -> bool {
        self.fiberless_webhooks().is_some()
    }

    /// Send this plugin's webhooks to the async path for good; `true` the first time.
    /// The runtime does it when one reaches an import only that path serves; benchmarks
    /// do it to measure the async path beside the fiberless one.
    pub fn send_webhooks_async(&self) -> bool {
        !self.webhooks_need_async.swap(true, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.label)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Which world a plugin implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A channel plugin: webhooks in, replies out.
    Channel,
    /// A destination plugin: events out to a platform.
    Destination {
        /// The event types it asks for by default.
        events: Vec<String>,
    },
}

/// What the first bytes of a file say it is.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    // Magic, then a 16-bit version and a 16-bit layer: layer 0 is a core module, 1 a component.
    let Some(header) = bytes.get(..8).filter(|header| header.starts_with(b"\0asm")) else {
        return Err(LoadError::NotWasm);
    };
    match header[6..8] {
        [1, 0] => Ok(()),
        _ => Err(LoadError::CoreModule),
    }
}
