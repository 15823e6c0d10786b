//! Build the [`App`] from a [`Config`]: runtime, store, delivery, pipeline, and every
//! configured channel's plugin loaded, checked and bound.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::app::App;
use crate::delivery::Delivery;
use crate::ops::config::{ChannelConfig, Config};
use crate::pipeline::{ChannelMeta, Pipeline};
use crate::runtime::types::{ChannelKind, PluginInfo};
use crate::runtime::{ChannelEnv, LoadError, Plugin, Registry, Runtime, RuntimeSettings};

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
    /// A channel lacks configuration its plugin requires.
    #[error("channel `{channel}` ({plugin}): {problem}")]
    Channel {
        /// The channel.
        channel: String,
        /// The plugin.
        plugin: String,
        /// What is missing.
        problem: String,
    },
    /// Something else in the configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Build the application described by `config`.
pub async fn build(config: Config) -> Result<Arc<App>, BootError> {
    let runtime = Arc::new(Runtime::new(&RuntimeSettings {
        cache_dir: config.plugins.cache_dir.clone(),
        engine: Default::default(),
    })?);
    let store = crate::store::open(&config.store.url)?;
    let delivery = Delivery::open(
        config.delivery.clone(),
        config.subscriptions.clone(),
        &config.store.url,
    )
    .await?;
    let pipeline = Pipeline::new(store, delivery.clone(), config.pipeline.clone())
        .map_err(BootError::Config)?;
    let registry = Arc::new(Registry::new());
    let mut metas = HashMap::new();
    let mut loaded: HashMap<PathBuf, Arc<Plugin>> = HashMap::new();
    for channel in &config.channels {
        let path = channel.plugin_path(&config.plugins.dir);
        let plugin = match loaded.get(&path) {
            Some(plugin) => plugin.clone(),
            None => {
                let plugin =
                    runtime
                        .load_file(&path)
                        .await
                        .map_err(|source| BootError::Plugin {
                            channel: channel.id.clone(),
                            path: path.display().to_string(),
                            source,
                        })?;
                loaded.insert(path.clone(), plugin.clone());
                plugin
            }
        };
        check_requirements(channel, &plugin.info)?;
        let env = Arc::new(ChannelEnv {
            channel_id: channel.id.clone(),
            config: channel
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            secrets: channel.secrets.clone(),
            allowed_hosts: channel.allowed_hosts.clone(),
            limits: channel.limits.clone(),
            fetch: runtime.fetch_client(),
        });
        registry.install(&channel.id, Arc::new(runtime.bind(plugin.clone(), env)));
        metas.insert(
            channel.id.clone(),
            ChannelMeta {
                id: channel.id.clone(),
                kind: kind_name(plugin.info.kind).to_owned(),
                reply_window: channel.reply_window,
            },
        );
        tracing::info!(channel = %channel.id, plugin = &*plugin.label, digest = %&plugin.digest[..12], "channel ready");
    }
    if config.api.keys.is_empty() {
        tracing::warn!("no [api] keys configured: /v1 answers 401 to everyone");
    }
    Ok(Arc::new(App {
        runtime,
        registry,
        channels: ArcSwap::from_pointee(metas),
        pipeline: Arc::new(pipeline),
        delivery,
        api_keys: config.api.keys,
    }))
}

/// Every required config key and secret the plugin declares must be configured.
fn check_requirements(channel: &ChannelConfig, info: &PluginInfo) -> Result<(), BootError> {
    let missing_config: Vec<&str> = info
        .config
        .iter()
        .filter(|setting| setting.required && !channel.config.contains_key(&setting.name))
        .map(|setting| setting.name.as_str())
        .collect();
    let missing_secrets: Vec<&str> = info
        .secrets
        .iter()
        .filter(|setting| setting.required && !channel.secrets.contains_key(&setting.name))
        .map(|setting| setting.name.as_str())
        .collect();
    if missing_config.is_empty() && missing_secrets.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if !missing_config.is_empty() {
        problems.push(format!(
            "missing config keys: {}",
            missing_config.join(", ")
        ));
    }
    if !missing_secrets.is_empty() {
        problems.push(format!("missing secrets: {}", missing_secrets.join(", ")));
    }
    Err(BootError::Channel {
        channel: channel.id.clone(),
        plugin: info.id.clone(),
        problem: problems.join("; "),
    })
}

/// The contract name of a capability.
pub fn capability_name(capability: crate::runtime::types::Capability) -> &'static str {
    use crate::runtime::types::Capability as C;
    match capability {
        C::Text => "text",
        C::Media => "media",
        C::Location => "location",
        C::Contacts => "contacts",
        C::Reactions => "reactions",
        C::Edits => "edits",
        C::Deletes => "deletes",
        C::Receipts => "receipts",
        C::Interactive => "interactive",
        C::Templates => "templates",
        C::Referrals => "referrals",
        C::Replies => "replies",
    }
}

/// The contract name of a channel kind, as used in events.
pub fn kind_name(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Whatsapp => "whatsapp",
        ChannelKind::Messenger => "messenger",
        ChannelKind::Instagram => "instagram",
        ChannelKind::Telegram => "telegram",
        ChannelKind::Sms => "sms",
        ChannelKind::Email => "email",
        ChannelKind::Slack => "slack",
        ChannelKind::Webchat => "webchat",
        ChannelKind::Other => "other",
    }
}
