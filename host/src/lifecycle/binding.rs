//! Binding a plugin version to a configured channel: requirements checked, environment
//! built from the channel's configuration, one instance warmed before it serves.

use std::sync::Arc;

use crate::ops::config::{ChannelConfig, DestinationConfig};
use crate::pipeline::ChannelMeta;
use crate::runtime::types::{ChannelKind, PluginInfo};
use crate::runtime::{AllowedHosts, CallError, ChannelEnv, ChannelRuntime, Plugin, Role, Runtime};

/// Why a plugin version cannot serve a channel.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The channel or destination lacks configuration the plugin requires.
    #[error("{channel} ({plugin}): {problem}")]
    Requirements {
        /// The channel or destination, e.g. ``channel `web` ``.
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
    if plugin.role != Role::Channel {
        return Err(BindError::Requirements {
            channel: channel.label(),
            plugin: plugin.info.id.clone(),
            problem: "a destination plugin cannot serve a channel; configure it under \
                      [[destinations]]"
                .into(),
        });
    }
    let env = Arc::new(ChannelEnv {
        channel_id: channel.id.clone(),
        config: channel
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect(),
        secrets: channel.secrets.clone(),
        tokens: std::collections::BTreeMap::new(),
        allowed_hosts: channel.allowed_hosts.clone(),
        secrets_hosts: secret_scopes(channel, &plugin.info),
        limits: channel.limits.clone(),
        fetch: runtime.fetch_client(),
        fixed_now_ms: None,
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

/// Where each of the channel's secrets may be sent: its `secrets_hosts` entry, else the
/// hosts the plugin declares in `describe()` (`outbound_hosts`), when it declares any.
///
/// A secret left out of the map may go to any of the channel's `allowed_hosts`; that is
/// only the case for a plugin that declares no outbound hosts. Defaulting to the
/// declared hosts keeps a secret on the plugin's own API even when the operator allows
/// more hosts (a media CDN, a proxy); an operator who points the plugin at another API
/// origin (`api_base`) names it in `secrets_hosts`. A declared entry that is not a
/// valid host pattern is left out, so a plugin with only bad entries can send its
/// secrets nowhere (failing closed rather than open).
pub fn secret_scopes(
    channel: &impl PluginSettings,
    info: &PluginInfo,
) -> std::collections::BTreeMap<String, AllowedHosts> {
    let mut scopes = channel.secrets_hosts().clone();
    if info.outbound_hosts.is_empty() {
        return scopes;
    }
    let declared = declared_hosts(&info.outbound_hosts);
    for name in channel.secret_names() {
        scopes
            .entry(name.clone())
            .or_insert_with(|| declared.clone());
    }
    scopes
}

/// The plugin's declared outbound hosts that parse as host patterns.
fn declared_hosts(entries: &[String]) -> AllowedHosts {
    let valid: Vec<String> = entries
        .iter()
        .filter(|entry| AllowedHosts::parse(std::slice::from_ref(*entry)).is_ok())
        .cloned()
        .collect();
    AllowedHosts::parse(&valid).unwrap_or_default()
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
pub fn check_requirements(
    channel: &impl PluginSettings,
    info: &PluginInfo,
) -> Result<(), BindError> {
    let missing = |settings: &[crate::runtime::types::Setting], present: &dyn Fn(&str) -> bool| {
        settings
            .iter()
            .filter(|setting| setting.required && !present(&setting.name))
            .map(|setting| setting.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing_config = missing(&info.config, &|name| channel.has_config(name));
    let missing_secrets = missing(&info.secrets, &|name| channel.has_secret(name));
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
        channel: channel.label(),
        plugin: info.id.clone(),
        problem: problems.join("; "),
    })
}

/// What a configured channel or destination gives its plugin, as binding checks it.
pub trait PluginSettings {
    /// ``channel `id` `` or ``destination `id` ``, for messages.
    fn label(&self) -> String;
    /// Whether `config` has `key`.
    fn has_config(&self, key: &str) -> bool;
    /// Whether `secrets` has `name`.
    fn has_secret(&self, name: &str) -> bool;
    /// The secrets' names.
    fn secret_names(&self) -> Vec<&String>;
    /// `secrets_hosts`.
    fn secrets_hosts(&self) -> &std::collections::BTreeMap<String, AllowedHosts>;
}

/// The same fields in both sections: one implementation.
macro_rules! plugin_settings {
    ($section:ty, $what:literal) => {
        impl PluginSettings for $section {
            fn label(&self) -> String {
                format!(concat!($what, " `{}`"), self.id)
            }
            fn has_config(&self, key: &str) -> bool {
                self.config.contains_key(key)
            }
            fn has_secret(&self, name: &str) -> bool {
                self.secrets.contains_key(name)
            }
            fn secret_names(&self) -> Vec<&String> {
                self.secrets.keys().collect()
            }
            fn secrets_hosts(&self) -> &std::collections::BTreeMap<String, AllowedHosts> {
                &self.secrets_hosts
            }
        }
    };
}

plugin_settings!(ChannelConfig, "channel");
plugin_settings!(DestinationConfig, "destination");

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::config::Config;
    use crate::runtime::types::ChannelKind;

    fn info(outbound_hosts: &[&str]) -> PluginInfo {
        PluginInfo {
            id: "p".into(),
            name: "p".into(),
            version: "1".into(),
            kind: ChannelKind::Other,
            capabilities: Vec::new(),
            config: Vec::new(),
            secrets: Vec::new(),
            outbound_hosts: outbound_hosts
                .iter()
                .map(|host| (*host).to_owned())
                .collect(),
        }
    }

    fn channel(secrets_hosts: &str) -> ChannelConfig {
        let text = format!(
            "[[channels]]\nid = \"c\"\nplugin = \"p\"\n\
             allowed_hosts = [\"api.example\", \"cdn.example\"]\n\
             secrets = {{ token = \"t\", other = \"o\" }}\n{secrets_hosts}\n"
        );
        let mut config = Config::from_toml(&text).expect("valid config");
        config.channels.remove(0)
    }

    fn url(raw: &str) -> url::Url {
        url::Url::parse(raw).expect("valid url")
    }

    #[test]
    fn secrets_default_to_the_declared_outbound_hosts() {
        let scopes = secret_scopes(&channel(""), &info(&["api.example"]));
        for name in ["token", "other"] {
            let scope = &scopes[name];
            assert!(scope.allows(&url("https://api.example/x")), "{name}");
            // Allowed for the channel, but not a host the plugin declared.
            assert!(!scope.allows(&url("https://cdn.example/x")), "{name}");
        }
    }

    #[test]
    fn an_explicit_scope_wins_over_the_declared_hosts() {
        let scopes = secret_scopes(
            &channel("secrets_hosts = { token = [\"cdn.example\"] }"),
            &info(&["api.example"]),
        );
        assert!(scopes["token"].allows(&url("https://cdn.example/x")));
        assert!(!scopes["token"].allows(&url("https://api.example/x")));
        assert!(scopes["other"].allows(&url("https://api.example/x")));
    }

    #[test]
    fn no_declared_hosts_leaves_unlisted_secrets_unscoped() {
        let scopes = secret_scopes(&channel(""), &info(&[]));
        assert!(scopes.is_empty());
    }

    #[test]
    fn bad_declared_hosts_fail_closed() {
        let scopes = secret_scopes(&channel(""), &info(&["ftp://api.example"]));
        assert!(!scopes["token"].allows(&url("https://api.example/x")));
    }
}
