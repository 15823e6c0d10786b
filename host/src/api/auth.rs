//! Bearer API keys, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::http_error::ApiError;
use crate::secret::Secret;

/// Middleware for `/v1`: the request must carry `Authorization: Bearer <an [api] key>`.
pub async fn require_key(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&app.api_keys, &request, "api key")?;
    Ok(next.run(request).await)
}

/// Middleware for `/admin`: the request must carry `Authorization: Bearer <an [admin] key>`.
pub async fn require_admin_key(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&app.admin_keys, &request, "admin key")?;
    Ok(next.run(request).await)
}

/// Middleware for `/metrics`: open unless `[metrics] keys` is set, then like `/v1`.
pub async fn require_metrics_key(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !app.metrics_keys.is_empty() {
        check(&app.metrics_keys, &request, "metrics key")?;
    }
    Ok(next.run(request).await)
}

fn check(keys: &[Secret], request: &Request, what: &str) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    // An empty key never authenticates, whatever is configured.
    let Some(presented) = presented.filter(|presented| !presented.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("missing `Authorization: Bearer <{what}>`"),
        ));
    };
    // Check every key (no early exit), so timing does not reveal which prefix matched.
    let known = keys.iter().fold(0u8, |found, key| {
        found
            | key
                .expose()
                .as_bytes()
                .ct_eq(presented.as_bytes())
                .unwrap_u8()
    });
    if known == 1 {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("unknown {what}"),
        ))
    }
}
