//! `/v1/contacts/{id}`: the contact with handles, merges (links with evidence) and
//! conversations; link tokens; unmerge; erasure.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::lookup;
use crate::app::App;
use crate::http_error::ApiError;
use crate::pipeline::PipelineError;
use crate::store::{ContactDetails, StoreError};

/// `GET /v1/contacts/{id}`: handles, merges with their evidence, conversations.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<ContactDetails>, ApiError> {
    details(&app, &id).await.map(Json)
}

/// `POST /v1/contacts/{id}/link-tokens`: a token for the contact to send from another
/// channel, with ready-made deep links.
pub async fn link_token(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let contact = details(&app, &id).await?;
    if let Some(into) = &contact.merged_into {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "merged",
            format!("contact `{id}` is merged into `{into}`; use that one"),
        ));
    }
    let token = crate::store::link::new_token();
    let ttl = app.identity.link_token_ttl;
    app.pipeline
        .store()
        .put_link_token(&token, &id, ttl)
        .await
        .map_err(lookup::unavailable)?;
    let expires_at = Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::ZERO))
        .ok();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "contact_id": id,
            "expires_at": expires_at,
            "links": app.identity.deep_links(&token),
        })),
    ))
}

/// The body of `POST /v1/contacts/{id}/unmerge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmergeBody {
    /// The contact merged into `{id}` to restore.
    pub contact_id: String,
}

/// `POST /v1/contacts/{id}/unmerge`: undo the merge of `contact_id` into `{id}`; publishes
/// `contact.unmerged`.
pub async fn unmerge(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Json<UnmergeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", error.body_text())
    })?;
    unmerge_contact(&app, &id, &body.contact_id).await.map(Json)
}

/// Undo the merge of `absorbed` into `id` and publish `contact.unmerged`: what the API
/// and the console both call.
pub async fn unmerge_contact(app: &App, id: &str, absorbed: &str) -> Result<Value, ApiError> {
    let merge = app
        .pipeline
        .unmerge(id, absorbed)
        .await
        .map_err(pipeline_error)?;
    let survivor = details(app, id).await?;
    let restored = details(app, absorbed).await?;
    Ok(json!({
        "merge": merge,
        "contact": survivor,
        "restored": restored,
    }))
}

/// `DELETE /v1/contacts/{id}`: erase the contact (and contacts merged into it), handles,
/// links, conversations and messages; publishes `contact.erased`.
pub async fn erase(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    erase_contact(&app, &id).await.map(Json)
}

/// Erase contact `id` and everything of it, and publish `contact.erased`: what the API
/// and the console both call.
pub async fn erase_contact(app: &App, id: &str) -> Result<Value, ApiError> {
    let erased = app
        .pipeline
        .erase(id)
        .await
        .map_err(pipeline_error)?
        .ok_or_else(|| ApiError::not_found("contact", format!("no contact `{id}`")))?;
    Ok(json!({
        "erased": erased.contact_id,
        "absorbed": erased.absorbed,
        "conversations": erased.conversations,
    }))
}

/// The contact with its handles, merges and conversations, or 404.
pub async fn details(app: &App, id: &str) -> Result<ContactDetails, ApiError> {
    app.pipeline
        .store()
        .contact_details(id)
        .await
        .map_err(lookup::unavailable)?
        .ok_or_else(|| ApiError::not_found("contact", format!("no contact `{id}`")))
}

fn pipeline_error(error: PipelineError) -> ApiError {
    match error {
        PipelineError::Store(error) => store_error(error),
        PipelineError::Delivery(error) => ApiError::unavailable("overloaded", error.to_string()),
        // Neither can come out of an unmerge or an erasure; named for completeness,
        // details logged.
        error @ (PipelineError::Invalid(_) | PipelineError::TooLarge(_)) => {
            tracing::error!(%error, "contact action failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the action failed",
            )
        }
    }
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound { kind, id } => ApiError::not_found(kind, format!("no {kind} `{id}`")),
        StoreError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, "conflict", reason),
        other => lookup::unavailable(other),
    }
}
