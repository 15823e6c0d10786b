//! Loading what a request names, with the API's errors: 404 when missing, 503 when the
//! store is unavailable.

use std::sync::Arc;

use crate::http_error::ApiError;
use crate::store::{Contact, ContextStore, Conversation, StoreError};

/// A store failure as an API error (the caller may retry).
pub fn unavailable(error: StoreError) -> ApiError {
    ApiError::unavailable("store_unavailable", error.to_string())
}

/// The conversation `id`, or 404.
pub async fn conversation(
    store: &Arc<dyn ContextStore>,
    id: &str,
) -> Result<Conversation, ApiError> {
    store
        .conversation(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("conversation", format!("no conversation `{id}`")))
}

/// The contact `id`, or 404.
pub async fn contact(store: &Arc<dyn ContextStore>, id: &str) -> Result<Contact, ApiError> {
    store
        .contact(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("contact", format!("no contact `{id}`")))
}
