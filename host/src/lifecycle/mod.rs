//! Plugin lifecycle: the versions this gateway knows, which one serves each channel, and
//! the actions that change it (add, validate, activate, roll back) without a restart.
//!
//! Swaps never stop traffic: a new version is compiled, checked, described, bound to the
//! channel and its first instance created *before* any lock of the request path is
//! touched; then the registry entry is replaced atomically. Calls in flight hold the old
//! version's `Arc` and finish on it; the next call gets the new one. Lifecycle actions
//! (admin, directory watch, fleet reconcile) are serialized by one async mutex that the
//! request path never touches.
//!
//! Destination plugins follow the same lifecycle: a destination is a [`Target`] like a
//! channel, its version swapped inside the [`destination::PluginDestination`] that
//! delivery holds.
//!
//! The fleet shares one registry in the context store ([`crate::store::plugins`]): every
//! added version's wasm and record, and each channel's activation with its history. An
//! activation here is a compare-and-set there; the other instances hear it announced (or
//! find it on their periodic reconcile, [`sync`]) and install the same version.

pub mod binding;
mod catalog;
pub mod destination;
pub mod signing;
pub mod sync;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use tokio::sync::Mutex;

pub use binding::{BindError, Bound, bind, capability_name, kind_name, warm};
pub use catalog::{ActiveView, VersionView};
pub use signing::{SignatureError, SigningPolicy};

use crate::ops::config::ChannelConfig;
use crate::pipeline::ChannelMeta;
use crate::runtime::{ChannelRuntime, LoadError, Plugin, Registry, Runtime};
use crate::store::StoreError;
use crate::store::plugins::{Activation, Activations, PluginRecord, PluginRegistry};
use catalog::{Active, Catalog, Version, record_view};
use destination::{DestinationBinder, PluginDestination};

/// The `source` of versions uploaded through the API.
pub const UPLOAD: &str = "upload";
/// The `source` of versions fetched from the shared registry.
const FROM_REGISTRY: &str = "registry";
/// How many earlier versions a channel's history keeps for rollbacks.
const HISTORY: usize = 20;

/// What a lifecycle action is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A `[[channels]]` entry, by id.
    Channel(String),
    /// A `[[destinations]]` entry, by id.
    Destination(String),
}

/// The prefix of a destination's key; ids cannot contain `:`, so keys never collide.
const DESTINATION_KEY: &str = "destination:";

impl Target {
    /// Its key in the shared registry, the catalog and the listings: the channel id, or
    /// `destination:<id>`.
    pub fn key(&self) -> String {
        match self {
            Self::Channel(id) => id.clone(),
            Self::Destination(id) => format!("{DESTINATION_KEY}{id}"),
        }
    }

    /// The target a key names.
    pub fn from_key(key: &str) -> Self {
        match key.strip_prefix(DESTINATION_KEY) {
            Some(id) => Self::Destination(id.to_owned()),
            None => Self::Channel(key.to_owned()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Channel(id) => write!(f, "channel `{id}`"),
            Self::Destination(id) => write!(f, "destination `{id}`"),
        }
    }
}

/// A configured destination: how to bind its versions, and what delivery holds.
struct DestinationSlot {
    binder: DestinationBinder,
    target: Arc<PluginDestination>,
}

/// A target's configuration, as a lifecycle action reads it.
#[derive(Clone, Copy)]
enum Setting<'a> {
    Channel(&'a ChannelConfig),
    Destination(&'a DestinationSlot),
}

/// A version bound to a target and warmed, ready to swap in.
enum Prepared<'a> {
    Channel(Bound),
    Destination(&'a DestinationSlot, Arc<ChannelRuntime>),
}

impl Setting<'_> {
    fn key(&self) -> String {
        match self {
            Self::Channel(config) => config.id.clone(),
            Self::Destination(slot) => Target::Destination(slot.binder.id().to_owned()).key(),
        }
    }
}

impl Prepared<'_> {
    fn plugin(&self) -> Arc<Plugin> {
        match self {
            Self::Channel(bound) => bound.runtime.plugin.clone(),
            Self::Destination(_, runtime) => runtime.plugin.clone(),
        }
    }
}

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
    /// No destination with this id is configured.
    #[error("no destination `{0}` is configured")]
    UnknownDestination(String),
    /// Rollback asked with no earlier version.
    #[error("{0} has no earlier version to roll back to")]
    NothingToRollBack(Target),
    /// The shared registry could not answer, or changed meanwhile
    /// ([`StoreError::Conflict`]).
    #[error("shared plugin registry: {0}")]
    Registry(#[from] StoreError),
    /// `[admin] require_same_kind`: the version is for another kind of channel.
    #[error("channel `{channel}` is a `{serving}` channel; this version is a `{wanted}` plugin")]
    KindMismatch {
        /// The channel.
        channel: String,
        /// The kind its serving plugin declares.
        serving: String,
        /// The kind the version declares.
        wanted: String,
    },
    /// `[admin] signing_keys`: the version is unsigned, or badly signed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The registry's wasm for a digest does not hash to it.
    #[error("the shared registry's wasm for `{expected}` hashes to `{found}`")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// What the bytes hash to.
        found: String,
    },
}

/// The plugin lifecycle of one gateway.
pub struct Lifecycle {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    channels: Arc<ArcSwap<HashMap<String, ChannelMeta>>>,
    configs: HashMap<String, ChannelConfig>,
    destinations: HashMap<String, DestinationSlot>,
    upload_dir: Option<PathBuf>,
    shared: Arc<dyn PluginRegistry>,
    instance: String,
    catalog: Mutex<Catalog>,
    /// Refuse activating a version whose declared `kind` differs from the channel's.
    same_kind: bool,
    /// Which uploaded versions may be activated (`[admin] signing_keys`).
    signing: SigningPolicy,
}

impl Lifecycle {
    /// A lifecycle over `registry` and the pipeline's channel facts, for the configured
    /// `configs`, sharing versions and activations through `shared`. Versions uploaded at
    /// run time are also written to `upload_dir`, if set.
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        channels: Arc<ArcSwap<HashMap<String, ChannelMeta>>>,
        configs: &[ChannelConfig],
        upload_dir: Option<PathBuf>,
        shared: Arc<dyn PluginRegistry>,
    ) -> Self {
        Self {
            runtime,
            registry,
            channels,
            configs: configs
                .iter()
                .map(|config| (config.id.clone(), config.clone()))
                .collect(),
            destinations: HashMap::new(),
            upload_dir,
            shared,
            instance: format!("pid{}-{}", std::process::id(), ulid::Ulid::generate()),
            catalog: Mutex::default(),
            same_kind: false,
            signing: SigningPolicy::default(),
        }
    }

    /// `[admin] signing_keys`: uploaded versions are activated (here, through the API,
    /// and on the other instances when they reconcile) only when `policy` accepts their
    /// signature. Versions from configured files are not checked.
    pub fn signing(mut self, policy: SigningPolicy) -> Self {
        self.signing = policy;
        self
    }

    /// Serve the destination `binder` configures with `target`, which delivery holds
    /// (bound at start with its configured version; see [`Lifecycle::mark_active`]).
    pub fn destination(
        mut self,
        binder: DestinationBinder,
        target: Arc<PluginDestination>,
    ) -> Self {
        self.destinations
            .insert(binder.id().to_owned(), DestinationSlot { binder, target });
        self
    }

    /// `[admin] require_same_kind`: activations through the API must keep the channel's
    /// kind (a web chat channel only takes web chat plugins). Rollbacks and versions the
    /// fleet activated elsewhere are not checked again here.
    pub fn require_same_kind(mut self, on: bool) -> Self {
        self.same_kind = on;
        self
    }

    /// Compile and check `bytes` without keeping them.
    pub async fn validate(&self, bytes: Vec<u8>) -> Result<Arc<Plugin>, LifecycleError> {
        Ok(self.runtime.load_bytes(bytes).await?)
    }

    /// Add a version (compiled and checked; nothing activated) here and to the shared
    /// registry. Adding the same bytes twice is harmless and returns the same digest.
    pub async fn add(&self, bytes: Vec<u8>, source: &str) -> Result<VersionView, LifecycleError> {
        self.add_signed(bytes, source, None).await
    }

    /// [`Lifecycle::add`] with the signature that came with the upload. A signature that
    /// the configured keys do not verify is refused now rather than at activation.
    pub async fn add_signed(
        &self,
        bytes: Vec<u8>,
        source: &str,
        signature: Option<String>,
    ) -> Result<VersionView, LifecycleError> {
        let wasm = Arc::new(bytes);
        let plugin = self.runtime.load_bytes(wasm.as_ref().clone()).await?;
        if signature.is_some() {
            self.signing.check(&plugin.digest, signature.as_deref())?;
        }
        if source == UPLOAD
            && let Some(dir) = &self.upload_dir
        {
            keep_upload(dir, &plugin.digest, &wasm).await;
        }
        let digest = plugin.digest.clone();
        let mut catalog = self.catalog.lock().await;
        let version = remember(&mut catalog, plugin, wasm, source);
        if version.signature.is_none() {
            // Bytes uploaded again with a signature: keep it (the shared registry keeps
            // the record it got first; see docs/security.md).
            version.signature = signature;
        }
        self.share(&mut catalog, &digest).await?;
        catalog
            .view(&digest)
            .ok_or(LifecycleError::UnknownVersion(digest))
    }

    /// Record an already loaded plugin and its wasm (the configured files at start-up);
    /// it reaches the shared registry when an activation needs it there.
    pub async fn insert(&self, plugin: Arc<Plugin>, wasm: Vec<u8>, source: &str) {
        let mut catalog = self.catalog.lock().await;
        remember(&mut catalog, plugin, Arc::new(wasm), source);
    }

    /// Make version `digest` serve `target` on every instance. The version it replaces
    /// is pushed on the target's history for [`Lifecycle::rollback`].
    pub async fn activate(
        &self,
        target: &Target,
        digest: &str,
    ) -> Result<ActiveView, LifecycleError> {
        let setting = self.setting(target)?;
        let key = target.key();
        let mut catalog = self.catalog.lock().await;
        if let (true, Target::Channel(channel)) = (self.same_kind, target) {
            self.check_kind(&catalog, channel, digest)?;
        }
        let record = self.shared.activations().await?.channels.remove(&key);
        let serving = catalog.active.get(&key).map(|active| active.digest.clone());
        let current = record
            .as_ref()
            .map(|record| record.digest.clone())
            .or_else(|| serving.clone());
        if current.as_deref() == Some(digest) && serving.as_deref() == Some(digest) {
            return self.view(&catalog, &key);
        }
        let expected = record.as_ref().map(|record| record.digest.clone());
        let mut history = record.map(|record| record.history).unwrap_or_default();
        history.extend(current.filter(|current| current != digest));
        if history.len() > HISTORY {
            history.drain(..history.len() - HISTORY);
        }
        let activation = self.activation(digest, history);
        self.apply(&mut catalog, setting, expected.as_deref(), activation)
            .await
    }

    /// Refuses `digest` for `channel` when the kinds their plugins declare differ.
    fn check_kind(
        &self,
        catalog: &Catalog,
        channel: &str,
        digest: &str,
    ) -> Result<(), LifecycleError> {
        let wanted = catalog
            .versions
            .get(digest)
            .map(|version| kind_name(version.plugin.info.kind).to_owned());
        let serving = self
            .channels
            .load()
            .get(channel)
            .map(|meta| meta.kind.clone());
        match (wanted, serving) {
            (Some(wanted), Some(serving)) if wanted != serving => {
                Err(LifecycleError::KindMismatch {
                    channel: channel.to_owned(),
                    serving,
                    wanted,
                })
            }
            _ => Ok(()),
        }
    }

    /// Return `target`, on every instance, to the version before its last activation.
    pub async fn rollback(&self, target: &Target) -> Result<ActiveView, LifecycleError> {
        let setting = self.setting(target)?;
        let mut catalog = self.catalog.lock().await;
        let nothing = || LifecycleError::NothingToRollBack(target.clone());
        let record = self
            .shared
            .activations()
            .await?
            .channels
            .remove(&target.key())
            .ok_or_else(nothing)?;
        let mut history = record.history;
        let previous = history.pop().ok_or_else(nothing)?;
        let activation = self.activation(&previous, history);
        self.apply(&mut catalog, setting, Some(&record.digest), activation)
            .await
    }

    /// Install here whatever the shared registry says each configured channel and
    /// destination should serve. Returns how many channels changed; a version that cannot be installed here
    /// is logged and tried again on the next reconcile (the current one keeps serving).
    pub async fn reconcile(&self) -> Result<usize, LifecycleError> {
        let activations = self.shared.activations().await?;
        self.fetch_missing(&activations).await;
        let mut catalog = self.catalog.lock().await;
        let mut changed = 0;
        for (key, activation) in &activations.channels {
            let Ok(setting) = self.setting(&Target::from_key(key)) else {
                continue; // a channel or destination of other instances
            };
            if let Some(active) = catalog.active.get_mut(key)
                && active.digest == activation.digest
            {
                active.history.clone_from(&activation.history);
                continue;
            }
            match self
                .prepare(&mut catalog, setting, &activation.digest)
                .await
            {
                Ok(prepared) => {
                    self.serve(&mut catalog, key, prepared, activation);
                    crate::metrics::plugin_sync("applied");
                    changed += 1;
                }
                Err(error) => {
                    crate::metrics::plugin_sync("failed");
                    tracing::warn!(target = key, digest = %short(&activation.digest), %error,
                        "fleet activation cannot be installed here; the current version keeps serving");
                }
            }
        }
        catalog.applied = catalog.applied.max(activations.revision);
        crate::metrics::plugin_registry_revision(catalog.applied);
        Ok(changed)
    }

    /// Every known version (loaded here or only in the shared registry), newest first.
    pub async fn versions(&self) -> Vec<VersionView> {
        let shared = self.shared.versions().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "shared plugin registry unreachable; listing this instance's versions");
            Vec::new()
        });
        let catalog = self.catalog.lock().await;
        let mut all: Vec<VersionView> = catalog
            .versions
            .keys()
            .filter_map(|digest| catalog.view(digest))
            .collect();
        all.extend(
            shared
                .into_iter()
                .filter(|record| !catalog.versions.contains_key(&record.digest))
                .map(|record| record_view(record, Vec::new(), false)),
        );
        all.sort_by_key(|version| std::cmp::Reverse(version.added_at));
        all
    }

    /// Which version serves each channel and destination here.
    pub async fn active(&self) -> Vec<ActiveView> {
        let catalog = self.catalog.lock().await;
        let mut all: Vec<ActiveView> = catalog
            .active
            .keys()
            .filter_map(|key| catalog.active_view(&self.configs, key))
            .collect();
        all.sort_by(|a, b| a.channel.cmp(&b.channel));
        all
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

    /// Record that `plugin` serves `target` (start-up, already installed).
    pub async fn mark_active(&self, target: &Target, plugin: &Arc<Plugin>) {
        let channel = &target.key();
        let mut catalog = self.catalog.lock().await;
        catalog.active.insert(
            channel.clone(),
            Active {
                digest: plugin.digest.clone(),
                since: Timestamp::now(),
                history: Vec::new(),
            },
        );
        publish_active(channel, plugin, true);
    }

    /// The configuration of `target`, if this instance serves it.
    fn setting(&self, target: &Target) -> Result<Setting<'_>, LifecycleError> {
        match target {
            Target::Channel(id) => self
                .configs
                .get(id)
                .map(Setting::Channel)
                .ok_or_else(|| LifecycleError::UnknownChannel(id.clone())),
            Target::Destination(id) => self
                .destinations
                .get(id)
                .map(Setting::Destination)
                .ok_or_else(|| LifecycleError::UnknownDestination(id.clone())),
        }
    }

    fn activation(&self, digest: &str, history: Vec<String>) -> Activation {
        Activation {
            digest: digest.to_owned(),
            since: Timestamp::now(),
            history,
            by: self.instance.clone(),
        }
    }

    fn view(&self, catalog: &Catalog, key: &str) -> Result<ActiveView, LifecycleError> {
        catalog
            .active_view(&self.configs, key)
            .ok_or_else(|| LifecycleError::UnknownChannel(key.to_owned()))
    }

    /// Prepare the version here, publish the activation (compare-and-set on `expected`),
    /// then swap. A refusal at any step leaves every instance as it was.
    async fn apply(
        &self,
        catalog: &mut Catalog,
        setting: Setting<'_>,
        expected: Option<&str>,
        activation: Activation,
    ) -> Result<ActiveView, LifecycleError> {
        let key = setting.key();
        let prepared = self.prepare(catalog, setting, &activation.digest).await?;
        // Every version the record names must be fetchable by the other instances.
        for digest in activation.history.iter().chain([&activation.digest]) {
            self.share(catalog, digest).await?;
        }
        let revision = self.shared.activate(&key, expected, &activation).await?;
        self.serve(catalog, &key, prepared, &activation);
        tracing::info!(target = %key, digest = %short(&activation.digest), revision, "activation published to the fleet");
        self.view(catalog, &key)
    }

    /// Everything that can fail or take time before a swap: the version loaded (fetched
    /// from the shared registry if this instance never saw it), bound and warmed.
    async fn prepare<'a>(
        &self,
        catalog: &mut Catalog,
        setting: Setting<'a>,
        digest: &str,
    ) -> Result<Prepared<'a>, LifecycleError> {
        let plugin = self.ensure(catalog, digest).await?;
        self.check_signature(catalog, digest)?;
        Ok(match setting {
            Setting::Channel(config) => {
                let bound = bind(&self.runtime, config, plugin)?;
                warm(&bound).await?;
                Prepared::Channel(bound)
            }
            Setting::Destination(slot) => {
                Prepared::Destination(slot, slot.binder.bind(&self.runtime, plugin).await?)
            }
        })
    }

    /// Refuses a loaded version that `[admin] signing_keys` does not let serve.
    fn check_signature(&self, catalog: &Catalog, digest: &str) -> Result<(), LifecycleError> {
        match catalog.versions.get(digest) {
            Some(version) if version.needs_signature => {
                Ok(self.signing.check(digest, version.signature.as_deref())?)
            }
            _ => Ok(()),
        }
    }

    /// Fetch and compile, before the catalog is locked, the versions `activations` names
    /// for this instance's channels that it has not loaded: a compile takes hundreds of
    /// milliseconds, and the lock also serves activations and listings. A version that
    /// fails here fails again in `ensure`, which reports it.
    async fn fetch_missing(&self, activations: &Activations) {
        let missing: Vec<String> = {
            let catalog = self.catalog.lock().await;
            let mut missing: Vec<String> = activations
                .channels
                .iter()
                .filter(|(key, activation)| {
                    self.setting(&Target::from_key(key)).is_ok()
                        && !catalog.versions.contains_key(&activation.digest)
                })
                .map(|(_, activation)| activation.digest.clone())
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        for digest in missing {
            if let Ok(fetched) = self.fetch(&digest).await {
                let mut catalog = self.catalog.lock().await;
                remember_fetched(&mut catalog, fetched);
            }
        }
    }

    /// The loaded version `digest`, fetched and compiled (or taken from the compiled
    /// cache) when only the shared registry has it.
    async fn ensure(
        &self,
        catalog: &mut Catalog,
        digest: &str,
    ) -> Result<Arc<Plugin>, LifecycleError> {
        if let Some(version) = catalog.versions.get(digest) {
            return Ok(version.plugin.clone());
        }
        let fetched = self.fetch(digest).await?;
        Ok(remember_fetched(catalog, fetched).plugin.clone())
    }

    /// Version `digest` from the shared registry, compiled (or taken from the compiled
    /// cache) and checked against its digest.
    async fn fetch(&self, digest: &str) -> Result<Fetched, LifecycleError> {
        let wasm = self
            .shared
            .wasm(digest)
            .await?
            .ok_or_else(|| LifecycleError::UnknownVersion(digest.to_owned()))?;
        let wasm = Arc::new(wasm);
        let plugin = self.runtime.load_bytes(wasm.as_ref().clone()).await?;
        if plugin.digest != digest {
            return Err(LifecycleError::DigestMismatch {
                expected: digest.to_owned(),
                found: plugin.digest.clone(),
            });
        }
        let record = self
            .shared
            .versions()
            .await?
            .into_iter()
            .find(|record| record.digest == digest);
        Ok(Fetched {
            plugin,
            wasm,
            record,
        })
    }

    /// Put version `digest` (if loaded here) in the shared registry, once.
    async fn share(&self, catalog: &mut Catalog, digest: &str) -> Result<(), LifecycleError> {
        let Some(version) = catalog.versions.get_mut(digest) else {
            return Ok(()); // known only to the registry: it is there already
        };
        if !version.shared {
            self.shared
                .put_version(&version.record(), &version.wasm)
                .await?;
            version.shared = true;
        }
        Ok(())
    }

    /// Swap `prepared` in and record `activation` as what serves `key` here.
    fn serve(
        &self,
        catalog: &mut Catalog,
        key: &str,
        prepared: Prepared<'_>,
        activation: &Activation,
    ) {
        let channel = key.to_owned();
        let plugin = prepared.plugin();
        match prepared {
            Prepared::Channel(bound) => self.install(bound),
            Prepared::Destination(slot, runtime) => slot.target.swap(runtime),
        }
        let previous = catalog.active.insert(
            channel.clone(),
            Active {
                digest: activation.digest.clone(),
                since: activation.since,
                history: activation.history.clone(),
            },
        );
        if let Some(previous) = previous
            && previous.digest != activation.digest
            && let Some(old) = catalog.versions.get(&previous.digest)
        {
            publish_active(&channel, &old.plugin, false);
        }
        publish_active(&channel, &plugin, true);
        tracing::info!(channel, plugin = &*plugin.label, digest = %short(&activation.digest), by = %activation.by, "plugin version active");
    }
}

/// A version fetched from the shared registry, with its record (none: the registry has
/// the wasm but lists no record for it).
struct Fetched {
    plugin: Arc<Plugin>,
    wasm: Arc<Vec<u8>>,
    record: Option<PluginRecord>,
}

/// Add a version fetched from the shared registry. It needs a signature unless its record
/// says it came from a configured file; a version without a record is treated as an
/// upload (failing closed).
fn remember_fetched(catalog: &mut Catalog, fetched: Fetched) -> &mut Version {
    let Fetched {
        plugin,
        wasm,
        record,
    } = fetched;
    let needs_signature = record.as_ref().is_none_or(|record| record.source == UPLOAD);
    let signature = record.and_then(|record| record.signature);
    let version = remember(catalog, plugin, wasm, FROM_REGISTRY);
    version.shared = true;
    if version.source == FROM_REGISTRY {
        version.needs_signature = needs_signature;
        version.signature = version.signature.take().or(signature);
    }
    version
}

/// Add a loaded version to the catalog (kept as first seen when already there).
fn remember<'a>(
    catalog: &'a mut Catalog,
    plugin: Arc<Plugin>,
    wasm: Arc<Vec<u8>>,
    source: &str,
) -> &'a mut Version {
    catalog
        .versions
        .entry(plugin.digest.clone())
        .or_insert_with(|| Version {
            plugin,
            wasm,
            source: source.to_owned(),
            added_at: Timestamp::now(),
            shared: false,
            signature: None,
            // Uploads are subject to `[admin] signing_keys`, configured files are not;
            // `remember_fetched` sets it for versions from the registry from their record.
            needs_signature: source == UPLOAD || source == FROM_REGISTRY,
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

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn target_keys_round_trip_and_never_collide() {
        let channel = Target::Channel("meta".into());
        let destination = Target::Destination("meta".into());
        assert_eq!(channel.key(), "meta");
        assert_eq!(destination.key(), "destination:meta");
        assert_ne!(channel.key(), destination.key());
        for target in [channel, destination] {
            assert_eq!(Target::from_key(&target.key()), target);
        }
        assert_eq!(
            Target::Destination("meta".into()).to_string(),
            "destination `meta`"
        );
    }
}
