//! JSON errors (contract): `{"error": {"code": "…", "message": "…"}}` with the right status.
//! A leaf: every HTTP surface (webhooks, `/v1`, `/admin`) answers with it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `unknown_channel`.
    pub code: &'static str,
    /// Human-readable reason.
    pub message: String,
    /// Seconds for `Retry-After`, if any.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A failed plugin call as an answer: `503 plugins_busy` with `Retry-After` when the
    /// instance budget is spent, else `502 plugin_failed`. The full error (with wasmtime's
    /// detail) is logged by the channel runtime; the caller gets the short form.
    pub fn from_call(error: crate::runtime::CallError) -> Self {
        use crate::runtime::CallError;
        match error {
            CallError::Busy { .. } => {
                Self::unavailable("plugins_busy", error.to_string()).retry_after(Some(1))
            }
            other => Self::new(
                StatusCode::BAD_GATEWAY,
                "plugin_failed",
                format!("{}; the caller should retry", other.public_message()),
            ),
        }
    }

    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 404 for a missing `what`.
    pub fn not_found(what: &str, message: impl Into<String>) -> Self {
        let code = match what {
            "channel" => "unknown_channel",
            "conversation" => "unknown_conversation",
            "contact" => "unknown_contact",
            _ => "not_found",
        };
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 503: try again later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// Attach a `Retry-After`.
    pub fn retry_after(mut self, seconds: Option<u32>) -> Self {
        self.retry_after = seconds;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
