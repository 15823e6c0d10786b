//! A destination plugin for the host's tests: posts `{"event_id", "type"}` to
//! `{api_base}/recorded` with the `access_token` secret, and answers the receipt
//! `recorded-<event id>`. It asks for what the `meta-capi` plugin's configuration already
//! has, so it can replace that plugin on a running destination.

use omnigate_destination_sdk::{
    DeliveryError, Destination, DestinationInfo, Event, Receipt, Setting, fetch_error, host,
};

/// The recorder.
pub struct Recorder;

impl Destination for Recorder {
    fn describe() -> DestinationInfo {
        DestinationInfo {
            id: "recorder".into(),
            name: "Test recorder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            events: vec!["conversion.recorded".into()],
            config: vec![Setting::required("api_base", "where events are posted")],
            secrets: vec![Setting::required("access_token", "bearer token")],
            outbound_hosts: Vec::new(),
        }
    }

    fn deliver(event: Event) -> Result<Receipt, DeliveryError> {
        let base =
            host::config("api_base").ok_or_else(|| DeliveryError::Disable("no api_base".into()))?;
        let body = serde_json::json!({"event_id": event.id, "type": event.type_});
        let response = host::post_json(
            &format!("{base}/recorded"),
            "access_token",
            body.to_string().as_bytes(),
        )
        .map_err(fetch_error)?;
        if response.status / 100 != 2 {
            return Err(DeliveryError::Permanent(format!(
                "status {}",
                response.status
            )));
        }
        Ok(Receipt {
            id: format!("recorded-{}", event.id),
        })
    }
}

omnigate_destination_sdk::export_destination!(Recorder);
