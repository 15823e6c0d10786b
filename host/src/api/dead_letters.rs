//! `/v1/dead-letters`: list deliveries given up, replay one or all matching a filter.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::delivery::{DeadLetterFilter, DeliveryError};
use crate::http_error::ApiError;

/// Most dead letters one listing returns.
const MAX_LIMIT: usize = 1000;
/// Dead letters returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `GET` query: the filter and how many (newest) to return.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListQuery {
    /// Only this subscription's.
    pub subscription: Option<String>,
    /// Only this conversation's.
    pub conversation: Option<String>,
    /// Given up at or after (RFC 3339).
    pub since: Option<Timestamp>,
    /// Given up before (RFC 3339).
    pub until: Option<Timestamp>,
    /// At most this many, the newest: 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// `GET /v1/dead-letters?subscription=&conversation=&since=&until=&limit=`: oldest first.
pub async fn list(
    State(app): State<Arc<App>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|error| bad_request(error.body_text()))?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => return Err(crate::api::out_of_range("limit", 1, MAX_LIMIT as u64)),
    };
    let filter = DeadLetterFilter {
        subscription: query.subscription,
        conversation: query.conversation,
        since: query.since,
        until: query.until,
    };
    let letters = app
        .delivery
        .dead_letters(&filter, limit)
        .await
        .map_err(failed)?;
    Ok(Json(json!({ "dead_letters": letters })))
}

/// `POST /v1/dead-letters/{id}/replay`: deliver it again (its subscription only).
pub async fn replay(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    replay_one(&app, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": 1 }))))
}

/// Deliver dead letter `id` again (its subscription only), or 404: what the API and the
/// console both call.
pub async fn replay_one(app: &App, id: &str) -> Result<(), ApiError> {
    if app.delivery.replay(id).await.map_err(failed)? {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_dead_letter",
            format!("no dead letter `{id}`"),
        ))
    }
}

/// `POST /v1/dead-letters/replay` with a JSON filter (`subscription`, `conversation`,
/// `since`, `until`; `{}` for all): replays every match, oldest first, so each
/// conversation keeps its order.
pub async fn replay_matching(
    State(app): State<Arc<App>>,
    body: Result<Json<DeadLetterFilter>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(filter) = body.map_err(|error| bad_request(error.body_text()))?;
    let replayed = app
        .delivery
        .replay_matching(&filter)
        .await
        .map_err(failed)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": replayed }))))
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn failed(error: DeliveryError) -> ApiError {
    match error {
        DeliveryError::UnknownSubscription(_) => ApiError::new(
            StatusCode::CONFLICT,
            "unknown_subscription",
            error.to_string(),
        ),
        other => ApiError::unavailable("outbox_unavailable", other.to_string()),
    }
}
