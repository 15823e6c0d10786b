//! `http-fetch`: outbound HTTP on a plugin's behalf, only to the channel's allowed hosts.
//!
//! Order matters: the URL is parsed and its host checked against the allow-list *before*
//! any secret is filled in, redirects are never followed (they could carry a filled-in
//! secret to another host), and the response is size-capped and has the secrets redacted.

use std::time::Duration;

use url::Url;

use super::placeholders::{Filler, contains_placeholder};
use crate::runtime::bindings::host_api::{FetchError, FetchRequest, FetchResponse};
use crate::runtime::bindings::types::Header;
use crate::runtime::env::ChannelEnv;

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
    env.fetch
        .check_target(&url)
        .map_err(|error| FetchError::Denied(error.to_string()))?;
    Ok(url)
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
