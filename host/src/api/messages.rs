//! `POST /v1/conversations/{id}/messages`: reply on the conversation's current channel.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::lookup;
use crate::app::App;
use crate::event::{Direction, Message};
use crate::http_error::ApiError;
use crate::runtime::types::{OutboundMessage, SendError};

/// Longest reply text accepted, in bytes (providers cap far below; a bound here keeps a
/// single call from storing megabytes).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// The reply's text.
    pub text: String,
    /// Provider id of a message to quote.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Who wrote it (`{"kind": "agent" | "bot", "id": "…"}`), for the first response.
    #[serde(default)]
    pub author: Option<crate::outcome::Author>,
}

/// What a reply sent through [`reply`] became.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sent {
    /// omnigate's id of the outbound message.
    pub id: String,
    /// The provider's id of it.
    pub external_id: String,
    /// The `message.sent` event's id.
    pub event_id: String,
    /// The channel it went out on (the conversation's current one).
    pub channel: String,
    /// The conversation.
    pub conversation_id: String,
}

/// `POST /v1/conversations/{id}/messages`: [`reply`], answered `201` with [`Sent`].
pub async fn send(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Json<SendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", error.body_text())
    })?;
    let sent = reply(&app, &id, body).await?;
    Ok((StatusCode::CREATED, Json(json!(sent))))
}

/// Send a reply through the plugin of the conversation's current channel and publish
/// `message.sent`: what the API and the console both call.
pub async fn reply(app: &App, id: &str, body: SendBody) -> Result<Sent, ApiError> {
    if body.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("`text` must be at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`text` is empty",
        ));
    }
    let store = app.pipeline.store();
    let conversation = lookup::conversation(store, id).await?;
    let contact = lookup::contact(store, &conversation.contact_id).await?;
    let channel_id = conversation.current_channel.clone();
    let (Some(channel), Some(meta)) =
        (app.registry.get(&channel_id), app.channel_meta(&channel_id))
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "channel_gone",
            format!("channel `{channel_id}` is no longer configured"),
        ));
    };
    let recipient = contact.user_on(&channel_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_recipient",
            format!("the contact has no user on channel `{channel_id}`"),
        )
    })?;
    let outbound = OutboundMessage {
        id: crate::ids::message(),
        recipient: recipient.to_owned(),
        conversation_id: conversation.id.clone(),
        text: Some(body.text.clone()),
        parts: Vec::new(),
        reply_to: body.reply_to.clone(),
        interactive: None,
        template: None,
        reaction: None,
        options: Vec::new(),
    };
    let remember = |kind: &str, reason: String| {
        app.plugin_errors.record(
            &channel_id,
            crate::runtime::PluginError {
                at: jiff::Timestamp::now(),
                function: "send",
                kind: kind.to_owned(),
                reason,
            },
        );
    };
    let receipt = channel
        .send(&outbound)
        .await
        .map_err(|error| {
            remember(error.kind(), error.to_string());
            ApiError::from_call(error)
        })?
        .map_err(|error| {
            let failed = send_failed(&channel_id, error);
            remember(failed.code, failed.message.clone());
            failed
        })?;
    let message = Message {
        direction: Direction::Outbound,
        text: Some(body.text),
        parts: Vec::new(),
        reply_to: body.reply_to,
        forwarded: false,
        interactive_reply: None,
    };
    let event = app
        .pipeline
        .record_sent(
            &meta,
            &conversation.id,
            &receipt.external_id,
            message,
            body.author,
        )
        .await
        .map_err(|error| {
            tracing::error!(conversation = %conversation.id, external_id = %receipt.external_id, %error, "reply sent but not recorded");
            ApiError::unavailable(
                "sent_not_recorded",
                format!("the message was sent (provider id {}) but could not be recorded: {error}", receipt.external_id),
            )
        })?;
    Ok(Sent {
        id: outbound.id,
        external_id: receipt.external_id,
        event_id: event.id.clone(),
        channel: channel_id,
        conversation_id: conversation.id,
    })
}

fn send_failed(channel: &str, error: SendError) -> ApiError {
    tracing::warn!(channel, ?error, "reply not delivered by the provider");
    match error {
        SendError::RateLimited(seconds) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "the provider throttled this channel",
        )
        .retry_after(seconds),
        SendError::Rejected(provider) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            format!(
                "the provider rejected the message: {} {}{}",
                provider.code,
                provider.title,
                provider
                    .detail
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        ),
        SendError::Unauthorized(reason) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "channel_unauthorized", reason)
        }
        SendError::Transient(reason) => ApiError::unavailable("provider_unavailable", reason),
        SendError::Invalid(reason) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_message", reason)
        }
    }
}
