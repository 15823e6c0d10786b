//! `/healthz` (the process answers) and `/readyz` (store reachable, channels loaded).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::App;

/// `GET /healthz`.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the store answers and at least the configured channels are
/// loaded, else 503 with the reason.
pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, Json<Value>) {
    let store = app.pipeline.store();
    let channels = app.registry.list().len();
    match store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": store.backend(), "channels": channels})),
        ),
        Err(error) => {
            tracing::warn!(%error, "not ready: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "not_ready", "store": store.backend(), "reason": error.to_string()}),
                ),
            )
        }
    }
}
