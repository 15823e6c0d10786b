//! `GET /v1/conversations/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::lookup;
use crate::app::App;
use crate::http_error::ApiError;

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

/// Timeline entries per page when `limit` is not given.
const DEFAULT_TIMELINE_LIMIT: usize = 50;
/// Largest `limit` of a timeline page.
const MAX_TIMELINE_LIMIT: usize = 500;

/// `?from=<cursor>&limit=<n>` of the timeline.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// Cursor from the previous page's `next` (default: the start; at most 2^63 - 1).
    #[serde(default)]
    pub from: u64,
    /// Entries per page: 1 to 500 (default 50).
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
    let limit = match query.limit {
        None => DEFAULT_TIMELINE_LIMIT,
        Some(limit) if (1..=MAX_TIMELINE_LIMIT).contains(&limit) => limit,
        Some(_) => return Err(super::out_of_range("limit", 1, MAX_TIMELINE_LIMIT as u64)),
    };
    // Cursors are positions; beyond i64 the store's arithmetic would not hold.
    super::in_range("from", query.from, 0, i64::MAX as u64)?;
    match app.pipeline.store().timeline(&id, query.from, limit).await {
        Ok(page) => Ok(Json(page)),
        Err(crate::store::StoreError::NotFound { .. }) => Err(ApiError::not_found(
            "conversation",
            format!("no conversation `{id}`"),
        )),
        Err(error) => Err(lookup::unavailable(error)),
    }
}
