//! `http-fetch`: outbound HTTP on a plugin's behalf, only to the channel's allowed hosts.
//!
//! Order matters: the URL is parsed and its host checked against the allow-list *before*
//! any secret is filled in, redirects are never followed (they could carry a filled-in
//! secret to another host), and the response is size-capped and has the secrets redacted.

use std::time::Duration;

use url::Url;

use super::placeholders::{Filler, contains_placeholder};
use crate::runtime::contract::v0_2::host_api::{FetchError, FetchRequest, FetchResponse};
use crate::runtime::contract::v0_2::types::Header;
use crate::runtime::env::ChannelEnv;

/// Perform `request` for the channel in `env`.
pub async fn fetch(env: &ChannelEnv, request: FetchRequest) -> Result<FetchResponse, FetchError> {
    let url = checked_url(env, &request.url)?;
    let secrets = env
        .secrets_now()
        .await
        .map_err(|error| FetchError::Connection(error.to_string()))?;
    let mut filler = Filler::new(&secrets);
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
    // Nothing is sent when a secret would go somewhere its `secrets_hosts` does not name.
    if let Some(name) = filler.filled_names().iter().find(|name| {
        env.secrets_hosts
            .get(name.as_str())
            .is_some_and(|hosts| !hosts.allows(&url))
    }) {
        return Err(FetchError::Denied(format!(
            "secret `{name}` may not be sent to `{}` (channel `{}` secrets_hosts)",
            url.host_str().unwrap_or_default(),
            env.channel_id
        )));
    }
    let started = std::time::Instant::now();
    // `without_url`: the URL may hold a filled-in secret (e.g. a bot token in the path).
    let response = builder
        .body(body)
        .send()
        .await
        .map_err(|error| transport_error(error.without_url()))?;
    let status = response.status().as_u16();
    if status == 401 {
        env.tokens_rejected(filler.filled_names()).await;
    }
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
    if let Some(part) = placeholder_outside_path(&url) {
        return Err(FetchError::Denied(format!(
            "secret placeholders are not allowed in the URL's {part} (only in the path, \
             headers and body)"
        )));
    }
    if let Some(name) = unscoped_path_secret(env, &url) {
        return Err(FetchError::Denied(format!(
            "secret `{name}` may be put in a URL path only when it is scoped to origins \
             (channel `{}`: give it a `secrets_hosts` entry)",
            env.channel_id
        )));
    }
    if !env.allowed_hosts.allows(&url) {
        return Err(FetchError::Denied(format!(
            "host `{host}` is not in the allowed hosts of channel `{}` ({})",
            env.channel_id,
            env.allowed_hosts.describe().join(", ")
        )));
    }
    env.fetch
        .check_target(&url)
        .map_err(|error| FetchError::Denied(error.to_string()))?;
    Ok(url)
}

/// The part of `url` (parsed with its placeholders still unfilled) other than the path
/// that holds a placeholder: host, userinfo, query or fragment (one in the port never
/// gets here: it does not parse as a port number).
///
/// Why the path is the one exception: the Telegram Bot API takes the bot token in the
/// path (`/bot<token>/sendMessage`). A secret in the host or port could move the
/// request; in the userinfo, query or fragment it is the part most often logged,
/// proxied or echoed back. The parsed URL is checked rather than the raw text so that
/// the URL parser's own reading (tabs dropped, `\` as `/`, braces percent-encoded) is
/// the one that counts.
fn placeholder_outside_path(url: &Url) -> Option<&'static str> {
    // Whole, because the `:` of a placeholder splits it into user and password.
    let userinfo = format!("{}:{}", url.username(), url.password().unwrap_or_default());
    [
        ("host", url.host_str().unwrap_or_default()),
        ("userinfo", userinfo.as_str()),
        ("query", url.query().unwrap_or_default()),
        ("fragment", url.fragment().unwrap_or_default()),
    ]
    .into_iter()
    .find(|(_, text)| holds_placeholder(text))
    .map(|(part, _)| part)
}

/// The first secret whose placeholder sits in `url`'s path although the secret has no
/// scope (`secrets_hosts` entry or declared outbound hosts): a secret in a path goes only
/// to an origin it is scoped to, never merely to any allowed host.
fn unscoped_path_secret(env: &ChannelEnv, url: &Url) -> Option<String> {
    let path = decode_braces(url.path());
    let mut filler = Filler::new(&env.secrets);
    // An unknown name is reported later, by the filling of the request itself.
    filler.fill_str(&path).ok()?;
    filler
        .filled_names()
        .iter()
        .find(|name| !env.secrets_hosts.contains_key(name.as_str()))
        .cloned()
}

/// Whether `text` holds a placeholder, as written or with its braces percent-encoded.
fn holds_placeholder(text: &str) -> bool {
    contains_placeholder(&decode_braces(text))
}

/// `%7B` / `%7D` / `%3A` (either case) back to braces and colons: the URL parser encodes
/// braces in the path and the userinfo, and a colon in the password.
fn decode_braces(text: &str) -> String {
    text.replace("%7B", "{")
        .replace("%7b", "{")
        .replace("%7D", "}")
        .replace("%7d", "}")
        .replace("%3A", ":")
        .replace("%3a", ":")
}

fn transport_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else if crate::netguard::is_refusal(&error) {
        // The host resolved to an address outside `[plugins] allow_networks`.
        FetchError::Denied("target not allowed: the host resolves to an internal address".into())
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::netguard::NetworkPolicy;
    use crate::runtime::{AllowedHosts, FetchClient};
    use crate::secret::Secret;

    fn url(raw: &str) -> Url {
        Url::parse(raw).expect("valid url")
    }

    /// A channel with secrets `token` (scoped to `https://api.example`) and `loose`
    /// (no scope).
    fn env() -> ChannelEnv {
        let policy = NetworkPolicy::parse(&[]).expect("empty policy");
        let mut env = ChannelEnv::empty("ch", FetchClient::new(policy).expect("client"));
        env.secrets = BTreeMap::from([
            ("token".to_owned(), Secret::new("token-value")),
            ("loose".to_owned(), Secret::new("loose-value")),
        ]);
        env.secrets_hosts = BTreeMap::from([(
            "token".to_owned(),
            AllowedHosts::parse(&["https://api.example".to_owned()]).expect("hosts"),
        )]);
        env
    }

    /// An `oauth2` secret: minted on first use, never shown to the plugin, and renewed
    /// after the API answers 401.
    #[tokio::test]
    async fn oauth2_tokens_are_filled_redacted_and_renewed_after_401() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use axum::Router;
        use axum::routing::post;

        use crate::secret::oauth2::{ClientAuth, OAuth2Config, TokenSource};

        let minted = Arc::new(AtomicUsize::new(0));
        let counter = minted.clone();
        let app = Router::new()
            .route(
                "/token",
                post(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        axum::Json(serde_json::json!({
                            "access_token": format!("tok-{n}"),
                            "token_type": "Bearer",
                            "expires_in": 3600,
                        }))
                    }
                }),
            )
            .route(
                "/api",
                post(|headers: axum::http::HeaderMap| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let status = if auth == "Bearer tok-1" { 401 } else { 200 };
                    (
                        axum::http::StatusCode::from_u16(status).unwrap_or_default(),
                        format!("seen {auth}"),
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let policy = NetworkPolicy::parse(&["127.0.0.0/8".to_owned()]).expect("policy");
        let mut env = ChannelEnv::empty("dest", FetchClient::new(policy).expect("client"));
        env.allowed_hosts = AllowedHosts::parse(std::slice::from_ref(&origin)).expect("hosts");
        let source = TokenSource::new(OAuth2Config {
            token_url: format!("{origin}/token"),
            client_id: "c".into(),
            client_secret: Secret::new("client-secret"),
            refresh_token: Secret::new("refresh"),
            scopes: vec![],
            client_auth: ClientAuth::Basic,
        })
        .expect("source");
        env.tokens = BTreeMap::from([("access_token".to_owned(), Arc::new(source))]);
        let call = || FetchRequest {
            method: "POST".into(),
            url: format!("{origin}/api"),
            headers: vec![Header {
                name: "authorization".into(),
                value: "Bearer {{secret:access_token}}".into(),
            }],
            body: Vec::new(),
            timeout_ms: None,
        };
        let first = fetch(&env, call()).await.expect("first");
        assert_eq!(first.status, 401);
        assert_eq!(
            String::from_utf8_lossy(&first.body),
            "seen Bearer [redacted]"
        );
        let second = fetch(&env, call()).await.expect("second");
        assert_eq!(second.status, 200);
        assert_eq!(
            String::from_utf8_lossy(&second.body),
            "seen Bearer [redacted]"
        );
        let third = fetch(&env, call()).await.expect("third");
        assert_eq!(third.status, 200);
        assert_eq!(
            minted.load(Ordering::SeqCst),
            2,
            "renewed once, then reused"
        );
    }

    #[test]
    fn placeholders_are_refused_outside_the_path() {
        for (raw, part) in [
            ("https://api.example/x?t={{secret:token}}", "query"),
            (
                "https://api.example/x?a=1&b=%7B%7Bsecret:token%7D%7D",
                "query",
            ),
            ("https://api.example/x#{{secret:token}}", "fragment"),
            ("https://{{secret:token}}@api.example/x", "userinfo"),
            ("https://u:{{secret:token}}@api.example/x", "userinfo"),
            // The parser drops tabs: the userinfo is what it reads, not what the text shows.
            ("https:/\t/{{secret:token}}@api.example/x", "userinfo"),
        ] {
            assert_eq!(placeholder_outside_path(&url(raw)), Some(part), "{raw}");
        }
        assert!(Url::parse("https://api.example:{{secret:token}}/x").is_err());
        assert_eq!(
            placeholder_outside_path(&url("https://api.example/bot{{secret:token}}/send")),
            None
        );
    }

    #[test]
    fn a_path_placeholder_needs_a_scoped_secret() {
        let env = env();
        assert_eq!(
            unscoped_path_secret(&env, &url("https://api.example/bot{{secret:token}}/x")),
            None
        );
        assert_eq!(
            unscoped_path_secret(&env, &url("https://api.example/bot{{secret:loose}}/x")),
            Some("loose".to_owned())
        );
        // The same secret in a header or body is not this check's business.
        assert_eq!(
            unscoped_path_secret(&env, &url("https://api.example/plain")),
            None
        );
    }
}
