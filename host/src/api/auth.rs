//! Bearer API keys, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::server::error::ApiError;

/// Middleware: the request must carry `Authorization: Bearer <one of the keys>`.
pub async fn require_key(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <api key>`",
        ));
    };
    // Check every key (no early exit), so timing does not reveal which prefix matched.
    let known = app.api_keys.iter().fold(0u8, |found, key| {
        found
            | key
                .expose()
                .as_bytes()
                .ct_eq(presented.as_bytes())
                .unwrap_u8()
    });
    if known == 1 {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown API key",
        ))
    }
}
