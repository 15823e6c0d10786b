//! `GET /v1/conversations/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::lookup;
use crate::app::App;
use crate::server::error::ApiError;

/// The conversation, its contact and its recent messages.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = app.pipeline.store();
    let conversation = lookup::conversation(store, &id).await?;
    let contact = lookup::contact(store, &conversation.contact_id).await?;
    let history = store.history(&id, 50).await.map_err(lookup::unavailable)?;
    Ok(Json(json!({
        "conversation": conversation.snapshot(),
        "contact": contact.snapshot(),
        "history": history,
    })))
}

/// `?from=<cursor>&limit=<n>` of the timeline.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// Cursor from the previous page's `next` (default: the start).
    #[serde(default)]
    pub from: u64,
    /// Entries per page (default 50, at most 500).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/conversations/{id}/timeline`: messages and conversation events in order,
/// paginated (`next` is the cursor of the following page, `null` at the end).
pub async fn timeline(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::store::TimelinePage>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|error| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_request",
            error.body_text(),
        )
    })?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    match app.pipeline.store().timeline(&id, query.from, limit).await {
        Ok(page) => Ok(Json(page)),
        Err(crate::store::StoreError::NotFound { .. }) => Err(ApiError::not_found(
            "conversation",
            format!("no conversation `{id}`"),
        )),
        Err(error) => Err(lookup::unavailable(error)),
    }
}
