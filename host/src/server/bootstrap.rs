//! Build the [`App`] from a [`Config`]: runtime, store, delivery, pipeline, and every
//! configured channel's plugin loaded, checked and bound.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::app::App;
use crate::delivery::destination::ReceiptBook;
use crate::delivery::{Delivery, SubscriptionConfig};
use crate::lifecycle::destination::DestinationBinder;
use crate::lifecycle::{self, Lifecycle, Target};
use crate::ops::config::Config;
use crate::pipeline::Pipeline;
use crate::pipeline::receipts::StoredReceipts;
use crate::runtime::{LoadError, Plugin, Registry, Runtime, RuntimeSettings};
use crate::store::ContextStore;

/// How long start-up waits for the shared plugin registry.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Delivery could not start.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    /// A channel's plugin could not be loaded.
    #[error("channel `{channel}`: plugin {path}: {source}")]
    Plugin {
        /// The channel.
        channel: String,
        /// The plugin file.
        path: String,
        /// Why.
        source: LoadError,
    },
    /// A destination's plugin could not be loaded.
    #[error("destination `{destination}`: plugin {path}: {source}")]
    DestinationPlugin {
        /// The destination.
        destination: String,
        /// The plugin file.
        path: String,
        /// Why.
        source: LoadError,
    },
    /// A channel cannot be served by its plugin (missing configuration…).
    #[error(transparent)]
    Channel(#[from] crate::lifecycle::BindError),
    /// Something else in the configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `[server] public_url` is not a usable base URL.
    #[error(transparent)]
    PublicUrl(#[from] crate::ingress::PublicUrlError),
}

/// Build the application described by `config`.
pub async fn build(config: Config) -> Result<Arc<App>, BootError> {
    crate::metrics::spawn_upkeep();
    crate::metrics::set_stage_sample(config.metrics.stage_sample);
    let public_url = config.server.public_url()?;
    let runtime = Arc::new(Runtime::new(&RuntimeSettings {
        cache_dir: config.plugins.cache_dir.clone(),
        engine: Default::default(),
        allow_networks: config.plugins.allow_networks.clone(),
        budget: config.plugins.budget(),
    })?);
    let tls = config.store.tls()?;
    let store =
        crate::store::open_with_tls(&config.store.url, config.store.message_retention, &tls)?;
    let registry = Arc::new(Registry::new());
    let channels = Arc::new(ArcSwap::from_pointee(HashMap::new()));
    let upload_dir = config
        .plugins
        .cache_dir
        .as_ref()
        .map(|dir| dir.join("uploads"));
    let shared = crate::store::open_plugins_with_tls(&config.store.url, &tls)?;
    let lifecycle = Lifecycle::new(
        runtime.clone(),
        registry.clone(),
        channels.clone(),
        &config.channels,
        upload_dir,
        shared,
    )
    .require_same_kind(config.admin.require_same_kind)
    .signing(config.admin.signing_policy().map_err(BootError::Config)?);
    let mut files: HashMap<PathBuf, Vec<Target>> = HashMap::new();
    let (lifecycle, destinations) =
        destinations(lifecycle, &runtime, &config, &store, &mut files).await?;
    let mut subscriptions = config.subscriptions.clone();
    subscriptions.extend(destinations);
    let delivery = Delivery::open(
        config.delivery.clone(),
        subscriptions,
        &config.store.url,
        &tls,
    )
    .await?;
    let pipeline = Pipeline::new(
        store,
        delivery.clone(),
        config.pipeline.clone(),
        config.outcomes.clone(),
        channels.clone(),
    )
    .map_err(BootError::Config)?;
    let lifecycle = Arc::new(lifecycle);
    let mut loaded: HashMap<PathBuf, Arc<Plugin>> = HashMap::new();
    for channel in &config.channels {
        let path = channel.plugin_path(&config.plugins.dir);
        files
            .entry(path.clone())
            .or_default()
            .push(Target::Channel(channel.id.clone()));
        let plugin = match loaded.get(&path) {
            Some(plugin) => plugin.clone(),
            None => {
                let plugin = load(&runtime, &lifecycle, &path).await.map_err(|source| {
                    BootError::Plugin {
                        channel: channel.id.clone(),
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                loaded.insert(path.clone(), plugin.clone());
                plugin
            }
        };
        let bound = lifecycle::bind(&runtime, channel, plugin.clone())?;
        lifecycle.install(bound);
        lifecycle
            .mark_active(&Target::Channel(channel.id.clone()), &plugin)
            .await;
        tracing::info!(channel = %channel.id, plugin = &*plugin.label, digest = %&plugin.digest[..12], "channel ready");
    }
    join_fleet(&lifecycle).await;
    lifecycle::sync::spawn(&lifecycle, config.plugins.reconcile_interval);
    let watch = if config.plugins.watch {
        Some(
            lifecycle::watch::watch(
                lifecycle.clone(),
                &config.plugins.dir,
                files,
                config.plugins.watch_debounce,
            )
            .map_err(|error| BootError::Config(error.to_string()))?,
        )
    } else {
        None
    };
    if config.api.keys.is_empty() {
        tracing::warn!("no [api] keys configured: /v1 answers 401 to everyone");
    }
    let console = config.console.enabled.then(|| {
        if config.console.keys.is_empty() {
            tracing::warn!("no [console] keys configured: nobody can sign in to /console");
        }
        Arc::new(crate::console::session::Sessions::with_limit(
            config
                .console
                .keys
                .iter()
                .map(|key| key.secret.clone())
                .collect(),
            config.console.session_ttl,
            config.console.sign_in_attempts,
            config.console.sign_in_window,
        ))
    });
    let app = Arc::new(App {
        console,
        runtime,
        registry,
        channels,
        pipeline: Arc::new(pipeline),
        delivery,
        api_keys: config.api.keys.into_iter().map(|key| key.secret).collect(),
        admin_keys: config
            .admin
            .keys
            .into_iter()
            .map(|key| key.secret)
            .collect(),
        metrics_keys: config
            .metrics
            .keys
            .into_iter()
            .map(|key| key.secret)
            .collect(),
        max_plugin_bytes: config.admin.max_plugin_bytes,
        lifecycle,
        plugin_watch: watch,
        identity: config.identity,
        request_timeout: config.server.request_timeout,
        public_url,
        plugin_errors: crate::runtime::RecentErrors::default(),
    });
    crate::pipeline::sweeper::spawn(
        Arc::downgrade(&app.pipeline),
        app.channels.clone(),
        config.store.sweep_interval,
        config.store.contact_retention,
    );
    Ok(app)
}

/// Every `[[destinations]]` entry's plugin loaded, bound and handed to `lifecycle` (which
/// swaps later versions in): the subscriptions delivery runs for them, their receipts
/// kept in `store`. Their files join `files`, for the directory watch.
async fn destinations(
    mut lifecycle: Lifecycle,
    runtime: &Runtime,
    config: &Config,
    store: &Arc<dyn ContextStore>,
    files: &mut HashMap<PathBuf, Vec<Target>>,
) -> Result<(Lifecycle, Vec<SubscriptionConfig>), BootError> {
    let receipts: Arc<dyn ReceiptBook> = Arc::new(StoredReceipts::new(store.clone()));
    let mut subscriptions = Vec::with_capacity(config.destinations.len());
    for destination in &config.destinations {
        let path = destination.plugin_path(&config.plugins.dir);
        let plugin = load(runtime, &lifecycle, &path).await.map_err(|source| {
            BootError::DestinationPlugin {
                destination: destination.id.clone(),
                path: path.display().to_string(),
                source,
            }
        })?;
        let binder = DestinationBinder::new(destination)?;
        let (subscription, target) = binder
            .subscribe(runtime, plugin.clone(), receipts.clone())
            .await?;
        let key = Target::Destination(destination.id.clone());
        lifecycle.mark_active(&key, &plugin).await;
        files.entry(path).or_default().push(key);
        lifecycle = lifecycle.destination(binder, target);
        tracing::info!(destination = %destination.id, plugin = &*plugin.label, digest = %&plugin.digest[..12], "destination ready");
        subscriptions.push(subscription);
    }
    Ok((lifecycle, subscriptions))
}

/// Load a configured plugin file and record it as a known version.
async fn load(
    runtime: &Runtime,
    lifecycle: &Lifecycle,
    path: &std::path::Path,
) -> Result<Arc<Plugin>, LoadError> {
    let wasm = tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let plugin = runtime.load_bytes(wasm.clone()).await?;
    lifecycle
        .insert(plugin.clone(), wasm, &path.display().to_string())
        .await;
    Ok(plugin)
}

/// Serve what the fleet activated (versions activated through `/admin` on any instance
/// outlive restarts) instead of the configured files. Bounded: with the store down the
/// configured files serve, and the reconcile loop catches up once it answers.
async fn join_fleet(lifecycle: &Lifecycle) {
    match tokio::time::timeout(JOIN_TIMEOUT, lifecycle.reconcile()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(changed)) => {
            tracing::info!(
                changed,
                "channels serve the versions activated for the fleet"
            )
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "shared plugin registry unreachable at start; channels serve their configured files until it answers")
        }
        Err(_) => tracing::warn!(
            "shared plugin registry slow at start; channels serve their configured files until it answers"
        ),
    }
}
