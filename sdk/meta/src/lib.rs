//! What omnigate's Meta channel plugins share: WhatsApp Cloud API, Messenger and
//! Instagram messaging all sit on the same Meta machinery.
//!
//! - [`webhook`]: the `hub.challenge` subscription handshake and the
//!   `X-Hub-Signature-256` check, done once for the three plugins.
//! - [`graph`]: Graph API calls (bearer token as a `{{secret:…}}` placeholder) and what
//!   a Graph API error means for a reply ([`omnigate_sdk::SendError`]).
//! - [`messaging`]: the Messenger Platform webhook (`entry[].messaging[]`) and Send API,
//!   identical for Messenger and Instagram but for names.
//!
//! A plain library, not a plugin: it is linked into each Meta plugin's component.

#![warn(missing_docs)]

pub mod graph;
pub mod messaging;
pub mod webhook;

/// A Unix timestamp in seconds, as Meta writes it (a number, or a string of digits in
/// WhatsApp), as contract milliseconds.
pub fn seconds_to_millis(seconds: &str) -> Option<i64> {
    seconds.trim().parse::<i64>().ok()?.checked_mul(1000)
}
