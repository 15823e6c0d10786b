//! `http-fetch`: outbound HTTP on a plugin's behalf, only to the channel's allowed hosts.
//!
//! Order matters: the URL is parsed and its host checked against the allow-list *before*
//! any secret is filled in, redirects are never followed (they could carry a filled-in
//! secret to another host), and the response is size-capped and has the secrets redacted.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::placeholders::{Filler, contains_placeholder};
use crate::runtime::bindings::host_api::{FetchError, FetchRequest, FetchResponse};
use crate::runtime::bindings::types::Header;
use crate::runtime::env::ChannelEnv;

/// The outbound HTTP client shared by all channels.
#[derive(Debug, Clone)]
pub struct FetchClient {
    client: reqwest::Client,
}

impl FetchClient {
    /// A client that never follows redirects.
    pub fn new() -> Result<Self, reqwest::Error> {
        crate::tls::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client })
    }
}

/// One allowed destination: `host`, `*.host`, with optional scheme and port
/// (`graph.facebook.com`, `*.slack.com`, `http://127.0.0.1:9000`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

/// The hosts one channel's plugin may fetch from, parsed once at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    /// Parse the operator's `allowed_hosts` list.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| HostPattern::parse(entry))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `url` may be fetched.
    pub fn allows(&self, url: &Url) -> bool {
        self.0.iter().any(|pattern| pattern.matches(url))
    }

    /// The entries, as configured, for display.
    pub fn describe(&self) -> Vec<String> {
        self.0.iter().map(HostPattern::to_string).collect()
    }
}

impl<'de> Deserialize<'de> for AllowedHosts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&entries).map_err(serde::de::Error::custom)
    }
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => {
                (Some(scheme.to_owned()), rest)
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "allowed host `{entry}`: scheme `{scheme}` is not http or https"
                ));
            }
            None => (None, entry),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("allowed host `{entry}`: bad port `{port}`"))?;
                (host, Some(port))
            }
            _ => (rest, None),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("allowed host `{entry}` is not a host name"));
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        let scheme_ok = self
            .scheme
            .as_deref()
            .is_none_or(|scheme| scheme == url.scheme());
        let port_ok = self
            .port
            .is_none_or(|port| url.port_or_known_default() == Some(port));
        host_ok && scheme_ok && port_ok
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Perform `request` for the channel in `env`.
pub async fn fetch(env: &ChannelEnv, request: FetchRequest) -> Result<FetchResponse, FetchError> {
    let url = checked_url(env, &request.url)?;
    let mut filler = Filler::new(&env.secrets);
    let unknown =
        |name: String| FetchError::Denied(format!("unknown secret `{name}` in placeholder"));
    // Fill the text the plugin wrote (a parsed URL would have percent-encoded the braces),
    // then make sure the filled-in value did not move the request to another destination.
    let filled_url = filler.fill_str(&request.url).map_err(unknown)?;
    let filled = Url::parse(&filled_url).map_err(|_| {
        FetchError::InvalidRequest("the URL is not valid once secrets are filled in".into())
    })?;
    if (
        filled.scheme(),
        filled.host_str(),
        filled.port_or_known_default(),
    ) != (url.scheme(), url.host_str(), url.port_or_known_default())
    {
        return Err(FetchError::Denied(
            "a filled-in secret would change the URL's destination".into(),
        ));
    }
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| FetchError::InvalidRequest(format!("bad method `{}`", request.method)))?;
    let timeout = request
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.into()))
        .unwrap_or(env.limits.fetch_timeout)
        .min(env.limits.fetch_timeout);

    let mut builder = env.fetch.client.request(method, filled).timeout(timeout);
    for Header { name, value } in &request.headers {
        builder = builder.header(name.as_str(), filler.fill_str(value).map_err(unknown)?);
    }
    let body = filler.fill(&request.body).map_err(unknown)?;
    let started = std::time::Instant::now();
    // `without_url`: the URL may hold a filled-in secret (e.g. a bot token in the path).
    let response = builder
        .body(body)
        .send()
        .await
        .map_err(|error| transport_error(error.without_url()))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: filler.redact_str(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        })
        .collect();
    let body = read_capped(response, env.limits.fetch_max_response_bytes).await?;
    tracing::debug!(channel = %env.channel_id, url = %request.url, status, elapsed_ms = started.elapsed().as_millis() as u64, "http-fetch");
    Ok(FetchResponse {
        status,
        headers,
        body: filler.redact(body),
    })
}

/// Parse the URL and check it against the allow-list, with placeholders still unfilled.
fn checked_url(env: &ChannelEnv, raw: &str) -> Result<Url, FetchError> {
    let url =
        Url::parse(raw).map_err(|error| FetchError::InvalidRequest(format!("bad URL: {error}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(FetchError::InvalidRequest(format!(
            "scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    let host = url.host_str().unwrap_or_default();
    if contains_placeholder(host) || host.contains("%7B%7Bsecret") {
        return Err(FetchError::Denied(
            "secret placeholders are not allowed in the host".into(),
        ));
    }
    if !env.allowed_hosts.allows(&url) {
        return Err(FetchError::Denied(format!(
            "host `{host}` is not in the allowed hosts of channel `{}` ({})",
            env.channel_id,
            env.allowed_hosts.describe().join(", ")
        )));
    }
    Ok(url)
}

fn transport_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else if error.is_builder() {
        FetchError::InvalidRequest(error.to_string())
    } else {
        FetchError::Connection(error.to_string())
    }
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, FetchError> {
    if let Some(length) = response
        .content_length()
        .filter(|length| *length > cap as u64)
    {
        return Err(FetchError::TooLarge(length));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| transport_error(error.without_url()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(FetchError::TooLarge((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .expect("valid patterns")
    }

    fn url(raw: &str) -> Url {
        Url::parse(raw).expect("valid url")
    }

    #[test]
    fn exact_wildcard_scheme_and_port() {
        let allowed = hosts(&["graph.facebook.com", "*.slack.com", "http://127.0.0.1:9000"]);
        assert!(allowed.allows(&url("https://graph.facebook.com/v21.0/1/messages")));
        assert!(allowed.allows(&url("https://hooks.slack.com/x")));
        assert!(!allowed.allows(&url("https://slack.com/x")));
        assert!(allowed.allows(&url("http://127.0.0.1:9000/reply")));
        assert!(!allowed.allows(&url("https://127.0.0.1:9000/reply")));
        assert!(!allowed.allows(&url("http://127.0.0.1:9001/reply")));
        assert!(!allowed.allows(&url("https://graph.facebook.com.evil.example/")));
        assert!(!allowed.allows(&url("https://evil.example/?graph.facebook.com")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(AllowedHosts::parse(&["ftp://x".into()]).is_err());
        assert!(AllowedHosts::parse(&["x:notaport".into()]).is_err());
        assert!(AllowedHosts::parse(&["".into()]).is_err());
    }
}
