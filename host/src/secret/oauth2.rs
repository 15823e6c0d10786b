//! `oauth2` secrets: access tokens the host mints from a refresh token, caches and renews,
//! so a plugin writes `{{secret:access_token}}` and never holds the refresh token, the
//! client secret or the access token itself.
//!
//! The exchange is the OAuth 2.0 refresh-token grant (RFC 6749 §6), done by the `oauth2`
//! crate over the host's own HTTP client. One refresh runs at a time per secret: callers
//! that need a token while it is being renewed wait for that one request.

use std::fmt;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicRequestTokenError};
use oauth2::{
    AuthType, ClientId, ClientSecret, HttpRequest, HttpResponse, RefreshToken, RequestTokenError,
    Scope, TokenResponse as _, TokenUrl,
};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Secret;

/// A token is renewed this long before the expiry its server gave, so a request that
/// carries it does not arrive with a token that expired on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Lifetime assumed when the token server does not say (`expires_in` is optional in
/// RFC 6749); one hour is what the large providers issue.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest a token request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1; the default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body, for servers that want them there.
    RequestBody,
}

/// `{ oauth2 = { … } }` in a `secrets` table.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint, e.g. `https://oauth2.googleapis.com/token`.
    pub token_url: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret (`env:`/`file:` references work).
    pub client_secret: Secret,
    /// The long-lived refresh token (`env:`/`file:` references work).
    pub refresh_token: Secret,
    /// Scopes to ask for; empty (the default) keeps the refresh token's own.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How the client authenticates to the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Config")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuth2Error {
    /// The configuration cannot work.
    #[error("oauth2 secret: {0}")]
    Config(String),
    /// The token server answered with an OAuth error (e.g. `invalid_grant`: the refresh
    /// token was revoked); asking again will not help until the configuration changes.
    #[error("oauth2 token endpoint refused the refresh token: {0}")]
    Refused(String),
    /// The token server could not be reached or answered something else; may pass.
    #[error("oauth2 token endpoint failed: {0}")]
    Unavailable(String),
}

/// A token and when to stop using it.
struct Cached {
    token: Secret,
    renew_at: Instant,
    /// A new refresh token, when the server rotated it.
    refresh_token: Option<Secret>,
}

/// Mints and caches the access tokens of one `oauth2` secret.
pub struct TokenSource {
    config: OAuth2Config,
    token_url: TokenUrl,
    cached: Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source for `config`; checks the token URL.
    pub fn new(config: OAuth2Config) -> Result<Self, OAuth2Error> {
        let token_url = TokenUrl::new(config.token_url.clone())
            .map_err(|error| OAuth2Error::Config(format!("`token_url` is not a URL: {error}")))?;
        if !matches!(token_url.url().scheme(), "https" | "http") {
            return Err(OAuth2Error::Config(
                "`token_url` must be an http(s) URL".to_owned(),
            ));
        }
        if config.client_id.is_empty() {
            return Err(OAuth2Error::Config("`client_id` is empty".to_owned()));
        }
        Ok(Self {
            config,
            token_url,
            cached: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one from the token endpoint. The
    /// client must not follow redirects (a redirected token request would carry the
    /// client secret elsewhere).
    pub async fn access_token(&self, client: &reqwest::Client) -> Result<Secret, OAuth2Error> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(current.token.clone());
        }
        let refresh_token = cached
            .as_ref()
            .and_then(|c| c.refresh_token.clone())
            .unwrap_or_else(|| self.config.refresh_token.clone());
        let fresh = self.refresh(client, &refresh_token).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forget the cached token, e.g. after an API answered that it is invalid.
    pub async fn invalidate(&self) {
        if let Some(current) = self.cached.lock().await.as_mut() {
            current.renew_at = Instant::now();
        }
    }

    async fn refresh(
        &self,
        client: &reqwest::Client,
        refresh_token: &Secret,
    ) -> Result<Cached, OAuth2Error> {
        let auth_type = match self.config.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::RequestBody => AuthType::RequestBody,
        };
        let oauth = BasicClient::new(ClientId::new(self.config.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.config.client_secret.expose().to_owned(),
            ))
            .set_token_uri(self.token_url.clone())
            .set_auth_type(auth_type);
        let refresh = RefreshToken::new(refresh_token.expose().to_owned());
        // Owned, so the request future borrows nothing (the import calling this must be
        // `Send + 'static`).
        let transport = |request: HttpRequest| send(client.clone(), request);
        let started = Instant::now();
        let response = oauth
            .exchange_refresh_token(&refresh)
            .add_scopes(self.config.scopes.iter().cloned().map(Scope::new))
            .request_async(&transport)
            .await
            .map_err(classify)?;
        let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
        Ok(Cached {
            token: Secret::new(response.access_token().secret().as_str()),
            renew_at: started + lifetime.saturating_sub(RENEW_BEFORE),
            refresh_token: response
                .refresh_token()
                .map(|rotated| Secret::new(rotated.secret().as_str())),
        })
    }
}

/// Sends one token request with `client`.
async fn send(client: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, SendError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        // Without the URL: it is configuration, and errors reach logs.
        .map_err(|error| SendError(error.without_url().to_string()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|error| SendError(error.without_url().to_string()))?;
    let mut out = HttpResponse::new(body.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A transport failure of a token request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SendError(String);

/// Sorts a failed exchange into refused (the server's OAuth error) and unavailable.
fn classify(error: BasicRequestTokenError<SendError>) -> OAuth2Error {
    match error {
        RequestTokenError::ServerResponse(response) => OAuth2Error::Refused(response.to_string()),
        RequestTokenError::Request(error) => OAuth2Error::Unavailable(error.to_string()),
        RequestTokenError::Parse(error, _) => {
            OAuth2Error::Unavailable(format!("unreadable token response: {error}"))
        }
        RequestTokenError::Other(error) => OAuth2Error::Unavailable(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::post;

    use super::*;

    /// A token endpoint that counts requests, checks the grant and answers `expires_in`.
    async fn token_server(expires_in: u64) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new().route(
            "/token",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let form: std::collections::HashMap<String, String> =
                    serde_urlencoded::from_str(&body).unwrap_or_default();
                async move {
                    let basic = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if form.get("refresh_token").map(String::as_str) != Some("rt-1")
                        || form.get("grant_type").map(String::as_str) != Some("refresh_token")
                        || !basic.starts_with("Basic ")
                    {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::Json(serde_json::json!({"error": "invalid_grant",
                                    "error_description": "Token has been expired or revoked."})),
                        );
                    }
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(serde_json::json!({
                            "access_token": format!("at-{n}"),
                            "token_type": "Bearer",
                            "expires_in": expires_in,
                        })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/token", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    fn config(token_url: String, refresh_token: &str) -> OAuth2Config {
        OAuth2Config {
            token_url,
            client_id: "client-1".to_owned(),
            client_secret: Secret::new("cs-1"),
            refresh_token: Secret::new(refresh_token),
            scopes: vec!["https://www.googleapis.com/auth/datamanager".to_owned()],
            client_auth: ClientAuth::Basic,
        }
    }

    fn client() -> reqwest::Client {
        crate::tls::ensure_crypto_provider();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn minted_once_then_reused_and_renewed_after_invalidate() {
        let (url, calls) = token_server(3599).await;
        let source = TokenSource::new(config(url, "rt-1")).expect("source");
        let client = client();
        let first = source.access_token(&client).await.expect("token");
        let second = source.access_token(&client).await.expect("token");
        assert_eq!(first.expose(), "at-1");
        assert_eq!(second.expose(), "at-1", "cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        source.invalidate().await;
        assert_eq!(
            source.access_token(&client).await.expect("token").expose(),
            "at-2"
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let (url, calls) = token_server(3599).await;
        let source = Arc::new(TokenSource::new(config(url, "rt-1")).expect("source"));
        let client = client();
        let tokens = futures::future::join_all((0..8).map(|_| source.access_token(&client))).await;
        assert!(
            tokens
                .iter()
                .all(|t| t.as_ref().map(Secret::expose) == Ok("at-1"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn short_lived_token_is_renewed_on_next_use() {
        // Under a minute of life: renewed at once, never served stale.
        let (url, calls) = token_server(30).await;
        let source = TokenSource::new(config(url, "rt-1")).expect("source");
        let client = client();
        source.access_token(&client).await.expect("token");
        assert_eq!(
            source.access_token(&client).await.expect("token").expose(),
            "at-2"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn revoked_refresh_token_is_refused_without_secrets_in_the_error() {
        let (url, _) = token_server(3599).await;
        let source = TokenSource::new(config(url, "rt-revoked")).expect("source");
        let error = source.access_token(&client()).await.expect_err("refused");
        let text = error.to_string();
        assert!(matches!(error, OAuth2Error::Refused(_)), "{text}");
        assert!(text.contains("invalid_grant"), "{text}");
        assert!(
            !text.contains("rt-revoked") && !text.contains("cs-1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/token", listener.local_addr().expect("addr"));
        drop(listener);
        let source = TokenSource::new(config(url, "rt-1")).expect("source");
        let error = source.access_token(&client()).await.expect_err("down");
        assert!(matches!(error, OAuth2Error::Unavailable(_)), "{error}");
    }

    #[test]
    fn bad_token_url_is_named() {
        let error = TokenSource::new(config("not a url".to_owned(), "rt")).expect_err("bad");
        assert!(error.to_string().contains("token_url"), "{error}");
        let error = TokenSource::new(config("ftp://x/token".to_owned(), "rt")).expect_err("bad");
        assert!(error.to_string().contains("http(s)"), "{error}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let text = format!("{:?}", config("https://t.example/token".to_owned(), "rt-9"));
        assert!(!text.contains("rt-9") && !text.contains("cs-1"), "{text}");
    }
}
