//! The mapping from a `conversion.recorded` event to one Data Manager API
//! `events:ingest` request, and from Google's answer to a [`Verdict`]. Pure: the
//! plugin's entry point feeds it configuration, the clock and the host's hashing.

use omnigate_destination_sdk::Identifier;
use omnigate_destination_sdk::conversion::{ConversionEvent, Touch, Verdict};

use serde_json::{Value, json};

/// Default Data Manager API host.
pub const DEFAULT_API_BASE: &str = "https://datamanager.googleapis.com";

/// Google takes a click conversion only once the click is this old.
pub const HOLD_MS: i64 = 6 * 3600 * 1000;

/// Google keeps clicks for conversions this long.
pub const CLICK_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;

/// Click ids Google Ads knows, in the order they are preferred.
const CLICK_IDS: [&str; 3] = ["gclid", "gbraid", "wbraid"];

/// The destination's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// API host, e.g. `https://datamanager.googleapis.com`.
    pub api_base: String,
    /// The Google Ads account that owns the conversion action (digits, no dashes).
    pub operating_account_id: String,
    /// The manager account the credentials sign in through, if any.
    pub login_account_id: Option<String>,
    /// The conversion action's id.
    pub conversion_action_id: String,
    /// `eventSource`: `WEB`, `APP`, `IN_STORE`, `PHONE` or `OTHER`.
    pub event_source: String,
    /// Validate the request without ingesting it (`validateOnly`).
    pub validate_only: bool,
}

impl Settings {
    /// Settings from the destination's `config` lookup; an error names the key.
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let present = |key: &str| get(key).filter(|value| !value.trim().is_empty());
        let account = |key: &str| -> Result<Option<String>, String> {
            present(key)
                .map(|value| {
                    let digits: String = value.chars().filter(|c| *c != '-').collect();
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        Err(format!(
                            "config `{key}` must be a Google Ads account id (digits)"
                        ))
                    } else {
                        Ok(digits)
                    }
                })
                .transpose()
        };
        let event_source = present("event_source").unwrap_or_else(|| "OTHER".to_owned());
        if !["WEB", "APP", "IN_STORE", "PHONE", "OTHER"].contains(&event_source.as_str()) {
            return Err(format!(
                "config `event_source` `{event_source}` is not WEB, APP, IN_STORE, PHONE or OTHER"
            ));
        }
        let validate_only = match present("validate_only").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!(
                    "config `validate_only` `{other}` is not true or false"
                ));
            }
        };
        Ok(Self {
            api_base: present("api_base")
                .unwrap_or_else(|| DEFAULT_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            operating_account_id: account("customer_id")?
                .ok_or("config `customer_id` (the Google Ads account) is required")?,
            login_account_id: account("login_customer_id")?,
            conversion_action_id: present("conversion_action_id")
                .ok_or("config `conversion_action_id` is required")?,
            event_source,
            validate_only,
        })
    }

    /// `POST` target of the events.
    pub fn url(&self) -> String {
        format!("{}/v1/events:ingest", self.api_base)
    }
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// POST this body to [`Settings::url`].
    Send(Value),
    /// Send nothing: the reason code.
    Skip(String),
    /// Too early: send at this time (ms since the epoch).
    Hold(i64),
}

/// Plans the request for `event` at `now_ms`; `hash` is the host's normalise-and-hash
/// for Google. An `Err` is an event that can never be sent.
pub fn plan(
    event: &ConversionEvent,
    settings: &Settings,
    now_ms: i64,
    hash: &dyn Fn(Identifier, &str) -> Option<String>,
) -> Result<Plan, String> {
    let skip = |reason: &str| Ok(Plan::Skip(reason.to_owned()));
    let conversion = &event.conversion;
    if conversion.refuses_ad_user_data() {
        return skip("no_ad_user_data_consent");
    }
    let Some(touch) = event.touch(|touch| click_id(touch).is_some()) else {
        return skip("no_google_click");
    };
    let (name, click) = click_id(touch).ok_or("the touch lost its click id")?;
    let clicked_ms = touch.at_ms().ok_or("the touch's `at` is not RFC 3339")?;
    let occurred_ms = conversion
        .occurred_at_ms()
        .ok_or("the conversion's `occurred_at` is not RFC 3339")?;
    if occurred_ms - clicked_ms > CLICK_LIFETIME_MS {
        return skip("click_older_than_90_days");
    }
    if now_ms < clicked_ms + HOLD_MS {
        return Ok(Plan::Hold(clicked_ms + HOLD_MS));
    }
    let mut data = json!({
        "eventTimestamp": conversion.occurred_at,
        "transactionId": conversion.id,
        "eventSource": settings.event_source,
        "adIdentifiers": { name: click },
    });
    if let Some((value, currency)) = conversion.amount()? {
        data["conversionValue"] = json!(value);
        data["currency"] = json!(currency);
    }
    let identifiers: Vec<Value> = [
        (Identifier::Email, "email", "emailAddress"),
        (Identifier::Phone, "phone", "phoneNumber"),
    ]
    .into_iter()
    .flat_map(|(identifier, kind, field)| {
        event
            .handles(kind)
            .filter_map(move |value| hash(identifier, value))
            .map(move |hashed| json!({ field: hashed }))
    })
    .collect();
    if !identifiers.is_empty() {
        data["userData"] = json!({ "userIdentifiers": identifiers });
    }
    if let Some(consent) = consent(event) {
        data["consent"] = consent;
    }
    let mut destination = json!({
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": settings.operating_account_id},
        "productDestinationId": settings.conversion_action_id,
    });
    if let Some(login) = &settings.login_account_id {
        destination["loginAccount"] = json!({"accountType": "GOOGLE_ADS", "accountId": login});
    }
    Ok(Plan::Send(json!({
        "destinations": [destination],
        "events": [data],
        "encoding": "HEX",
        "validateOnly": settings.validate_only,
    })))
}

/// The touch's Google click id, by name.
fn click_id(touch: &Touch) -> Option<(&'static str, &str)> {
    CLICK_IDS
        .iter()
        .find_map(|name| Some((*name, touch.click_id.get(*name)?.as_str())))
}

/// The conversion's consent in Google's terms; `None` when it gave none.
fn consent(event: &ConversionEvent) -> Option<Value> {
    let state = |flag: &str| {
        event.conversion.consent(flag).map(|granted| {
            if granted {
                "CONSENT_GRANTED"
            } else {
                "CONSENT_DENIED"
            }
        })
    };
    let mut consent = serde_json::Map::new();
    for (ours, theirs) in [
        ("ad_user_data", "adUserData"),
        ("ad_personalization", "adPersonalization"),
    ] {
        if let Some(state) = state(ours) {
            consent.insert(theirs.to_owned(), json!(state));
        }
    }
    (!consent.is_empty()).then_some(Value::Object(consent))
}

/// Google's answer: the `requestId` as the receipt, or the error mapped.
pub fn answer(status: u16, body: &[u8], retry_after_ms: Option<u64>) -> Verdict {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return match parsed["requestId"].as_str() {
            Some(id) => Verdict::Sent(id.to_owned()),
            None => Verdict::Sent("validated".to_owned()),
        };
    }
    let error = &parsed["error"];
    let message = format!(
        "{} {}: {}",
        status,
        error["status"].as_str().unwrap_or("error"),
        error["message"].as_str().unwrap_or("no message")
    );
    match status {
        // A rejected token is renewed by the host before the next attempt.
        401 | 408 | 429 | 500..=599 => Verdict::Retry {
            reason: message,
            after_ms: retry_after_ms,
        },
        403 => Verdict::Disable(message),
        _ => Verdict::Permanent(message),
    }
}
