//! Binding a plugin version to a configured channel: requirements checked, environment
//! built from the channel's configuration, one instance warmed before it serves.

use std::sync::Arc;

use crate::ops::config::ChannelConfig;
use crate::pipeline::ChannelMeta;
use crate::runtime::types::{ChannelKind, PluginInfo};
use crate::runtime::{CallError, ChannelEnv, ChannelRuntime, Plugin, Runtime};

/// Why a plugin version cannot serve a channel.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The channel lacks configuration the plugin requires.
    #[error("channel `{channel}` ({plugin}): {problem}")]
    Requirements {
        /// The channel.
        channel: String,
        /// The plugin id.
        plugin: String,
        /// What is missing.
        problem: String,
    },
    /// The first instance could not be created (it trapped or hit a limit on start).
    #[error("channel `{channel}`: {source}")]
    Warm {
        /// The channel.
        channel: String,
        /// Why.
        source: CallError,
    },
}

/// A channel ready to be installed in the registry.
pub struct Bound {
    /// The plugin bound to the channel.
    pub runtime: Arc<ChannelRuntime>,
    /// What the pipeline needs to know about the channel.
    pub meta: ChannelMeta,
}

/// Bind `plugin` to `channel` without serving it yet.
pub fn bind(
    runtime: &Runtime,
    channel: &ChannelConfig,
    plugin: Arc<Plugin>,
) -> Result<Bound, BindError> {
    check_requirements(channel, &plugin.info)?;
    let env = Arc::new(ChannelEnv {
        channel_id: channel.id.clone(),
        config: channel
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect(),
        secrets: channel.secrets.clone(),
        allowed_hosts: channel.allowed_hosts.clone(),
        secrets_hosts: channel.secrets_hosts.clone(),
        limits: channel.limits.clone(),
        fetch: runtime.fetch_client(),
    });
    let meta = ChannelMeta {
        id: channel.id.clone(),
        kind: kind_name(plugin.info.kind).to_owned(),
        reply_window: channel.reply_window,
        max_text_bytes: channel.limits.max_text_bytes,
        max_parts: channel.limits.max_parts,
    };
    Ok(Bound {
        runtime: Arc::new(runtime.bind(plugin, env)),
        meta,
    })
}

/// Create the bound channel's first instance, so the first request after a swap does not
/// pay for it and a plugin that cannot start is refused before it serves.
pub async fn warm(bound: &Bound) -> Result<(), BindError> {
    bound
        .runtime
        .prewarm()
        .await
        .map_err(|source| BindError::Warm {
            channel: bound.meta.id.clone(),
            source,
        })
}

/// Every required config key and secret the plugin declares must be configured.
pub fn check_requirements(channel: &ChannelConfig, info: &PluginInfo) -> Result<(), BindError> {
    let missing = |settings: &[crate::runtime::types::Setting], present: &dyn Fn(&str) -> bool| {
        settings
            .iter()
            .filter(|setting| setting.required && !present(&setting.name))
            .map(|setting| setting.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing_config = missing(&info.config, &|name| channel.config.contains_key(name));
    let missing_secrets = missing(&info.secrets, &|name| channel.secrets.contains_key(name));
    let mut problems = Vec::new();
    if !missing_config.is_empty() {
        problems.push(format!("missing config keys: {missing_config}"));
    }
    if !missing_secrets.is_empty() {
        problems.push(format!("missing secrets: {missing_secrets}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(BindError::Requirements {
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
