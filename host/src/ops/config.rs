//! The gateway configuration (contract): `omnigate.toml`, overridable by environment.
//!
//! Every section is owned by the module it configures; this file only assembles them.
//! Environment overrides use `OMNIGATE_<SECTION>__<KEY>` (double underscore between
//! levels, e.g. `OMNIGATE_SERVER__LISTEN=0.0.0.0:8080`); single-level `OMNIGATE_*`
//! variables are left alone so they can hold secrets referenced as `env:OMNIGATE_API_KEY`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::delivery::{DeliverySettings, SubscriptionConfig};
use crate::pipeline::PipelineSettings;
use crate::runtime::{AllowedHosts, Limits};
use crate::secret::{Secret, SecretSpec};

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSettings,
    /// `[store]`.
    #[serde(default)]
    pub store: StoreSettings,
    /// `[api]`.
    #[serde(default)]
    pub api: ApiSettings,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminSettings,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// `[console]`: the web console at `/console`.
    #[serde(default)]
    pub console: ConsoleSettings,
    /// `[plugins]`.
    #[serde(default)]
    pub plugins: PluginSettings,
    /// `[pipeline]`.
    #[serde(default)]
    pub pipeline: PipelineSettings,
    /// `[delivery]`.
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// `[identity]` (link tokens).
    #[serde(default)]
    pub identity: crate::store::IdentitySettings,
    /// `[outcomes]`: stages, SLA, attribution window.
    #[serde(default)]
    pub outcomes: crate::outcome::OutcomeSettings,
    /// `[[channels]]`.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// `[[subscriptions]]`.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// `[[destinations]]`: subscriptions delivered by destination plugins.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long shutdown waits for requests and deliveries in flight.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// HTTP/1: the request head must arrive within this; it also closes a kept-alive
    /// connection that sends no next request for this long.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request (its body read and handled) taking longer gets `408 request_timeout`.
    /// Above the plugin `call_timeout` and the delivery `timeout` on purpose.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap the longest-idle one is closed to admit a
    /// new one. Keep it below the process's open-file limit.
    pub max_connections: usize,
    /// HTTP/2: concurrent streams per connection.
    pub http2_max_streams: u32,
    /// The gateway's external base URL (e.g. `https://hooks.example.com`), as providers
    /// call it through a proxy or tunnel. Plugins whose provider signs the URL it called
    /// (Twilio) get the webhook's public URL built from it; unset, it is taken from the
    /// request (see `trust_forwarded`).
    pub public_url: Option<String>,
    /// Take the public URL's scheme and host from `X-Forwarded-Proto` / `X-Forwarded-Host`
    /// when `public_url` is unset. Only for a gateway reachable solely through a proxy
    /// that sets them: otherwise a caller could name any URL.
    pub trust_forwarded: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let limits = ServerLimits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: limits.header_read_timeout,
            request_timeout: Duration::from_secs(60),
            idle_timeout: limits.idle_timeout,
            max_connections: limits.max_connections,
            http2_max_streams: limits.http2_max_streams,
            public_url: None,
            trust_forwarded: false,
        }
    }
}

/// Connection limits, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// HTTP/1: the whole request head must arrive within this (also bounds the wait
    /// for the next request on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1 and /2,
    /// and a connection that never sends anything).
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap the longest-idle one is closed for a new one.
    pub max_connections: usize,
    /// HTTP/2: concurrent streams per connection.
    pub http2_max_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            http2_max_streams: 100,
        }
    }
}

impl ServerSettings {
    /// `public_url` and `trust_forwarded`, checked.
    pub fn public_url(
        &self,
    ) -> Result<crate::ingress::public_url::PublicUrl, crate::ingress::public_url::PublicUrlError>
    {
        crate::ingress::public_url::PublicUrl::new(self.public_url.as_deref(), self.trust_forwarded)
    }

    /// The connection limits, checked: every timeout above zero, caps at least 1.
    pub fn limits(&self) -> Result<ServerLimits, ConfigError> {
        let positive = [
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| value.is_zero()) {
            return Err(ConfigError::Invalid(format!(
                "`[server] {name}` must be greater than zero"
            )));
        }
        if self.max_connections == 0 || self.http2_max_streams == 0 {
            return Err(ConfigError::Invalid(
                "`[server] max_connections` and `http2_max_streams` must be at least 1".into(),
            ));
        }
        Ok(ServerLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            http2_max_streams: self.http2_max_streams,
        })
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `memory://` (embedded, default) or `redis://…`.
    pub url: String,
    /// How often idle conversations are looked for and closed (`conversation.closed`).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Messages (history and timeline entries) older than this are dropped; unset keeps
    /// them as long as their conversation.
    #[serde(with = "humantime_serde")]
    pub message_retention: Option<Duration>,
    /// Contacts with no message in either direction for this long are erased (with
    /// `contact.erased`, as `DELETE /v1/contacts/{id}` does); unset keeps them.
    #[serde(with = "humantime_serde")]
    pub contact_retention: Option<Duration>,
    /// PEM file of the CA certificates that `rediss://` servers (store, plugin registry,
    /// delivery outbox) must chain to, instead of the public webpki roots: for a
    /// self-hosted Redis with a private CA.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: "memory://".into(),
            sweep_interval: Duration::from_secs(30),
            message_retention: None,
            contact_retention: None,
            tls_ca_file: None,
        }
    }
}

impl StoreSettings {
    /// The CAs trusted for `rediss://` connections (read and checked from `tls_ca_file`).
    pub fn tls(&self) -> Result<crate::redis_url::RedisTls, crate::store::StoreError> {
        match &self.tls_ca_file {
            Some(path) => Ok(crate::redis_url::RedisTls::from_ca_file(path)?),
            None => Ok(crate::redis_url::RedisTls::default()),
        }
    }
}

/// Shortest accepted `[api]` or `[admin]` key, in characters.
pub const MIN_KEY_CHARS: usize = 16;

/// A bearer key as configured: its value, and where it came from (for messages that
/// must name it without showing it).
#[derive(Debug, Clone)]
pub struct BearerKey {
    /// The resolved value.
    pub secret: Secret,
    /// `env:VAR` or `file:/path` as written, or `a literal value`.
    pub origin: String,
}

impl<'de> Deserialize<'de> for BearerKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(deserializer)?;
        let secret = Secret::resolve(&reference).map_err(serde::de::Error::custom)?;
        let origin = if reference.starts_with("env:") || reference.starts_with("file:") {
            reference
        } else {
            "a literal value".to_owned()
        };
        Ok(Self { secret, origin })
    }
}

/// Refuses empty, whitespace-only, padded and short keys: an unset variable
/// (`OMNIGATE_ADMIN_KEY=""`) must not open the API to `Authorization: Bearer `.
fn key_problems(section: &str, keys: &[BearerKey]) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let value = key.secret.expose();
        let problem = if value.trim().is_empty() {
            "is empty"
        } else if value.trim() != value {
            "starts or ends with whitespace"
        } else if value.chars().count() < MIN_KEY_CHARS {
            "is too short"
        } else {
            continue;
        };
        problems.push(format!(
            "`[{section}] keys` entry {} ({}) {problem}: keys must be at least {MIN_KEY_CHARS} characters",
            index + 1,
            key.origin
        ));
    }
    problems
}

/// `[api]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer keys accepted on `/v1` (`env:VAR`, `file:/path` or literal; at least
    /// [`MIN_KEY_CHARS`] characters).
    pub keys: Vec<BearerKey>,
}

/// `[metrics]`: who may read `GET /metrics`, and how much of the hot path is timed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Bearer keys for `/metrics`; none (the default) leaves it open, as Prometheus
    /// scrapers usually expect on a private network. At least [`MIN_KEY_CHARS`] characters.
    pub keys: Vec<BearerKey>,
    /// Time the pipeline stages (and the store ingest) of one webhook in this many
    /// (default 16; 1 = every webhook). The latency distributions stay the same at any
    /// real rate; the webhooks in between take no clock reading and record no histogram.
    pub stage_sample: u32,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            stage_sample: crate::metrics::DEFAULT_STAGE_SAMPLE,
        }
    }
}

/// `[admin]`: the plugin lifecycle API (`/admin/plugins`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer keys accepted on `/admin` (separate from `[api] keys`; none: `/admin` is
    /// closed; at least [`MIN_KEY_CHARS`] characters).
    pub keys: Vec<BearerKey>,
    /// Largest plugin upload accepted, in bytes.
    pub max_plugin_bytes: usize,
    /// Refuse activating a plugin whose declared `kind` differs from the channel's (the
    /// kind of the plugin serving it).
    pub require_same_kind: bool,
    /// ed25519 public keys (base64 or hex of the 32 bytes) that may sign uploaded
    /// versions; a signed version is activated only when one of them verifies it.
    pub signing_keys: Vec<String>,
    /// Whether an uploaded version without a signature may be activated. Default: true
    /// with no `signing_keys`, false with some.
    pub allow_unsigned: Option<bool>,
}

impl AdminSettings {
    /// The signing policy these settings describe; `Err` names a key that does not parse.
    pub fn signing_policy(&self) -> Result<crate::lifecycle::signing::SigningPolicy, String> {
        crate::lifecycle::signing::SigningPolicy::new(&self.signing_keys, self.allow_unsigned)
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_plugin_bytes: 32 << 20,
            require_same_kind: false,
            signing_keys: Vec::new(),
            allow_unsigned: None,
        }
    }
}

/// `[console]`: the web console at `/console` (docs/console.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Whether `/console` is served at all (`false`: every console path answers 404).
    pub enabled: bool,
    /// Keys that sign in to the console (separate from `[api]` and `[admin]` keys, the
    /// same rules: at least [`MIN_KEY_CHARS`] characters; none: nobody can sign in).
    pub keys: Vec<BearerKey>,
    /// How long a console session lasts after sign-in.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Sign-in attempts (right or wrong) one client address may make per
    /// `sign_in_window`; more answer `429`.
    pub sign_in_attempts: u32,
    /// The window of `sign_in_attempts` (the allowance comes back evenly over it).
    #[serde(with = "humantime_serde")]
    pub sign_in_window: Duration,
}

/// Shortest and longest accepted `[console] session_ttl`.
pub const CONSOLE_SESSION_TTL: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(7 * 86_400));

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            keys: Vec::new(),
            session_ttl: Duration::from_secs(8 * 3600),
            sign_in_attempts: 10,
            sign_in_window: Duration::from_secs(60),
        }
    }
}

impl ConsoleSettings {
    fn problems(&self) -> Vec<String> {
        let mut problems = key_problems("console", &self.keys);
        let (low, high) = CONSOLE_SESSION_TTL;
        if !(low..=high).contains(&self.session_ttl) {
            problems.push(format!(
                "`[console] session_ttl` must be between {} and {}",
                humantime::format_duration(low),
                humantime::format_duration(high)
            ));
        }
        if self.sign_in_attempts == 0 {
            problems.push("`[console] sign_in_attempts` must be at least 1".to_owned());
        }
        if self.sign_in_window < Duration::from_secs(1) {
            problems.push("`[console] sign_in_window` must be at least 1s".to_owned());
        }
        problems
    }
}

/// `[plugins]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    /// Where `plugin = "<name>"` is looked up as `<dir>/<name>.wasm`.
    pub dir: PathBuf,
    /// Where compiled plugins are cached; must be writable by the gateway alone.
    pub cache_dir: Option<PathBuf>,
    /// Reload a channel's plugin when its file in `dir` changes.
    pub watch: bool,
    /// How long the directory must be quiet before a change is acted on.
    #[serde(with = "humantime_serde")]
    pub watch_debounce: Duration,
    /// How often the shared plugin registry is read again, in case an activation
    /// announcement was missed (announcements normally apply within milliseconds).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Networks (CIDR) plugins may reach with `http-fetch` besides the public internet,
    /// for every channel (one client serves them all; `allowed_hosts` still applies per
    /// channel). Loopback, private, link-local, CGNAT, multicast and reserved addresses
    /// are refused otherwise.
    pub allow_networks: crate::netguard::NetworkPolicy,
    /// Live plugin instances at most, over every channel (in a call or kept warm).
    pub max_instances: usize,
    /// Linear memory all live instances may reserve together, in bytes: each reserves its
    /// channel's `memory_bytes`, so the plugins never grow past this.
    pub max_memory_bytes: usize,
    /// How long a call waits for room in the budget before `503 plugins_busy`.
    #[serde(with = "humantime_serde")]
    pub instance_wait: Duration,
}

impl PluginSettings {
    /// The instance budget these settings describe.
    pub fn budget(&self) -> crate::runtime::BudgetSettings {
        crate::runtime::BudgetSettings {
            max_instances: self.max_instances,
            max_memory_bytes: self.max_memory_bytes,
            wait: self.instance_wait,
        }
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        let budget = crate::runtime::BudgetSettings::default();
        // The development layout (`cargo xtask plugins` writes there); set both in production.
        Self {
            dir: PathBuf::from("target/plugins"),
            cache_dir: Some(PathBuf::from("target/plugin-cache")),
            watch: false,
            watch_debounce: Duration::from_millis(500),
            reconcile_interval: Duration::from_secs(10),
            allow_networks: crate::netguard::NetworkPolicy::default(),
            max_instances: budget.max_instances,
            max_memory_bytes: budget.max_memory_bytes,
            instance_wait: budget.wait,
        }
    }
}

/// A configuration value of a channel: TOML strings, numbers and booleans are accepted
/// and handed to the plugin as text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ConfigValue {
    /// Text.
    Text(String),
    /// Integer.
    Integer(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::Text(text) => f.write_str(text),
            ConfigValue::Integer(value) => write!(f, "{value}"),
            ConfigValue::Float(value) => write!(f, "{value}"),
            ConfigValue::Bool(value) => write!(f, "{value}"),
        }
    }
}

/// `[[channels]]`: one provider account served by one plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Id in `/webhooks/{id}` and in events: lowercase letters, digits, `-`, `_`.
    pub id: String,
    /// A plugin name in the plugins dir, or a path to a `.wasm` file.
    pub plugin: String,
    /// Values the plugin reads with `config(key)`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Secrets the plugin uses by name (never sees).
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// Hosts the plugin may reach with `http-fetch`.
    #[serde(default)]
    pub allowed_hosts: AllowedHosts,
    /// Per secret, the only origins its placeholders may be sent to (e.g.
    /// `{ access_token = ["https://graph.facebook.com"] }`); a secret not listed may go
    /// to any of `allowed_hosts`.
    #[serde(default)]
    pub secrets_hosts: BTreeMap<String, AllowedHosts>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Reply window opened by each inbound message (e.g. `24h` for WhatsApp).
    #[serde(default, with = "humantime_serde")]
    pub reply_window: Option<Duration>,
}

/// `[[destinations]]`: a destination plugin (an ad platform's conversion API, a CRM)
/// fed by the delivery engine like a subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Id in logs, metrics, dead letters and receipts; lowercase letters, digits, `-`,
    /// `_`, and not the id of a subscription.
    pub id: String,
    /// A plugin name in the plugins dir, or a path to a `.wasm` file.
    pub plugin: String,
    /// Event types to deliver (`*`, names or `prefix.*`); defaults to what the plugin's
    /// `describe` asks for.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Channel ids to deliver; empty (the default) means every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Values the plugin reads with `config(key)`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Secrets the plugin uses by name (never sees): values, or `{ oauth2 = { … } }`
    /// access tokens the host mints.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Hosts the plugin may reach with `http-fetch`.
    #[serde(default)]
    pub allowed_hosts: AllowedHosts,
    /// Per secret, the only origins its placeholders may be sent to.
    #[serde(default)]
    pub secrets_hosts: BTreeMap<String, AllowedHosts>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing or a value failed (figment names the key and the file).
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A rule across values.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Read `path` (optional) and the environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed("OMNIGATE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Parse TOML text (tests, `config check`), without environment overrides.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Rules across values (keys long enough, server limits, channel ids valid and
    /// unique, `secrets_hosts` naming secrets): the first broken one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.broken_rules().into_iter().next() {
            Some(rule) => Err(ConfigError::Invalid(rule)),
            None => Ok(()),
        }
    }

    /// Every rule across values the configuration breaks, in file order.
    pub fn broken_rules(&self) -> Vec<String> {
        let mut broken = Vec::new();
        for (section, keys) in [
            ("api", &self.api.keys),
            ("admin", &self.admin.keys),
            ("metrics", &self.metrics.keys),
        ] {
            broken.extend(key_problems(section, keys));
        }
        if self.metrics.stage_sample == 0 {
            broken.push(
                "`[metrics] stage_sample` must be at least 1 (1 times every webhook)".to_owned(),
            );
        }
        broken.extend(self.console.problems());
        if let Err(reason) = self.admin.signing_policy() {
            broken.push(reason);
        }
        broken.extend(self.outcomes.problems());
        if let Err(error) = self.server.limits() {
            broken.push(match error {
                ConfigError::Invalid(reason) => reason,
                other => other.to_string(),
            });
        }
        let mut seen = HashSet::new();
        for channel in &self.channels {
            broken.extend(id_problem("channel", &channel.id, &mut seen));
            broken.extend(unknown_scoped_secret(
                "channel",
                &channel.id,
                &channel.secrets_hosts,
                |name| channel.secrets.contains_key(name),
            ));
        }
        // Destinations share the subscriptions' ids (stats, dead letters, enabling),
        // the default `sub-<n>` ones included.
        let subscription_ids: Vec<String> = self
            .subscriptions
            .iter()
            .enumerate()
            .map(|(position, subscription)| subscription.id_at(position))
            .collect();
        let mut seen: HashSet<&str> = subscription_ids.iter().map(String::as_str).collect();
        for destination in &self.destinations {
            broken.extend(id_problem("destination", &destination.id, &mut seen));
            broken.extend(unknown_scoped_secret(
                "destination",
                &destination.id,
                &destination.secrets_hosts,
                |name| destination.secrets.contains_key(name),
            ));
        }
        broken
    }
}

/// Why `id` of a `what` cannot be used, if it cannot: not lowercase letters, digits,
/// `-` or `_`, or already in `seen` (which it joins).
fn id_problem<'a>(what: &str, id: &'a str, seen: &mut HashSet<&'a str>) -> Option<String> {
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        Some(format!(
            "{what} id `{id}` must be lowercase letters, digits, `-` or `_`"
        ))
    } else if !seen.insert(id) {
        Some(format!("{what} id `{id}` appears twice"))
    } else {
        None
    }
}

/// A `secrets_hosts` entry naming a secret the section does not have.
fn unknown_scoped_secret(
    what: &str,
    id: &str,
    scopes: &BTreeMap<String, AllowedHosts>,
    has: impl Fn(&str) -> bool,
) -> Option<String> {
    let unknown = scopes.keys().find(|name| !has(name))?;
    Some(format!(
        "{what} `{id}`: `secrets_hosts` names `{unknown}`, which is not in its `secrets`"
    ))
}

/// A plugin file: `<dir>/<name>.wasm`, or `plugin` itself when it names a file.
pub fn plugin_path(plugin: &str, dir: &Path) -> PathBuf {
    if plugin.ends_with(".wasm") || plugin.contains('/') {
        PathBuf::from(plugin)
    } else {
        dir.join(format!("{plugin}.wasm"))
    }
}

impl ChannelConfig {
    /// The plugin file: `<dir>/<name>.wasm`, or the path itself when it names a file.
    pub fn plugin_path(&self, dir: &Path) -> PathBuf {
        plugin_path(&self.plugin, dir)
    }
}

impl DestinationConfig {
    /// The plugin file: `<dir>/<name>.wasm`, or the path itself when it names a file.
    pub fn plugin_path(&self, dir: &Path) -> PathBuf {
        plugin_path(&self.plugin, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_example_parses() {
        let config = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:8080"
            [store]
            url = "memory://"
            [api]
            keys = ["k1-0123456789abcdef"]
            [delivery]
            retry_schedule = ["5s", "5m"]
            [[channels]]
            id = "web"
            plugin = "webchat"
            config = { callback_url = "https://shop.example/omnigate/replies", retries = 3 }
            secrets = { signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
            allowed_hosts = ["shop.example"]
            limits = { cpu_deadline = "500ms", memory_bytes = 33554432 }
            reply_window = "24h"
            [[subscriptions]]
            url = "http://127.0.0.1:9000/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["message.*"]
            "#,
        )
        .expect("valid config");
        let channel = &config.channels[0];
        assert_eq!(channel.config["retries"].to_string(), "3");
        assert_eq!(channel.limits.cpu_deadline, Duration::from_millis(500));
        assert_eq!(channel.reply_window, Some(Duration::from_secs(86_400)));
        assert_eq!(
            channel.plugin_path(Path::new("p")),
            PathBuf::from("p/webchat.wasm")
        );
    }

    #[test]
    fn unknown_keys_and_bad_ids_are_refused() {
        let error = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n")
            .expect_err("unknown key");
        assert!(error.to_string().contains("port"), "{error}");
        let error = Config::from_toml("[[channels]]\nid = \"Web Chat\"\nplugin = \"webchat\"\n")
            .expect_err("bad id");
        assert!(error.to_string().contains("Web Chat"), "{error}");
    }

    #[test]
    fn destinations_parse_with_oauth2_secrets_and_unique_ids() {
        let config = Config::from_toml(
            r#"
            [[subscriptions]]
            id = "crm"
            url = "http://127.0.0.1:9000/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            [[destinations]]
            id = "meta"
            plugin = "meta-capi"
            config = { dataset_id = "1", whatsapp_business_account_id = "2" }
            secrets = { access_token = "EAAB-token" }
            allowed_hosts = ["https://graph.facebook.com"]
            [[destinations]]
            id = "google"
            plugin = "/opt/plugins/google-ads.wasm"
            events = ["conversion.recorded"]
            allowed_hosts = ["https://datamanager.googleapis.com"]
            [destinations.secrets.access_token.oauth2]
            token_url = "https://oauth2.googleapis.com/token"
            client_id = "id.apps.googleusercontent.com"
            client_secret = "cs"
            refresh_token = "rt"
            scopes = ["https://www.googleapis.com/auth/datamanager"]
            "#,
        )
        .expect("valid config");
        let [meta, google] = &config.destinations[..] else {
            panic!("two destinations");
        };
        assert_eq!(meta.events, None);
        assert!(matches!(meta.secrets["access_token"], SecretSpec::Value(_)));
        assert!(matches!(
            google.secrets["access_token"],
            SecretSpec::OAuth2(_)
        ));
        assert_eq!(
            google.plugin_path(Path::new("p")),
            PathBuf::from("/opt/plugins/google-ads.wasm")
        );
        for (text, expected) in [
            (
                "[[destinations]]\nid = \"meta\"\nplugin = \"m\"\n[[destinations]]\nid = \"meta\"\nplugin = \"n\"\n",
                "destination id `meta` appears twice",
            ),
            (
                "[[subscriptions]]\nid = \"meta\"\nurl = \"http://127.0.0.1:1/\"\n[[destinations]]\nid = \"meta\"\nplugin = \"m\"\n",
                "destination id `meta` appears twice",
            ),
            (
                "[[subscriptions]]\nurl = \"http://127.0.0.1:1/\"\n[[destinations]]\nid = \"sub-1\"\nplugin = \"m\"\n",
                "destination id `sub-1` appears twice",
            ),
            (
                "[[destinations]]\nid = \"Meta\"\nplugin = \"m\"\n",
                "destination id `Meta` must be lowercase",
            ),
            (
                "[[destinations]]\nid = \"m\"\nplugin = \"m\"\nsecrets_hosts = { token = [\"https://a.example\"] }\n",
                "destination `m`: `secrets_hosts` names `token`",
            ),
        ] {
            let error = Config::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn empty_blank_padded_and_short_keys_are_refused_by_name() {
        let cases = [
            (
                "[admin]\nkeys = [\"\"]\n",
                "`[admin] keys` entry 1 (a literal value) is empty",
            ),
            (
                "[api]\nkeys = [\"   \"]\n",
                "`[api] keys` entry 1 (a literal value) is empty",
            ),
            (
                "[api]\nkeys = [\"0123456789abcdef\", \"short\"]\n",
                "`[api] keys` entry 2 (a literal value) is too short",
            ),
            (
                "[api]\nkeys = [\" 0123456789abcdef\"]\n",
                "starts or ends with whitespace",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let reference = format!("file:{}", file.path().display());
        let error = Config::from_toml(&format!("[admin]\nkeys = [{reference:?}]\n"))
            .expect_err("empty file")
            .to_string();
        assert!(error.contains(&reference), "{error}");
        Config::from_toml("[api]\nkeys = [\"0123456789abcdef\"]\n").expect("16 characters");
    }

    #[test]
    fn console_keys_and_session_ttl_are_checked() {
        let error = Config::from_toml("[console]\nkeys = [\"short\"]\n")
            .expect_err("short key")
            .to_string();
        assert!(error.contains("`[console] keys` entry 1"), "{error}");
        let error = Config::from_toml("[console]\nsession_ttl = \"10s\"\n")
            .expect_err("short ttl")
            .to_string();
        assert!(error.contains("`[console] session_ttl`"), "{error}");
        let error = Config::from_toml("[console]\nsign_in_attempts = 0\n")
            .expect_err("no attempts")
            .to_string();
        assert!(error.contains("`[console] sign_in_attempts`"), "{error}");
        let error = Config::from_toml("[console]\nsign_in_window = \"0s\"\n")
            .expect_err("no window")
            .to_string();
        assert!(error.contains("`[console] sign_in_window`"), "{error}");
        let config = Config::from_toml("[console]\nenabled = false\n").expect("valid");
        assert!(!config.console.enabled);
        assert!(Config::from_toml("").expect("empty").console.enabled);
    }

    #[test]
    fn metrics_stage_sample_is_at_least_one() {
        let default = Config::from_toml("").expect("empty");
        assert_eq!(
            default.metrics.stage_sample,
            crate::metrics::DEFAULT_STAGE_SAMPLE
        );
        let error = Config::from_toml("[metrics]\nstage_sample = 0\n")
            .expect_err("zero")
            .to_string();
        assert!(error.contains("`[metrics] stage_sample`"), "{error}");
        let every = Config::from_toml("[metrics]\nstage_sample = 1\n").expect("valid");
        assert_eq!(every.metrics.stage_sample, 1);
        assert!(Config::from_toml("[metrics]\nstage_sample = -1\n").is_err());
    }

    #[test]
    fn secrets_hosts_must_name_a_configured_secret() {
        let channel = |secrets_hosts: &str| {
            format!(
                "[[channels]]\nid = \"wa\"\nplugin = \"whatsapp\"\nsecrets = {{ access_token = \"t\" }}\nsecrets_hosts = {secrets_hosts}\n"
            )
        };
        let valid = Config::from_toml(&channel(
            "{ access_token = [\"https://graph.facebook.com\"] }",
        ))
        .expect("valid");
        assert_eq!(valid.channels[0].secrets_hosts.len(), 1);
        let error = Config::from_toml(&channel(
            "{ acess_token = [\"https://graph.facebook.com\"] }",
        ))
        .expect_err("typo")
        .to_string();
        assert!(error.contains("acess_token"), "{error}");
    }

    #[test]
    fn missing_secret_variable_names_the_variable() {
        let error = Config::from_toml(
            "[[channels]]\nid = \"web\"\nplugin = \"webchat\"\nsecrets = { signing_secret = \"env:OMNIGATE_TEST_NOT_SET_ANYWHERE\" }\n",
        )
        .expect_err("missing env");
        assert!(
            error.to_string().contains("OMNIGATE_TEST_NOT_SET_ANYWHERE"),
            "{error}"
        );
    }
}
