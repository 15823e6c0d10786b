//! `GET /v1/contacts/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use crate::server::App;
use crate::server::error::ApiError;
use crate::store::Contact;

/// The contact with its handles.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    app.pipeline
        .store()
        .contact(&id)
        .await
        .map_err(|error| ApiError::unavailable("store_unavailable", error.to_string()))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("contact", format!("no contact `{id}`")))
}
