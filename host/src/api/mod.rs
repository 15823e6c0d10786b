//! The REST API for downstream tools (`/v1`, bearer API keys) and operators (`/admin`,
//! admin keys).

pub mod admin;
pub mod auth;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod lookup;
pub mod messages;
pub mod outcomes;
pub mod reports;
pub mod subscriptions;

use axum::http::StatusCode;

use crate::http_error::ApiError;

/// The `400 out_of_range` answer for a number outside its documented range.
pub(crate) fn out_of_range(field: &str, low: u64, high: u64) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "out_of_range",
        format!("`{field}` must be between {low} and {high}"),
    )
}

/// Checks that `value` is within `low..=high`, naming `field` otherwise.
pub(crate) fn in_range<T: Into<u64> + Copy>(
    field: &str,
    value: T,
    low: u64,
    high: u64,
) -> Result<T, ApiError> {
    let number: u64 = value.into();
    if (low..=high).contains(&number) {
        Ok(value)
    } else {
        Err(out_of_range(field, low, high))
    }
}
