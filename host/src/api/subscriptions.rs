//! `/v1/subscriptions`: list, create, read, update, delete, enable/disable, test-send.
//! Subscriptions from the configuration file are listed and can be enabled, disabled and
//! tested, but not changed or deleted here.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::App;
use crate::delivery::DeliveryError;
use crate::delivery::api_types::{NewSubscription, SubscriptionPatch};
use crate::http_error::ApiError;

/// `GET /v1/subscriptions`.
pub async fn list(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "subscriptions": app.delivery.subscriptions() }))
}

/// `POST /v1/subscriptions`.
pub async fn create(
    State(app): State<Arc<App>>,
    body: Result<Json<NewSubscription>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(new) = body.map_err(|error| bad_request(error.body_text()))?;
    let view = app
        .delivery
        .create_subscription(new)
        .await
        .map_err(failed)?;
    Ok((StatusCode::CREATED, Json(json!(view))))
}

/// `GET /v1/subscriptions/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = app.delivery.subscription(&id).await.map_err(failed)?;
    Ok(Json(json!(view)))
}

/// `PATCH /v1/subscriptions/{id}`.
pub async fn update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Json<SubscriptionPatch>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(patch) = body.map_err(|error| bad_request(error.body_text()))?;
    let view = app
        .delivery
        .update_subscription(&id, patch)
        .await
        .map_err(failed)?;
    Ok(Json(json!(view)))
}

/// `DELETE /v1/subscriptions/{id}`.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delivery
        .delete_subscription(&id)
        .await
        .map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/subscriptions/{id}/enable` (also after an automatic disable).
pub async fn enable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = app.delivery.set_enabled(&id, true).await.map_err(failed)?;
    Ok(Json(json!(view)))
}

/// `POST /v1/subscriptions/{id}/disable`.
pub async fn disable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = app.delivery.set_enabled(&id, false).await.map_err(failed)?;
    Ok(Json(json!(view)))
}

/// `POST /v1/subscriptions/{id}/test`: one signed `dev.omnigate.ping` now.
pub async fn test(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let result = app.delivery.test_send(&id).await.map_err(failed)?;
    Ok(Json(json!(result)))
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn failed(error: DeliveryError) -> ApiError {
    let message = error.to_string();
    match error {
        DeliveryError::UnknownSubscription(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_subscription", message)
        }
        DeliveryError::ReadOnly(_) => {
            ApiError::new(StatusCode::CONFLICT, "config_subscription", message)
        }
        DeliveryError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "subscription_exists", message)
        }
        DeliveryError::TooMany(_) => {
            ApiError::new(StatusCode::CONFLICT, "subscription_limit", message)
        }
        DeliveryError::Config(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_subscription", message)
        }
        DeliveryError::TargetNotAllowed(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "target_not_allowed",
            message,
        ),
        _ => ApiError::unavailable("outbox_unavailable", message),
    }
}
