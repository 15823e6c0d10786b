//! Plugin lifecycle: the versions this gateway knows, which one serves each channel, and
//! the actions that change it (add, validate, activate, roll back) without a restart.
//!
//! Swaps never stop traffic: a new version is compiled, checked, described, bound to the
//! channel and its first instance created *before* any lock is taken; then the registry
//! entry is replaced atomically. Calls in flight hold the old version's `Arc` and finish on
//! it; the next call gets the new one. Admin actions are serialized by one async mutex
//! that the request path never touches.
//!
//! This instance keeps the catalog in memory; versions added at run time are written to
//! `upload_dir` by digest so an operator can find them. Sharing activations between
//! instances through the context store is the multi-instance step (see `docs/plugins.md`).

pub mod binding;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::Mutex;

pub use binding::{BindError, Bound, bind, capability_name, kind_name, warm};

use crate::ops::config::ChannelConfig;
use crate::pipeline::ChannelMeta;
use crate::runtime::{Limits, LoadError, Plugin, Registry, Runtime};

/// The `source` of versions uploaded through the API.
pub const UPLOAD: &str = "upload";

/// Why a lifecycle action was refused. The active version keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The wasm was refused: not a component, wrong world or version, compile failure,
    /// `describe` trapped… The message is the exact reason.
    #[error("plugin refused: {0}")]
    Refused(#[from] LoadError),
    /// The version cannot serve this channel.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// No version with this digest was added.
    #[error("no plugin version with digest `{0}`")]
    UnknownVersion(String),
    /// No channel with this id is configured.
    #[error("no channel `{0}` is configured")]
    UnknownChannel(String),
    /// Rollback asked with no earlier version.
    #[error("channel `{0}` has no earlier version to roll back to")]
    NothingToRollBack(String),
}

/// One known plugin version, as listed by the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// Plugin id (`webchat`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of the wasm, hex.
    pub digest: String,
    /// The contract (world) version it was built against.
    pub world: String,
    /// Size of the wasm in bytes.
    pub size: usize,
    /// Where it came from (a file path, or `upload`).
    pub source: String,
    /// When this gateway added it.
    pub added_at: Timestamp,
    /// Channels it serves now.
    pub channels: Vec<String>,
}

/// Which version serves a channel, as listed by the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveView {
    /// Channel id.
    pub channel: String,
    /// `id@version` of the active plugin.
    pub plugin: String,
    /// Its digest.
    pub digest: String,
    /// When it became active.
    pub active_since: Timestamp,
    /// Digests a rollback would return to, most recent first.
    pub previous: Vec<String>,
    /// The channel's limits (memory, CPU, body size, inbound rate…).
    pub limits: Option<Limits>,
}

struct Version {
    plugin: Arc<Plugin>,
    size: usize,
    source: String,
    added_at: Timestamp,
}

struct Active {
    digest: String,
    since: Timestamp,
    /// Earlier digests, oldest first (rollback pops the last).
    history: Vec<String>,
}

#[derive(Default)]
struct Catalog {
    versions: BTreeMap<String, Version>,
    active: HashMap<String, Active>,
}

/// The plugin lifecycle of one gateway.
pub struct Lifecycle {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    channels: Arc<ArcSwap<HashMap<String, ChannelMeta>>>,
    configs: HashMap<String, ChannelConfig>,
    upload_dir: Option<PathBuf>,
    catalog: Mutex<Catalog>,
}

impl Lifecycle {
    /// A lifecycle over `registry` and the pipeline's channel facts, for the configured
    /// `configs`. Versions uploaded at run time are written to `upload_dir`, if set.
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        channels: Arc<ArcSwap<HashMap<String, ChannelMeta>>>,
        configs: &[ChannelConfig],
        upload_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            runtime,
            registry,
            channels,
            configs: configs
                .iter()
                .map(|config| (config.id.clone(), config.clone()))
                .collect(),
            upload_dir,
            catalog: Mutex::default(),
        }
    }

    /// Compile and check `bytes` without keeping them.
    pub async fn validate(&self, bytes: Vec<u8>) -> Result<Arc<Plugin>, LifecycleError> {
        Ok(self.runtime.load_bytes(bytes).await?)
    }

    /// Add a version (compiled and checked; nothing activated). Adding the same bytes
    /// twice is harmless and returns the same digest.
    pub async fn add(&self, bytes: Vec<u8>, source: &str) -> Result<VersionView, LifecycleError> {
        let size = bytes.len();
        // Uploads are kept on disk by digest; files from the plugins directory are there.
        let kept = (source == UPLOAD)
            .then(|| self.upload_dir.clone())
            .flatten()
            .map(|dir| (dir, bytes.clone()));
        let plugin = self.runtime.load_bytes(bytes).await?;
        if let Some((dir, bytes)) = kept {
            keep_upload(&dir, &plugin.digest, &bytes).await;
        }
        Ok(self.insert(plugin, size, source).await)
    }

    /// Record an already loaded plugin (the configured files at start-up).
    pub async fn insert(&self, plugin: Arc<Plugin>, size: usize, source: &str) -> VersionView {
        let mut catalog = self.catalog.lock().await;
        let digest = plugin.digest.clone();
        let channels = channels_using(&catalog, &digest);
        let version = catalog.versions.entry(digest.clone()).or_insert(Version {
            plugin,
            size,
            source: source.to_owned(),
            added_at: Timestamp::now(),
        });
        version_view(version, &digest, channels)
    }

    /// Make version `digest` serve `channel`. The previous version stays known for
    /// [`Lifecycle::rollback`].
    pub async fn activate(
        &self,
        channel: &str,
        digest: &str,
    ) -> Result<ActiveView, LifecycleError> {
        let mut catalog = self.catalog.lock().await;
        self.switch(&mut catalog, channel, digest, Push::Yes).await
    }

    /// Return `channel` to the version it had before the last activation.
    pub async fn rollback(&self, channel: &str) -> Result<ActiveView, LifecycleError> {
        let mut catalog = self.catalog.lock().await;
        let previous = catalog
            .active
            .get(channel)
            .and_then(|active| active.history.last().cloned())
            .ok_or_else(|| LifecycleError::NothingToRollBack(channel.to_owned()))?;
        let view = self
            .switch(&mut catalog, channel, &previous, Push::No)
            .await?;
        if let Some(active) = catalog.active.get_mut(channel) {
            active.history.pop();
        }
        Ok(active_view(&catalog, &self.configs, channel).unwrap_or(view))
    }

    /// Every known version, newest first.
    pub async fn versions(&self) -> Vec<VersionView> {
        let catalog = self.catalog.lock().await;
        let mut all: Vec<VersionView> = catalog
            .versions
            .keys()
            .filter_map(|digest| view(&catalog, digest))
            .collect();
        all.sort_by_key(|version| std::cmp::Reverse(version.added_at));
        all
    }

    /// Which version serves each channel.
    pub async fn active(&self) -> Vec<ActiveView> {
        let catalog = self.catalog.lock().await;
        let mut all: Vec<ActiveView> = catalog
            .active
            .keys()
            .filter_map(|channel| active_view(&catalog, &self.configs, channel))
            .collect();
        all.sort_by(|a, b| a.channel.cmp(&b.channel));
        all
    }

    async fn switch(
        &self,
        catalog: &mut Catalog,
        channel: &str,
        digest: &str,
        push: Push,
    ) -> Result<ActiveView, LifecycleError> {
        let config = self
            .configs
            .get(channel)
            .ok_or_else(|| LifecycleError::UnknownChannel(channel.to_owned()))?;
        let plugin = catalog
            .versions
            .get(digest)
            .map(|version| version.plugin.clone())
            .ok_or_else(|| LifecycleError::UnknownVersion(digest.to_owned()))?;
        // Everything that can fail or take time happens before the swap.
        let bound = bind(&self.runtime, config, plugin.clone())?;
        warm(&bound).await?;
        self.install(bound);
        let now = Timestamp::now();
        let previous = catalog.active.insert(
            channel.to_owned(),
            Active {
                digest: digest.to_owned(),
                since: now,
                history: Vec::new(),
            },
        );
        if let Some(previous) = previous {
            let mut history = previous.history;
            if push == Push::Yes && previous.digest != digest {
                history.push(previous.digest.clone());
            }
            if let Some(active) = catalog.active.get_mut(channel) {
                active.history = history;
            }
            if previous.digest != digest
                && let Some(old) = catalog.versions.get(&previous.digest)
            {
                publish_active(channel, &old.plugin, false);
            }
        }
        publish_active(channel, &plugin, true);
        tracing::info!(channel, plugin = &*plugin.label, digest = %short(digest), "plugin version active");
        active_view(catalog, &self.configs, channel)
            .ok_or_else(|| LifecycleError::UnknownChannel(channel.to_owned()))
    }

    /// Serve a bound channel: registry entry and pipeline facts swapped atomically.
    pub fn install(&self, bound: Bound) {
        let id = bound.meta.id.clone();
        self.channels.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(id.clone(), bound.meta.clone());
            next
        });
        self.registry.install(&id, bound.runtime);
    }

    /// Record that `digest` serves `channel` (start-up, already installed).
    pub async fn mark_active(&self, channel: &str, plugin: &Arc<Plugin>) {
        let mut catalog = self.catalog.lock().await;
        catalog.active.insert(
            channel.to_owned(),
            Active {
                digest: plugin.digest.clone(),
                since: Timestamp::now(),
                history: Vec::new(),
            },
        );
        publish_active(channel, plugin, true);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Yes,
    No,
}

fn view(catalog: &Catalog, digest: &str) -> Option<VersionView> {
    let version = catalog.versions.get(digest)?;
    Some(version_view(
        version,
        digest,
        channels_using(catalog, digest),
    ))
}

fn channels_using(catalog: &Catalog, digest: &str) -> Vec<String> {
    let mut channels: Vec<String> = catalog
        .active
        .iter()
        .filter(|(_, active)| active.digest == digest)
        .map(|(channel, _)| channel.clone())
        .collect();
    channels.sort();
    channels
}

fn version_view(version: &Version, digest: &str, channels: Vec<String>) -> VersionView {
    VersionView {
        name: version.plugin.info.id.clone(),
        version: version.plugin.info.version.clone(),
        digest: digest.to_owned(),
        world: format!("omnigate:channel/channel@{}", version.plugin.contract),
        size: version.size,
        source: version.source.clone(),
        added_at: version.added_at,
        channels,
    }
}

fn active_view(
    catalog: &Catalog,
    configs: &HashMap<String, ChannelConfig>,
    channel: &str,
) -> Option<ActiveView> {
    let active = catalog.active.get(channel)?;
    let version = catalog.versions.get(&active.digest)?;
    Some(ActiveView {
        channel: channel.to_owned(),
        plugin: version.plugin.label.to_string(),
        digest: active.digest.clone(),
        active_since: active.since,
        previous: active.history.iter().rev().cloned().collect(),
        limits: configs.get(channel).map(|config| config.limits.clone()),
    })
}

fn publish_active(channel: &str, plugin: &Plugin, active: bool) {
    crate::metrics::plugin_active(
        channel,
        &plugin.info.id,
        &plugin.info.version,
        &plugin.digest,
        active,
    );
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Write an uploaded version to `<dir>/<digest>.wasm` (best effort: the version is
/// already loaded; a failure is logged, not fatal).
async fn keep_upload(dir: &std::path::Path, digest: &str, bytes: &[u8]) {
    let path = dir.join(format!("{digest}.wasm"));
    let written = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(&path, bytes).await
    }
    .await;
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot keep the uploaded plugin on disk");
    }
}
