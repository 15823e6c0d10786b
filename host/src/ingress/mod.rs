//! Provider webhooks: `GET|POST /webhooks/{channel_id}` → the channel's plugin → pipeline.
//!
//! The provider gets a 2xx only when every event of the request has been accepted; any
//! failure after the plugin (store down, delivery full) is a 5xx so the provider retries,
//! and the events accepted before the failure are deduped on the retry.

pub mod public_url;
mod request;

pub use public_url::{HEADER as PUBLIC_URL_HEADER, PublicUrl, PublicUrlError};

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::app::App;
use crate::http_error::ApiError;
use crate::metrics;
use crate::pipeline::PipelineError;
use crate::runtime::types::{WebhookError, WebhookOutcome};

/// The webhook handler. Every answer is counted in `omnigate_webhooks_total` by channel
/// and outcome (`accepted`, or the error code returned; accepted ones in [`handle`]).
pub async fn webhook(
    State(app): State<Arc<App>>,
    Path(channel_id): Path<String>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    // The root of the message's trace (a provider's own trace context is not adopted:
    // it is outside data, and one trace per inbound message is the unit operators follow).
    let span = tracing::info_span!(
        "ingress",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        channel = %channel_id,
        http.request.method = %request.method(),
        http.response.status_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let answer = handle(&app, &channel_id, request)
        .instrument(span.clone())
        .await;
    match &answer {
        Ok(response) => {
            span.record("outcome", "accepted");
            span.record("http.response.status_code", response.status().as_u16());
        }
        Err(error) => {
            // Unknown channel ids are chosen by whoever calls: one label for all of them.
            let label = if error.code == "unknown_channel" {
                "unknown"
            } else {
                channel_id.as_str()
            };
            metrics::webhook(label, error.code);
            span.record("outcome", error.code);
            span.record("http.response.status_code", error.status.as_u16());
            if error.status.is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
    }
    answer
}

async fn handle(app: &App, channel_id: &str, request: Request<Body>) -> Result<Response, ApiError> {
    let (Some(channel), Some(meta)) = (app.registry.get(channel_id), app.channel_meta(channel_id))
    else {
        return Err(ApiError::not_found(
            "channel",
            format!("no channel `{channel_id}` is configured"),
        ));
    };
    if let Err(wait) = channel.admit() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("channel `{channel_id}` is over its inbound rate limit; retry later"),
        )
        .retry_after(Some(wait.as_secs().max(1) as u32)));
    }
    let request =
        request::read(request, channel.env.limits.max_body_bytes, &app.public_url).await?;
    let plugin_span = tracing::info_span!(
        "plugin",
        plugin = %channel.plugin.label,
        function = "handle-webhook",
        outcome = tracing::field::Empty,
    );
    let outcome = channel
        .handle_webhook_lent(&request.lend())
        .instrument(plugin_span.clone())
        .await;
    plugin_span.record("outcome", plugin_outcome(&outcome));
    let outcome = outcome.map_err(|error| {
        remember(app, channel_id, error.kind(), error.to_string());
        ApiError::from_call(error)
    })?;
    let outcome = outcome.map_err(|error| {
        let refused = refused(channel_id, error);
        remember(app, channel_id, refused.code, refused.message.clone());
        refused
    })?;
    let WebhookOutcome { response, events } = outcome;
    if let Err(wait) = channel.admit_senders(events.iter().map(|event| event.contact.id.as_str())) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "sender_rate_limited",
            format!("a sender on channel `{channel_id}` is over its rate limit; retry later"),
        )
        .retry_after(Some(wait.as_secs().max(1) as u32)));
    }
    let count = events.len();
    let report = app
        .pipeline
        .ingest_webhook(&meta, events, &request.body)
        .await
        .map_err(|error| pipeline_failed(channel_id, count, error))?;
    channel.metrics.accepted(report.accepted, report.duplicates);
    tracing::debug!(channel = %channel_id, accepted = report.accepted, duplicates = report.duplicates, "webhook processed");
    Ok(provider_response(response))
}

/// Keep a failed or refused `handle-webhook` call for the console's Plugins page.
fn remember(app: &App, channel_id: &str, kind: &str, reason: String) {
    app.plugin_errors.record(
        channel_id,
        crate::runtime::PluginError {
            at: jiff::Timestamp::now(),
            function: "handle-webhook",
            kind: kind.to_owned(),
            reason,
        },
    );
}

/// The plugin call's outcome as a span attribute.
fn plugin_outcome<E>(outcome: &Result<Result<WebhookOutcome, WebhookError>, E>) -> &'static str {
    match outcome {
        Ok(Ok(_)) => "ok",
        Ok(Err(WebhookError::Unauthorized(_))) => "unauthorized",
        Ok(Err(WebhookError::Forbidden(_))) => "forbidden",
        Ok(Err(WebhookError::BadRequest(_))) => "bad_request",
        Err(_) => "failed",
    }
}

fn refused(channel: &str, error: WebhookError) -> ApiError {
    let (status, code, reason) = match error {
        WebhookError::Unauthorized(reason) => (StatusCode::UNAUTHORIZED, "unauthorized", reason),
        WebhookError::Forbidden(reason) => (StatusCode::FORBIDDEN, "forbidden", reason),
        WebhookError::BadRequest(reason) => (StatusCode::BAD_REQUEST, "bad_request", reason),
    };
    tracing::info!(channel, status = status.as_u16(), %reason, "webhook refused by plugin");
    ApiError::new(status, code, reason)
}

/// The caller gets a code and a short fixed message; the error itself (a store address,
/// a script digest, event contents) is only logged.
fn pipeline_failed(channel: &str, events: usize, error: PipelineError) -> ApiError {
    if let PipelineError::TooLarge(reason) = &error {
        tracing::warn!(channel, events, %reason, "webhook refused: a message over the channel's limits");
    } else {
        tracing::error!(channel, events, %error, "webhook not accepted; the provider will retry");
    }
    match error {
        // The caller's own input: it gets the reason, which names no internals.
        PipelineError::TooLarge(reason) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "message_too_large", reason)
        }
        PipelineError::Invalid(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_invalid_event",
            "the channel's plugin produced an invalid event",
        ),
        PipelineError::Store(_) => ApiError::unavailable(
            "store_unavailable",
            "the context store is unavailable; retry later",
        ),
        PipelineError::Delivery(_) => {
            ApiError::unavailable("overloaded", "delivery is busy; retry later")
                .retry_after(Some(5))
        }
    }
}

/// The plugin's response for the provider (a handshake echo, an ack body…). A
/// `content-type` from the plugin replaces the default one instead of adding a second.
fn provider_response(response: crate::runtime::types::HttpResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let mut out = (status, response.body).into_response();
    for header in response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_str(&header.value),
        ) {
            if name == axum::http::header::CONTENT_TYPE {
                out.headers_mut().insert(name, value);
            } else {
                out.headers_mut().append(name, value);
            }
        }
    }
    out
}
