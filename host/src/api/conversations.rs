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
