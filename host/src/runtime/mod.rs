//! The WebAssembly runtime: one engine, compiled-plugin cache, sandboxed instances, host
//! imports and the registry of channels with their plugins.
//!
//! Flow: [`Runtime::load_bytes`] compiles (or loads from cache), checks the contract,
//! pre-instantiates and calls `describe()`; [`Runtime::bind`] gives the plugin a channel's
//! environment; the [`Registry`] maps channel ids to those bindings.

mod budget;
mod cache;
mod channel;
pub mod contract;
mod engine;
pub mod env;
mod error;
mod fiberless;
pub mod imports;
pub mod lent;
pub mod native;
mod outbound;
mod plugin;
pub mod recent;
mod registry;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use budget::{BudgetSettings, InstanceBudget};
pub use cache::CompileCache;
pub use channel::ChannelRuntime;
pub use contract::v0_2::types;
pub use engine::{EPOCH_TICK, EngineSettings};
pub use env::{ChannelEnv, Limits};
pub use error::{CallError, LoadError};
pub use fiberless::FIBERLESS_SLICE_TICKS;
pub use lent::{HeaderRef, WebhookRequest};
pub use native::NativeChannel;
pub use outbound::{AllowedHosts, FetchClient};
pub use plugin::{Plugin, Role};
pub use recent::{PluginError, RecentErrors};
pub use registry::Registry;

use engine::EpochTicker;
use state::WasmState;

/// Settings of the runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSettings {
    /// Where compiled plugins are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Engine-wide limits.
    pub engine: EngineSettings,
    /// Internal networks `http-fetch` may reach (`[plugins] allow_networks`).
    pub allow_networks: crate::netguard::NetworkPolicy,
    /// The process-wide cap on live plugin instances and their memory.
    pub budget: BudgetSettings,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime rejected the engine configuration.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    /// The epoch thread or cache directory could not be set up.
    #[error("cannot start the runtime: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client for `http-fetch` could not be built.
    #[error("cannot build the outbound HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The engine and everything shared by all plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<WasmState>,
    /// Host imports for fiberless `handle-webhook` calls ([`fiberless`]).
    fiberless_linker: Linker<WasmState>,
    cache: Option<CompileCache>,
    fetch: FetchClient,
    budget: Arc<InstanceBudget>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Start the runtime: engine, linker with the host imports, epoch ticker, cache.
    pub fn new(settings: &RuntimeSettings) -> Result<Self, RuntimeError> {
        let engine = engine::build_engine(&settings.engine)
            .map_err(|error| RuntimeError::Engine(format!("{error:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|error| RuntimeError::Engine(format!("{error:#}")))?;
        contract::add_to_linker(&mut linker)
            .map_err(|error| RuntimeError::Engine(format!("{error:#}")))?;
        let fiberless_linker = fiberless::linker(&engine)
            .map_err(|error| RuntimeError::Engine(format!("{error:#}")))?;
        let cache = match &settings.cache_dir {
            Some(dir) => Some(CompileCache::new(dir, &engine)?),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            fiberless_linker,
            cache,
            fetch: FetchClient::new(settings.allow_networks.clone())?,
            budget: Arc::new(InstanceBudget::new(&settings.budget)),
            _ticker: ticker,
        })
    }

    /// The shared outbound HTTP client (for channel environments).
    pub fn fetch_client(&self) -> FetchClient {
        self.fetch.clone()
    }

    /// Load the plugin at `path`.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.display().to_string(),
                source,
            })?;
        self.load_bytes(bytes).await
    }

    /// Load a plugin from its wasm bytes: compile or take from cache, check the contract,
    /// pre-instantiate and call `describe()`.
    pub async fn load_bytes(&self, bytes: Vec<u8>) -> Result<Arc<Plugin>, LoadError> {
        plugin::check_header(&bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let component = self.compile(bytes, &digest).await?;
        let version = contract::detect(&self.engine, &component)?;
        let pre = contract::prepare(&self.linker, &component, version)?;
        let fiberless = if pre.is_destination() {
            None
        } else {
            // Not linking fiberless is no load error: webhooks then take the async path.
            contract::prepare_fiberless(&self.fiberless_linker, &component, version)
                .inspect_err(
                    |error| tracing::debug!(%error, "no fiberless webhooks for this plugin"),
                )
                .ok()
        };
        let mut plugin = Plugin {
            info: placeholder_info(),
            digest,
            contract: version,
            role: Role::Channel,
            label: Arc::from("unnamed"),
            pre,
            fiberless,
            webhooks_need_async: Default::default(),
        };
        let probe = Arc::new(ChannelEnv::empty("(describe)", self.fetch.clone()));
        // Unmetered: a `(describe)` channel must not appear at /metrics.
        let binding = ChannelRuntime::unmetered(
            self.engine.clone(),
            Arc::new(plugin_clone(&plugin)),
            probe,
            self.budget.clone(),
        );
        plugin.info = binding
            .describe()
            .await
            .map_err(|error| LoadError::Describe(error.to_string()))?;
        if plugin.pre.is_destination() {
            let info = binding
                .describe_destination()
                .await
                .map_err(|error| LoadError::Describe(error.to_string()))?;
            plugin.role = Role::Destination {
                events: info.events,
            };
        }
        if plugin.info.id.trim().is_empty() {
            return Err(LoadError::Describe("the plugin id is empty".into()));
        }
        plugin.label = Arc::from(format!("{}@{}", plugin.info.id, plugin.info.version));
        Ok(Arc::new(plugin))
    }

    async fn compile(&self, bytes: Vec<u8>, digest: &str) -> Result<Component, LoadError> {
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, digest))
        {
            return Ok(component);
        }
        let engine = self.engine.clone();
        // Compiling takes ~100 ms of CPU: keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|error| LoadError::Compile(error.to_string()))?
            .map_err(|error| LoadError::Compile(format!("{error:#}")))?;
        if let Some(cache) = &self.cache {
            cache.store(digest, &component);
        }
        Ok(component)
    }

    /// Give a destination plugin its environment: like a channel's, without the
    /// channel's webhook and event metrics (its calls are still timed per plugin).
    pub fn bind_destination(&self, plugin: Arc<Plugin>, env: Arc<ChannelEnv>) -> ChannelRuntime {
        ChannelRuntime::unmetered(self.engine.clone(), plugin, env, self.budget.clone())
    }

    /// Give `plugin` an environment without recording channel metrics (`omnigate plugin
    /// test` replaying fixtures: no channel is served).
    pub fn bind_unmetered(&self, plugin: Arc<Plugin>, env: Arc<ChannelEnv>) -> ChannelRuntime {
        ChannelRuntime::unmetered(self.engine.clone(), plugin, env, self.budget.clone())
    }

    /// Give `plugin` the environment of a channel.
    pub fn bind(&self, plugin: Arc<Plugin>, env: Arc<ChannelEnv>) -> ChannelRuntime {
        ChannelRuntime::new(self.engine.clone(), plugin, env, self.budget.clone())
    }
}

fn placeholder_info() -> types::PluginInfo {
    types::PluginInfo {
        id: String::new(),
        name: String::new(),
        version: String::new(),
        kind: types::ChannelKind::Other,
        capabilities: Vec::new(),
        config: Vec::new(),
        secrets: Vec::new(),
        outbound_hosts: Vec::new(),
    }
}

fn plugin_clone(plugin: &Plugin) -> Plugin {
    Plugin {
        info: plugin.info.clone(),
        digest: plugin.digest.clone(),
        contract: plugin.contract,
        role: plugin.role.clone(),
        label: plugin.label.clone(),
        pre: plugin.pre.clone(),
        fiberless: plugin.fiberless.clone(),
        webhooks_need_async: std::sync::atomic::AtomicBool::new(
            plugin
                .webhooks_need_async
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    }
}
