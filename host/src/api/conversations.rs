//! `GET /v1/conversations/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::server::App;
use crate::server::error::ApiError;

/// The conversation, its contact and its recent messages.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = app.pipeline.store();
    let unavailable = |error: crate::store::StoreError| {
        ApiError::unavailable("store_unavailable", error.to_string())
    };
    let conversation = store
        .conversation(&id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("conversation", format!("no conversation `{id}`")))?;
    let contact = store
        .contact(&conversation.contact_id)
        .await
        .map_err(unavailable)?;
    let history = store.history(&id, 50).await.map_err(unavailable)?;
    Ok(Json(json!({
        "conversation": conversation.snapshot(),
        "contact": contact.map(|contact| contact.snapshot()),
        "history": history,
    })))
}
