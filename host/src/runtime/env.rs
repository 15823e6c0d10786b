//! What one channel gives its plugin: configuration, secrets, allowed hosts and limits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outbound::{AllowedHosts, FetchClient};
use crate::secret::Secret;
use crate::secret::oauth2::{OAuth2Error, TokenSource};

/// Limits of one channel: its plugin calls' sandbox, its webhook bodies and rate.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// CPU time a call may spend in the guest (epoch ticks of 10 ms); time spent in host
    /// imports such as `http-fetch` does not count.
    #[serde(with = "humantime_serde")]
    pub cpu_deadline: Duration,
    /// Wall-clock bound of one call, fetches included.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Largest webhook body accepted for this channel.
    pub max_body_bytes: usize,
    /// Upper bound of one `http-fetch`.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Largest `http-fetch` response body handed to the plugin.
    pub fetch_max_response_bytes: usize,
    /// Calls one instance serves before it is replaced by a fresh one.
    pub instance_reuse: u32,
    /// Inbound webhooks accepted per second on this channel (beyond: 429 with
    /// `Retry-After`, the provider retries). `None`: no limit.
    pub rate_per_second: Option<u32>,
    /// Webhooks that may arrive at once above the rate (default: one second's worth).
    pub rate_burst: Option<u32>,
    /// Largest message text stored (bytes, UTF-8); a webhook with a longer one gets
    /// `413 message_too_large`.
    pub max_text_bytes: usize,
    /// Most parts (attachments, locations, contacts) one message may carry; more gets
    /// `413 message_too_large`.
    pub max_parts: usize,
    /// Events one sender may cause per minute on this channel, per gateway instance
    /// (beyond: 429 with `Retry-After`, the provider retries); `0`: no limit.
    pub sender_rate_per_minute: u32,
    /// Events one sender may cause at once above that rate.
    pub sender_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Parsing a 1 MiB webhook with serde_json needs a few MiB; 64 leaves headroom.
            memory_bytes: 64 << 20,
            cpu_deadline: Duration::from_secs(1),
            // Covers a few provider API round trips inside `send`.
            call_timeout: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            fetch_timeout: Duration::from_secs(10),
            fetch_max_response_bytes: 4 << 20,
            // Like Spin's 128: amortizes instantiation, bounds state kept between calls.
            instance_reuse: 128,
            rate_per_second: None,
            rate_burst: None,
            // Provider caps are far lower (WhatsApp 4096 characters); a site's own chat
            // is the one that could send megabytes, once per stored copy.
            max_text_bytes: 64 << 10,
            max_parts: 20,
            // Generous: no person types ten messages a second, a looping bot does.
            sender_rate_per_minute: 600,
            sender_burst: 100,
        }
    }
}

/// Everything a channel's plugin calls can see or use (through the host, never directly
/// for secrets).
#[derive(Debug)]
pub struct ChannelEnv {
    /// The channel id (`/webhooks/{id}`).
    pub channel_id: String,
    /// `config = { … }` of the channel.
    pub config: BTreeMap<String, String>,
    /// `secrets = { … }` of the channel, resolved.
    pub secrets: BTreeMap<String, Secret>,
    /// `oauth2` secrets: access tokens minted and renewed by the host, filled in like
    /// any other secret.
    pub tokens: BTreeMap<String, Arc<TokenSource>>,
    /// Hosts `http-fetch` may reach.
    pub allowed_hosts: AllowedHosts,
    /// Per secret, the origins its placeholders may be sent to (`secrets_hosts`); a
    /// secret not listed may go to any of `allowed_hosts`.
    pub secrets_hosts: BTreeMap<String, AllowedHosts>,
    /// Sandbox limits.
    pub limits: Limits,
    /// The shared outbound HTTP client.
    pub fetch: FetchClient,
    /// A fixed time for the plugin's `now()` (ms since the Unix epoch): recorded webhooks
    /// replayed by `omnigate plugin test` carry signatures dated when they were recorded.
    /// `None` (always, when serving): the real clock.
    pub fixed_now_ms: Option<i64>,
}

impl ChannelEnv {
    /// Every secret's value for a request made now: the resolved ones, and a current
    /// access token of each `oauth2` secret (minted or renewed when due).
    pub async fn secrets_now(&self) -> Result<Cow<'_, BTreeMap<String, Secret>>, OAuth2Error> {
        if self.tokens.is_empty() {
            return Ok(Cow::Borrowed(&self.secrets));
        }
        let mut all = self.secrets.clone();
        for (name, source) in &self.tokens {
            all.insert(name.clone(), source.access_token(&self.fetch.client).await?);
        }
        Ok(Cow::Owned(all))
    }

    /// After an API answered 401 to a request that carried the `oauth2` secrets
    /// `names`: their tokens are renewed before the next request.
    pub async fn tokens_rejected(&self, names: &[String]) {
        for name in names {
            if let Some(source) = self.tokens.get(name) {
                source.invalidate().await;
            }
        }
    }

    /// An environment with nothing in it, for `describe()` and `plugin check`.
    pub fn empty(channel_id: &str, fetch: FetchClient) -> Self {
        Self {
            channel_id: channel_id.to_owned(),
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            tokens: BTreeMap::new(),
            allowed_hosts: AllowedHosts::default(),
            secrets_hosts: BTreeMap::new(),
            limits: Limits::default(),
            fetch,
            fixed_now_ms: None,
        }
    }
}
