//! Configuration of delivery (`[delivery]`) and of HTTP subscriptions (`[[subscriptions]]`),
//! and its validation into the form the dispatcher uses.

use std::sync::Arc;
use std::time::Duration;

use omnigate_signature::standard_webhooks::decode_secret;
use serde::{Deserialize, Deserializer};

use super::DeliveryError;
use super::destination::{Destination, DestinationSink, ReceiptBook};
use super::envelope::{CloudEventsMode, PreviousSecret};
use super::filter::EventFilter;
use super::http::HttpSink;
use super::sink::Sink;
use crate::netguard::NetworkPolicy;
use crate::secret::Secret;

/// Settings shared by every subscription (`[delivery]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Delays before each retry, as humantime strings (`"5s"`, `"2h"`). An event is tried
    /// once plus once per entry, then dead-lettered. Each delay gets ±20 % jitter so that
    /// many events failing together do not come back together.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Timeout of one HTTP attempt, response body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Events accepted but not yet delivered (or dead-lettered) on every subscription.
    /// When reached, [`Delivery::reserve`](super::Delivery::reserve) waits: this bounds
    /// memory and pushes back on providers instead of growing without limit.
    pub max_in_flight: usize,
    /// Outbox partitions. A conversation always hashes to the same one; each
    /// (subscription, partition) pair is consumed by one instance at a time, so more
    /// partitions spread the work over more instances. Every instance sharing a Redis
    /// outbox must use the same value (checked at start).
    pub partitions: u32,
    /// Where the outbox lives; defaults to `[store] url` (`memory://`: in process, not
    /// durable; `redis://host:port`, or several comma-separated seeds for a Cluster).
    pub outbox_url: Option<String>,
    /// Lease of an instance on a (subscription, partition) pair. After a crash, another
    /// instance takes over within about 1.3 × this.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often an owner looks for events appended by *other* instances (its own wake
    /// it at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Outbox entries one (subscription, partition) worker holds in memory at most.
    pub window: usize,
    /// Deliveries in flight at most per (subscription, partition) worker, each for a
    /// different conversation.
    pub concurrency: usize,
    /// A subscription whose attempts all fail for this long is disabled (its events wait
    /// in the outbox) until re-enabled through the API. Unset: never.
    #[serde(with = "humantime_serde")]
    pub disable_after: Option<Duration>,
    /// Networks (CIDR) that HTTP subscriptions may reach besides the public internet,
    /// e.g. `["127.0.0.0/8"]` for a receiver on this host. Loopback, private,
    /// link-local, CGNAT, multicast and reserved addresses are refused otherwise: at
    /// creation for an address literal, at connect time for a name.
    pub allow_networks: NetworkPolicy,
    /// Subscriptions that may be created through `/v1/subscriptions` (each runs
    /// `partitions` workers on every instance); 0 disables creating them.
    pub max_api_subscriptions: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            retry_schedule: vec![
                Duration::from_secs(5),
                Duration::from_secs(5 * 60),
                Duration::from_secs(30 * 60),
                hours(2),
                hours(5),
                hours(10),
                hours(10),
            ],
            timeout: Duration::from_secs(15),
            max_in_flight: 100_000,
            partitions: 16,
            outbox_url: None,
            lease_ttl: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
            window: 1000,
            concurrency: 64,
            disable_after: Some(Duration::from_secs(5 * 24 * 3600)),
            allow_networks: NetworkPolicy::default(),
            max_api_subscriptions: 100,
        }
    }
}

/// One HTTP subscription (`[[subscriptions]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Name used in logs, stats and dead letters; defaults to `sub-<n>` (1-based position
    /// in the configuration).
    #[serde(default)]
    pub id: Option<String>,
    /// `http` (default): events are POSTed to `url`. `redis-stream`: events are appended
    /// to `stream` on the Redis at `url`.
    #[serde(default)]
    pub kind: SubscriptionKind,
    /// Where events go: `http(s)://…`, or for `redis-stream` `redis://…` (comma-separated
    /// seeds for a Cluster).
    pub url: String,
    /// Standard Webhooks signing key, `whsec_<base64>` (`env:`/`file:` references work);
    /// required for `http`, unused by `redis-stream`.
    #[serde(default = "no_secret")]
    pub secret: Secret,
    /// `redis-stream`: the stream key.
    #[serde(default)]
    pub stream: Option<String>,
    /// `redis-stream`: approximate cap on the stream length (`XADD MAXLEN ~`), default
    /// 1 000 000.
    #[serde(default)]
    pub maxlen: Option<usize>,
    /// Event types to deliver: `*`, exact names (`message.received`) or prefixes
    /// (`message.*`).
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Channel ids to deliver; empty (the default) means every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// How many of the conversation's last messages to include in `history`.
    #[serde(default)]
    pub history: usize,
    /// Whether to include the provider's payload as `raw`.
    #[serde(default)]
    pub include_raw: bool,
    /// CloudEvents content mode: `structured` (default: the envelope is the JSON body)
    /// or `binary` (the event is the body, attributes are `ce-*` headers).
    #[serde(default)]
    pub mode: CloudEventsMode,
    /// Secret rotation: the secret being replaced. Until `previous_secret_expires`, every
    /// delivery carries a signature with it as well as with `secret`.
    #[serde(default)]
    pub previous_secret: Option<Secret>,
    /// End of the rotation grace period (RFC 3339); required with `previous_secret`.
    #[serde(default)]
    pub previous_secret_expires: Option<jiff::Timestamp>,
    /// `destination`: the loaded plugin (from `[[destinations]]`, never from TOML here).
    #[serde(skip)]
    pub destination: Option<DestinationTarget>,
}

/// The plugin behind a destination subscription, and where its receipts go.
#[derive(Debug, Clone)]
pub struct DestinationTarget {
    /// The destination plugin (it follows hot swaps of the plugin itself).
    pub plugin: Arc<dyn Destination>,
    /// Where receipts are kept.
    pub receipts: Arc<dyn ReceiptBook>,
}

impl PartialEq for DestinationTarget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plugin, &other.plugin) && Arc::ptr_eq(&self.receipts, &other.receipts)
    }
}

impl Eq for DestinationTarget {}

/// What kind of target a subscription delivers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionKind {
    /// Signed HTTP POSTs (webhooks).
    #[default]
    Http,
    /// `XADD` to a Redis stream, read by consumer groups.
    RedisStream,
    /// A destination plugin (`[[destinations]]`).
    Destination,
}

fn no_secret() -> Secret {
    Secret::new("")
}

/// Default `maxlen` of a Redis Streams sink.
const DEFAULT_SINK_MAXLEN: usize = 1_000_000;

fn all_events() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Deserializes a list of humantime strings; `humantime_serde` only handles one value.
fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let values = Vec::<humantime_serde::Serde<Duration>>::deserialize(deserializer)?;
    Ok(values
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}

/// A subscription after validation: what a lane needs to deliver.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) id: String,
    pub(crate) filter: EventFilter,
    pub(crate) history: usize,
    pub(crate) include_raw: bool,
    /// This process's counters for it.
    pub(crate) metrics: Arc<super::metrics::SubscriptionMetrics>,
    /// Where its events go (the target's own settings: URL and secrets, stream).
    pub(crate) sink: Arc<dyn Sink>,
}

impl DeliverySettings {
    /// Rejects values that would make delivery useless or unbounded.
    pub(crate) fn validate(&self) -> Result<(), DeliveryError> {
        let invalid = |what: &str| Err(DeliveryError::Config(format!("delivery: {what}")));
        if self.timeout.is_zero() {
            return invalid("`timeout` must be greater than zero");
        }
        // The semaphore counts events in u32 batches and has its own ceiling.
        let ceiling = tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        if self.max_in_flight == 0 || self.max_in_flight > ceiling {
            return invalid(&format!("`max_in_flight` must be between 1 and {ceiling}"));
        }
        // Each partition is a task per subscription; a typo like 1e6 should fail loudly.
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return invalid(&format!(
                "`partitions` must be between 1 and {MAX_PARTITIONS}"
            ));
        }
        if self.window == 0 || self.concurrency == 0 {
            return invalid("`window` and `concurrency` must be greater than zero");
        }
        if self.lease_ttl < Duration::from_millis(300) || self.poll_interval.is_zero() {
            return invalid("`lease_ttl` must be at least 300ms and `poll_interval` above zero");
        }
        // Jitter multiplies the delay; an absurd value (a typo like "10000y") would overflow.
        if self
            .retry_schedule
            .iter()
            .any(|delay| *delay > MAX_RETRY_DELAY)
        {
            return invalid("every `retry_schedule` delay must be at most 30 days");
        }
        Ok(())
    }
}

/// Largest `history` of a subscription: the messages an event carries (the store keeps
/// at most `[pipeline] history_cap` anyway). A huge value once broke every ingest on
/// Redis, so it is refused wherever a subscription comes from.
pub const MAX_HISTORY: usize = 50;

/// Upper bound on `partitions`, far above any useful value.
const MAX_PARTITIONS: u32 = 1024;

/// Upper bound on one retry delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

impl SubscriptionConfig {
    /// The subscription of a destination plugin (a `[[destinations]]` entry): `url`
    /// names the plugin for listings.
    pub fn for_destination(
        id: String,
        plugin: String,
        events: Vec<String>,
        channels: Vec<String>,
        target: DestinationTarget,
    ) -> Self {
        Self {
            id: Some(id),
            kind: SubscriptionKind::Destination,
            url: format!("plugin:{plugin}"),
            secret: no_secret(),
            stream: None,
            maxlen: None,
            events,
            channels,
            history: 0,
            include_raw: false,
            mode: CloudEventsMode::Structured,
            previous_secret: None,
            previous_secret_expires: None,
            destination: Some(target),
        }
    }

    /// Its id: the configured one, else `sub-<n>` from `position`, its 0-based place in
    /// the configuration.
    pub fn id_at(&self, position: usize) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("sub-{}", position + 1))
    }

    /// Validates one subscription; `position` is its 0-based place in the configuration.
    /// An HTTP target whose host is an address literal must be permitted by `policy`.
    pub(crate) fn validate(
        self,
        position: usize,
        policy: &NetworkPolicy,
    ) -> Result<Subscription, DeliveryError> {
        let id = self.id_at(position);
        let fail = |what: String| DeliveryError::Config(format!("subscription `{id}`: {what}"));
        if id.trim().is_empty() {
            return Err(fail("`id` must not be empty".into()));
        }
        if self.history > MAX_HISTORY {
            return Err(fail(format!(
                "`history` must be between 0 and {MAX_HISTORY}"
            )));
        }
        let filter = EventFilter::new(&self.events, &self.channels).map_err(&fail)?;
        let previous_secret = match (self.previous_secret, self.previous_secret_expires) {
            (None, None) => None,
            (Some(secret), Some(expires)) => {
                decode_secret(secret.expose())
                    .map_err(|error| fail(format!("`previous_secret`: {error}")))?;
                Some(PreviousSecret {
                    secret,
                    expires: expires.as_second(),
                })
            }
            _ => {
                return Err(fail(
                    "`previous_secret` and `previous_secret_expires` go together".into(),
                ));
            }
        };
        let sink: Arc<dyn Sink> = match self.kind {
            SubscriptionKind::Http => {
                let url = parse_url(&self.url).map_err(&fail)?;
                policy.check_url(&url).map_err(|error| {
                    DeliveryError::TargetNotAllowed(format!("subscription `{id}`: {error}"))
                })?;
                // The error never contains the secret itself (see omnigate-signature).
                decode_secret(self.secret.expose())
                    .map_err(|error| fail(format!("`secret`: {error}")))?;
                Arc::new(HttpSink {
                    url,
                    secret: self.secret,
                    previous_secret,
                    mode: self.mode,
                })
            }
            SubscriptionKind::RedisStream => {
                Arc::new(sink(&self.url, self.stream.as_deref(), self.maxlen).map_err(&fail)?)
            }
            SubscriptionKind::Destination => {
                let target = self.destination.ok_or_else(|| {
                    fail("destinations are configured under `[[destinations]]`".into())
                })?;
                Arc::new(DestinationSink {
                    id: id.clone(),
                    plugin: target.plugin,
                    receipts: target.receipts,
                })
            }
        };
        Ok(Subscription {
            id,
            filter,
            history: self.history,
            include_raw: self.include_raw,
            metrics: Arc::default(),
            sink,
        })
    }
}

fn sink(
    url: &str,
    stream: Option<&str>,
    maxlen: Option<usize>,
) -> Result<super::stream::StreamSink, String> {
    let redis = url
        .split(',')
        .all(|seed| seed.trim().starts_with("redis://") || seed.trim().starts_with("rediss://"));
    if !redis {
        return Err(format!(
            "`url` {url:?} must be redis:// for a redis-stream subscription"
        ));
    }
    let stream = stream
        .filter(|s| !s.trim().is_empty())
        .ok_or("a redis-stream subscription needs `stream`")?;
    let maxlen = maxlen.unwrap_or(DEFAULT_SINK_MAXLEN);
    if maxlen == 0 {
        return Err("`maxlen` must be greater than zero".into());
    }
    Ok(super::stream::StreamSink::new(
        url.to_owned(),
        stream.to_owned(),
        maxlen,
    ))
}

fn parse_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|error| format!("`url` {raw:?}: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`url` {raw:?} must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`url` {raw:?} has no host"));
    }
    Ok(url)
}

/// Validates every subscription and checks that ids are unique (they key stats and
/// dead letters).
pub(crate) fn validate_all(
    configs: Vec<SubscriptionConfig>,
    policy: &NetworkPolicy,
) -> Result<Vec<Subscription>, DeliveryError> {
    let mut subscriptions: Vec<Subscription> = Vec::with_capacity(configs.len());
    for (position, config) in configs.into_iter().enumerate() {
        let subscription = config.validate(position, policy)?;
        if subscriptions
            .iter()
            .any(|other| other.id == subscription.id)
        {
            return Err(DeliveryError::Config(format!(
                "subscription `{}`: duplicate id",
                subscription.id
            )));
        }
        subscriptions.push(subscription);
    }
    Ok(subscriptions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn subscription(toml_text: &str) -> Result<SubscriptionConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn settings_defaults_and_humantime() {
        let defaults: DeliverySettings = toml::from_str("").expect("empty is valid");
        assert_eq!(defaults.retry_schedule.len(), 7);
        assert_eq!(defaults.retry_schedule[1], Duration::from_secs(300));
        assert_eq!(defaults.timeout, Duration::from_secs(15));
        assert_eq!((defaults.max_in_flight, defaults.partitions), (100_000, 16));
        assert_eq!(defaults.lease_ttl, Duration::from_secs(10));
        let custom: DeliverySettings =
            toml::from_str("retry_schedule = [\"50ms\", \"2m\"]\ntimeout = \"1s\"").expect("valid");
        assert_eq!(
            custom.retry_schedule,
            [Duration::from_millis(50), Duration::from_secs(120)]
        );
        assert!(toml::from_str::<DeliverySettings>("retries = 3").is_err());
        let absurd: DeliverySettings =
            toml::from_str("retry_schedule = [\"5s\", \"1000y\"]").expect("parses");
        assert!(matches!(absurd.validate(), Err(DeliveryError::Config(_))));
        let zero = DeliverySettings {
            partitions: 0,
            ..DeliverySettings::default()
        };
        assert!(matches!(zero.validate(), Err(DeliveryError::Config(_))));
    }

    #[test]
    fn subscription_defaults_and_validation() {
        let config = subscription(&format!(
            "url = \"http://receiver.example:9/h\"\nsecret = \"{KEY}\""
        ))
        .expect("valid");
        let valid = config
            .validate(2, &NetworkPolicy::default())
            .expect("valid");
        assert_eq!(valid.id, "sub-3");
        assert_eq!((valid.history, valid.include_raw), (0, false));

        let bad_cases = [
            (
                format!("url = \"ftp://x/\"\nsecret = \"{KEY}\""),
                "http or https",
            ),
            (format!("url = \"not a url\"\nsecret = \"{KEY}\""), "`url`"),
            (
                "url = \"http://x/\"\nsecret = \"whsec_!!\"".to_owned(),
                "`secret`",
            ),
            (
                format!(
                    "id = \"crm\"\nurl = \"http://x/\"\nsecret = \"{KEY}\"\nevents = [\"mesage.*\"]"
                ),
                "crm",
            ),
        ];
        for (text, expected) in bad_cases {
            let result = subscription(&text)
                .expect("parses")
                .validate(0, &NetworkPolicy::default());
            let Err(DeliveryError::Config(message)) = result else {
                panic!("{text}: expected a config error");
            };
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("MfKQ9r8"), "secret leaked: {message}");
        }
        assert!(
            subscription(&format!(
                "url = \"http://x/\"\nsecret = \"{KEY}\"\nretry = 1"
            ))
            .is_err()
        );
    }

    #[test]
    fn history_is_bounded() {
        let text = |history: usize| {
            format!("url = \"https://crm.example/h\"\nsecret = \"{KEY}\"\nhistory = {history}")
        };
        let policy = NetworkPolicy::default();
        assert!(
            subscription(&text(50))
                .expect("parses")
                .validate(0, &policy)
                .is_ok()
        );
        let result = subscription(&text(51))
            .expect("parses")
            .validate(0, &policy);
        assert!(matches!(result, Err(DeliveryError::Config(m)) if m.contains("`history`")));
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let one = || {
            subscription(&format!(
                "id = \"a\"\nurl = \"http://x/\"\nsecret = \"{KEY}\""
            ))
            .expect("valid")
        };
        let result = validate_all(vec![one(), one()], &NetworkPolicy::default());
        assert!(matches!(result, Err(DeliveryError::Config(m)) if m.contains("duplicate")));
    }
}
