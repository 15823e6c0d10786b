//! Replies: `POST {api_base}/messages` with the API token, by placeholder.

use serde::Deserialize;

/// What Acme answers when it accepts a message.
#[derive(Debug, Deserialize)]
pub struct Accepted {
    /// Acme's id for the sent message.
    pub id: String,
}

// ANCHOR: send
use omnigate_sdk::{Fetch, OutboundMessage, SendError, SendReceipt, host};

/// Deliver a reply through Acme's API.
pub fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
    let base = host::config("api_base")
        .ok_or_else(|| SendError::Invalid("config `api_base` is not set".into()))?;
    let text = message
        .text
        .ok_or_else(|| SendError::Invalid("Acme sends text only".into()))?;
    let response = Fetch::post(format!("{base}/messages"))
        // authorization: Bearer {{secret:api_token}}: the host fills it in.
        .bearer_secret("api_token")
        .json(&serde_json::json!({"to": message.recipient, "text": text}))?
        .timeout_ms(10_000)
        // A fetch failure maps to a SendError (timeout → Transient, denied → Invalid).
        .send()?
        // 429 → RateLimited(Retry-After), 401/403 → Unauthorized, other 4xx → Rejected,
        // 5xx → Transient.
        .error_for_status()?;
    let accepted: Accepted = response
        .json()
        .map_err(|error| SendError::Transient(format!("unreadable answer: {error}")))?;
    Ok(SendReceipt {
        external_id: accepted.id,
        raw: Some(response.text()),
    })
}
// ANCHOR_END: send
