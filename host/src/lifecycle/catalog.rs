//! What this instance has loaded: every version it compiled (with its wasm, so it can hand
//! the bytes to the shared registry) and the version serving each of its channels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::ops::config::ChannelConfig;
use crate::runtime::{Limits, Plugin};
use crate::store::plugins::PluginRecord;

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
    /// When it was added.
    pub added_at: Timestamp,
    /// Channels it serves on this instance now.
    pub channels: Vec<String>,
    /// Whether this instance has it compiled (a version added on another instance is
    /// fetched from the shared registry when first activated here).
    pub loaded: bool,
    /// Whether a signature came with it (checked at activation against
    /// `[admin] signing_keys`).
    pub signed: bool,
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

/// A compiled version.
pub(super) struct Version {
    pub plugin: Arc<Plugin>,
    pub wasm: Arc<Vec<u8>>,
    pub source: String,
    pub added_at: Timestamp,
    /// Whether the shared registry has it (put once, then known).
    pub shared: bool,
    /// The signature that came with its upload (base64), if any.
    pub signature: Option<String>,
    /// Whether activating it is subject to `[admin] signing_keys`: uploads are, the
    /// operator's configured files are not.
    pub needs_signature: bool,
}

impl Version {
    /// Its record for the shared registry.
    pub fn record(&self) -> PluginRecord {
        PluginRecord {
            digest: self.plugin.digest.clone(),
            name: self.plugin.info.id.clone(),
            version: self.plugin.info.version.clone(),
            world: world(&self.plugin),
            size: self.wasm.len(),
            source: self.source.clone(),
            added_at: self.added_at,
            signature: self.signature.clone(),
        }
    }
}

/// The version serving one channel here.
#[derive(Debug, Clone)]
pub(super) struct Active {
    pub digest: String,
    pub since: Timestamp,
    /// Earlier digests, oldest first (rollback returns to the last).
    pub history: Vec<String>,
}

/// Everything this instance has loaded and serves.
#[derive(Default)]
pub(super) struct Catalog {
    pub versions: BTreeMap<String, Version>,
    pub active: HashMap<String, Active>,
    /// The shared registry revision last applied in full (0: none).
    pub applied: u64,
}

impl Catalog {
    /// The listing of one loaded version.
    pub fn view(&self, digest: &str) -> Option<VersionView> {
        let version = self.versions.get(digest)?;
        let record = version.record();
        Some(record_view(record, self.channels_using(digest), true))
    }

    /// The channels served here by `digest`.
    pub fn channels_using(&self, digest: &str) -> Vec<String> {
        let mut channels: Vec<String> = self
            .active
            .iter()
            .filter(|(_, active)| active.digest == digest)
            .map(|(channel, _)| channel.clone())
            .collect();
        channels.sort();
        channels
    }

    /// The listing of what serves `channel`.
    pub fn active_view(
        &self,
        configs: &HashMap<String, ChannelConfig>,
        channel: &str,
    ) -> Option<ActiveView> {
        let active = self.active.get(channel)?;
        let version = self.versions.get(&active.digest)?;
        Some(ActiveView {
            channel: channel.to_owned(),
            plugin: version.plugin.label.to_string(),
            digest: active.digest.clone(),
            active_since: active.since,
            previous: active.history.iter().rev().cloned().collect(),
            limits: configs.get(channel).map(|config| config.limits.clone()),
        })
    }
}

/// The listing of a version from its record.
pub(super) fn record_view(
    record: PluginRecord,
    channels: Vec<String>,
    loaded: bool,
) -> VersionView {
    VersionView {
        name: record.name,
        version: record.version,
        digest: record.digest,
        world: record.world,
        size: record.size,
        source: record.source,
        added_at: record.added_at,
        channels,
        loaded,
        signed: record.signature.is_some(),
    }
}

/// The world a plugin was built against, as listed.
pub(super) fn world(plugin: &Plugin) -> String {
    format!("omnigate:channel/channel@{}", plugin.contract)
}
