//! Where plugins may send requests, and the client that sends them: the allow-list is
//! parsed once from the operator's `allowed_hosts`, the client is shared by all channels.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::netguard::NetworkPolicy;

/// The outbound HTTP client shared by all channels.
#[derive(Debug, Clone)]
pub struct FetchClient {
    pub(crate) client: reqwest::Client,
    /// Which addresses a fetch may reach (`[plugins] allow_networks`); names are checked
    /// by the client's resolver, address literals by [`FetchClient::check_target`].
    policy: NetworkPolicy,
}

impl FetchClient {
    /// A client that never follows redirects and connects only to addresses `policy`
    /// permits.
    pub fn new(policy: NetworkPolicy) -> Result<Self, reqwest::Error> {
        crate::tls::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(policy.resolver())
            .user_agent(concat!("omnigate/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client, policy })
    }

    /// Refuses a URL whose host is an address literal outside the allowed networks (the
    /// resolver never sees literals).
    pub(crate) fn check_target(&self, url: &Url) -> Result<(), crate::netguard::TargetRefused> {
        self.policy.check_url(url)
    }
}

/// One allowed destination: `host`, `*.host`, with optional scheme and port
/// (`graph.facebook.com`, `*.slack.com`, `http://127.0.0.1:9000`). It matches one
/// origin: the scheme defaults to `https` and the port to the scheme's default, so
/// `127.0.0.1` does not reach every port of that host.
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
        let scheme = self.scheme.as_deref().unwrap_or("https");
        let port = self.port.unwrap_or(if scheme == "http" { 80 } else { 443 });
        host_ok && url.scheme() == scheme && url.port_or_known_default() == Some(port)
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
    fn scheme_and_port_default_to_https_443() {
        let allowed = hosts(&["api.example", "http://plain.example"]);
        assert!(allowed.allows(&url("https://api.example/x")));
        assert!(allowed.allows(&url("https://api.example:443/x")));
        assert!(!allowed.allows(&url("http://api.example/x")));
        assert!(!allowed.allows(&url("https://api.example:6379/x")));
        assert!(allowed.allows(&url("http://plain.example/x")));
        assert!(!allowed.allows(&url("http://plain.example:8080/x")));
        assert!(!allowed.allows(&url("https://plain.example/x")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(AllowedHosts::parse(&["ftp://x".into()]).is_err());
        assert!(AllowedHosts::parse(&["x:notaport".into()]).is_err());
        assert!(AllowedHosts::parse(&["".into()]).is_err());
    }
}
