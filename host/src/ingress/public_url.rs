//! The URL a provider called, as the provider wrote it: some providers sign it (Twilio's
//! `X-Twilio-Signature` covers the full URL), and behind a proxy or a tunnel it is not the
//! URL the gateway sees.
//!
//! The host computes it and hands it to the plugin as the request header
//! [`HEADER`] (the plugin contract has no field for it, and a header keeps the contract
//! unchanged); a header of that name sent by the caller is removed first, so a plugin can
//! rely on it.

use std::net::IpAddr;

use axum::http::{HeaderMap, Uri};
use url::Url;

/// The request header that carries the public URL to the plugin.
pub const HEADER: &str = "x-omnigate-public-url";

/// `[server] public_url` and `[server] trust_forwarded`, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicUrl {
    /// The gateway's external base URL (scheme, host, port and any path prefix a proxy
    /// adds), without a trailing slash.
    base: Option<String>,
    /// Whether `X-Forwarded-Proto` / `X-Forwarded-Host` describe the caller's URL (only
    /// true behind a proxy that sets them and drops the caller's own).
    trust_forwarded: bool,
}

/// Why `[server] public_url` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublicUrlError {
    /// Not an absolute URL.
    #[error("`[server] public_url` is not a URL: {0}")]
    Unparsable(String),
    /// Not `http`/`https`, or it carries a query, fragment or credentials.
    #[error(
        "`[server] public_url` must be an http(s) base URL without query, fragment or credentials: {0}"
    )]
    NotABase(String),
}

impl PublicUrl {
    /// The settings, checked: `base` must be an `http(s)` URL without query, fragment or
    /// userinfo (e.g. `https://hooks.example.com` or `https://example.com/omnigate`).
    pub fn new(base: Option<&str>, trust_forwarded: bool) -> Result<Self, PublicUrlError> {
        let base = match base {
            None => None,
            Some(raw) => Some(checked_base(raw)?),
        };
        Ok(Self {
            base,
            trust_forwarded,
        })
    }

    /// The caller's address: the last `X-Forwarded-For` entry (the one the trusted proxy
    /// added) when forwarded headers are trusted, else `peer`, the connection's.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let forwarded = self
            .trust_forwarded
            .then(|| {
                headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .flat_map(|value| value.split(','))
                    .last()
                    .and_then(|last| last.trim().parse::<IpAddr>().ok())
            })
            .flatten();
        forwarded.or(peer)
    }

    /// The URL the provider called for a request to `uri` with `headers`: the configured
    /// base, else the forwarded scheme and host when trusted, else `http://` + `Host`.
    /// `None` when nothing names the host (an HTTP/1.0 request without `Host`).
    pub fn of(&self, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        let path_and_query = uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or_else(|| uri.path());
        if let Some(base) = &self.base {
            return Some(format!("{base}{path_and_query}"));
        }
        let forwarded = |name: &str| {
            self.trust_forwarded
                .then(|| first_value(headers, name))
                .flatten()
        };
        let scheme = forwarded("x-forwarded-proto")
            .or_else(|| uri.scheme_str().map(str::to_owned))
            .unwrap_or_else(|| "http".to_owned());
        let host = forwarded("x-forwarded-host")
            .or_else(|| first_value(headers, "host"))
            .or_else(|| uri.authority().map(|authority| authority.to_string()))?;
        Some(format!("{scheme}://{host}{path_and_query}"))
    }
}

fn checked_base(raw: &str) -> Result<String, PublicUrlError> {
    let url =
        Url::parse(raw.trim()).map_err(|error| PublicUrlError::Unparsable(error.to_string()))?;
    let fits = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !fits {
        return Err(PublicUrlError::NotABase(raw.to_owned()));
    }
    // `Url` writes a bare origin with a `/` path; the request path brings its own.
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The first comma-separated value of header `name` (proxies append theirs), trimmed.
fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn uri(raw: &str) -> Uri {
        raw.parse().expect("uri")
    }

    #[test]
    fn the_configured_base_wins() {
        let public =
            PublicUrl::new(Some("https://hooks.example.com/omnigate/"), true).expect("base");
        let seen = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "evil.example"),
        ]);
        assert_eq!(
            public
                .of(&uri("/webhooks/twilio-sms?x=1&y=%20"), &seen)
                .as_deref(),
            Some("https://hooks.example.com/omnigate/webhooks/twilio-sms?x=1&y=%20")
        );
        let bare = PublicUrl::new(Some("https://hooks.example.com"), false).expect("base");
        assert_eq!(
            bare.of(&uri("/webhooks/t"), &seen).as_deref(),
            Some("https://hooks.example.com/webhooks/t")
        );
    }

    #[test]
    fn the_client_is_the_proxy_s_last_forwarded_entry_only_when_trusted() {
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9".parse().expect("value"),
        );
        let trusted = PublicUrl::new(None, true).expect("settings");
        assert_eq!(
            trusted.client(Some(peer), &headers),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(
            PublicUrl::default().client(Some(peer), &headers),
            Some(peer)
        );
        assert_eq!(trusted.client(Some(peer), &HeaderMap::new()), Some(peer));
    }

    #[test]
    fn forwarded_headers_count_only_when_trusted() {
        let seen = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "hooks.example.com"),
        ]);
        let trusted = PublicUrl::new(None, true).expect("settings");
        assert_eq!(
            trusted.of(&uri("/webhooks/t"), &seen).as_deref(),
            Some("https://hooks.example.com/webhooks/t")
        );
        let untrusted = PublicUrl::default();
        assert_eq!(
            untrusted.of(&uri("/webhooks/t?a=b"), &seen).as_deref(),
            Some("http://127.0.0.1:8080/webhooks/t?a=b")
        );
        assert_eq!(untrusted.of(&uri("/webhooks/t"), &HeaderMap::new()), None);
    }

    #[test]
    fn bad_bases_are_refused_with_the_reason() {
        assert!(matches!(
            PublicUrl::new(Some("hooks.example.com"), false),
            Err(PublicUrlError::Unparsable(_))
        ));
        for bad in [
            "ftp://hooks.example.com",
            "https://hooks.example.com/?a=1",
            "https://u:p@hooks.example.com",
        ] {
            assert!(
                matches!(
                    PublicUrl::new(Some(bad), false),
                    Err(PublicUrlError::NotABase(_))
                ),
                "{bad}"
            );
        }
    }
}
