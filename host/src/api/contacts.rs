//! `GET /v1/contacts/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::lookup;
use crate::app::App;
use crate::server::error::ApiError;
use crate::store::Contact;

/// The contact with its handles.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    lookup::contact(app.pipeline.store(), &id).await.map(Json)
}
