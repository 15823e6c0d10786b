//! omnigate destination plugin for Meta's Conversions API for Business Messaging:
//! conversions recorded in omnigate go back to Meta with the click (`ctwa_clid`) or the
//! channel's user ids that tie them to the ad that started the conversation.
//!
//! Set-up and the exact mapping: `docs/destinations/meta-capi.md`. The mapping is pure
//! ([`capi`]); this file only feeds it the host's configuration, clock and hashing.

#![warn(missing_docs)]

use omnigate_destination_sdk::conversion::ConversionEvent;
use omnigate_destination_sdk::{
    DeliveryError, Destination, DestinationInfo, Event, Platform, Receipt, Setting, fetch_error,
    host,
};

pub mod capi;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// The secret holding the system user's token.
pub const ACCESS_TOKEN: &str = "access_token";

/// The Meta Conversions API destination.
pub struct MetaCapi;

impl Destination for MetaCapi {
    fn describe() -> DestinationInfo {
        DestinationInfo {
            id: "meta-capi".into(),
            name: "Meta Conversions API for Business Messaging".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            events: vec!["conversion.recorded".into()],
            config: vec![
                Setting::required("dataset_id", "the dataset (pixel) events are sent to"),
                Setting::optional(
                    "whatsapp_business_account_id",
                    "the WhatsApp Business Account (required for WhatsApp conversions)",
                ),
                Setting::optional("page_id", "the Page of Messenger conversations"),
                Setting::optional(
                    "ig_account_id",
                    "the Instagram account of Instagram conversations",
                ),
                Setting::optional(
                    "api_base",
                    "Graph API host (default https://graph.facebook.com)",
                ),
                Setting::optional("api_version", "Graph API version (default v24.0)"),
                Setting::optional("test_event_code", "Events Manager's test code"),
                Setting::optional("event_names", "overrides, name=MetaEvent,…"),
            ],
            secrets: vec![Setting::required(ACCESS_TOKEN, "system user access token")],
            outbound_hosts: vec!["https://graph.facebook.com".into()],
        }
    }

    fn deliver(event: Event) -> Result<Receipt, DeliveryError> {
        // A configuration that cannot work fails every event alike.
        let settings = capi::Settings::from_config(host::config).map_err(DeliveryError::Disable)?;
        let conversion =
            ConversionEvent::read(event.document.as_bytes()).map_err(DeliveryError::Permanent)?;
        let hash = |identifier, value: &str| host::hash(identifier, Platform::Meta, value);
        match capi::plan(&conversion, &settings, host::now(), &hash) {
            Err(reason) => Err(DeliveryError::Permanent(reason)),
            Ok(capi::Plan::Skip(reason)) => Err(DeliveryError::Skipped(reason)),
            Ok(capi::Plan::Send(body)) => {
                let response =
                    host::post_json(&settings.url(), ACCESS_TOKEN, body.to_string().as_bytes())
                        .map_err(fetch_error)?;
                capi::answer(response.status, &response.body).into()
            }
        }
    }
}

omnigate_destination_sdk::export_destination!(MetaCapi);
