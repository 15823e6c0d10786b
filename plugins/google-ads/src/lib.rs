//! omnigate destination plugin for Google Ads: conversions recorded in omnigate go to
//! Google's Data Manager API with the click (`gclid`, `gbraid`, `wbraid`) that brought
//! the customer.
//!
//! Set-up and the exact mapping: `docs/destinations/google-ads.md`. The mapping is pure
//! ([`ingest`]); this file only feeds it the host's configuration, clock and hashing.

#![warn(missing_docs)]

use omnigate_destination_sdk::conversion::ConversionEvent;
use omnigate_destination_sdk::{
    DeliveryError, Destination, DestinationInfo, Event, Platform, Receipt, Setting, fetch_error,
    host,
};

pub mod ingest;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// The secret holding the access token (an `oauth2` secret the host renews).
pub const ACCESS_TOKEN: &str = "access_token";

/// The Google Ads destination.
pub struct GoogleAds;

impl Destination for GoogleAds {
    fn describe() -> DestinationInfo {
        DestinationInfo {
            id: "google-ads".into(),
            name: "Google Ads (Data Manager API)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            events: vec!["conversion.recorded".into()],
            config: vec![
                Setting::required(
                    "customer_id",
                    "the Google Ads account owning the conversion action",
                ),
                Setting::required("conversion_action_id", "the conversion action"),
                Setting::optional("login_customer_id", "the manager account signed in through"),
                Setting::optional(
                    "event_source",
                    "WEB, APP, IN_STORE, PHONE or OTHER (default)",
                ),
                Setting::optional("validate_only", "true: validate, do not ingest"),
                Setting::optional(
                    "api_base",
                    "API host (default https://datamanager.googleapis.com)",
                ),
            ],
            secrets: vec![Setting::required(
                ACCESS_TOKEN,
                "an oauth2 secret with the datamanager scope",
            )],
            outbound_hosts: vec!["https://datamanager.googleapis.com".into()],
        }
    }

    fn deliver(event: Event) -> Result<Receipt, DeliveryError> {
        let settings =
            ingest::Settings::from_config(host::config).map_err(DeliveryError::Disable)?;
        let conversion =
            ConversionEvent::read(event.document.as_bytes()).map_err(DeliveryError::Permanent)?;
        let hash = |identifier, value: &str| host::hash(identifier, Platform::Google, value);
        match ingest::plan(&conversion, &settings, host::now(), &hash) {
            Err(reason) => Err(DeliveryError::Permanent(reason)),
            Ok(ingest::Plan::Skip(reason)) => Err(DeliveryError::Skipped(reason)),
            Ok(ingest::Plan::Hold(at)) => Err(DeliveryError::NotBefore(at)),
            Ok(ingest::Plan::Send(body)) => {
                let response =
                    host::post_json(&settings.url(), ACCESS_TOKEN, body.to_string().as_bytes())
                        .map_err(fetch_error)?;
                let retry_after_ms = host::header(&response, "retry-after")
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(|seconds| seconds.saturating_mul(1000));
                ingest::answer(response.status, &response.body, retry_after_ms).into()
            }
        }
    }
}

omnigate_destination_sdk::export_destination!(GoogleAds);
