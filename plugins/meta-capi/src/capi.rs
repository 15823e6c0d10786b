//! The mapping from a `conversion.recorded` event to one Conversions API request for
//! Business Messaging, and from Graph's answer to a [`Verdict`]. Pure: the plugin's
//! entry point feeds it configuration, the clock and the host's hashing.

use std::collections::BTreeMap;

use omnigate_destination_sdk::Identifier;
use omnigate_destination_sdk::conversion::{ConversionEvent, Touch, Verdict};
use serde_json::{Map, Value, json};

/// Meta rejects a whole request holding an event older than this.
pub const MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// Default Graph API host.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com";

/// Default Graph API version.
pub const DEFAULT_API_VERSION: &str = "v24.0";

/// Graph error codes that mean "slow down": retried with backoff.
const THROTTLED: [i64; 5] = [4, 17, 32, 613, 80004];

/// Graph's code for an invalid or expired access token.
const BAD_TOKEN: i64 = 190;

/// The standard mapping of shared conversion names to Meta's business messaging
/// events (never `Lead`, which Meta reserves for website and app leads).
const EVENT_NAMES: [(&str, &str); 5] = [
    ("purchase", "Purchase"),
    ("lead", "LeadSubmitted"),
    ("qualified_lead", "QualifiedLead"),
    ("add_to_cart", "AddToCart"),
    ("begin_checkout", "InitiateCheckout"),
];

/// The destination's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Graph API host, e.g. `https://graph.facebook.com`.
    pub api_base: String,
    /// Graph API version, e.g. `v24.0`.
    pub api_version: String,
    /// The dataset (pixel) events are sent to.
    pub dataset_id: String,
    /// WhatsApp Business Account id, for WhatsApp conversions.
    pub whatsapp_business_account_id: Option<String>,
    /// Facebook Page id, for Messenger conversions (else the channel's account).
    pub page_id: Option<String>,
    /// Instagram professional account id, for Instagram conversions (else the channel's
    /// account).
    pub ig_account_id: Option<String>,
    /// Meta's Test Events code, while testing.
    pub test_event_code: Option<String>,
    /// Conversion name → Meta event name, the standard mapping plus overrides.
    pub event_names: BTreeMap<String, String>,
}

impl Settings {
    /// Settings from the destination's `config` lookup; an error names the key.
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let present = |key: &str| get(key).filter(|value| !value.trim().is_empty());
        let dataset_id = present("dataset_id").ok_or("config `dataset_id` is required")?;
        let mut event_names: BTreeMap<String, String> = EVENT_NAMES
            .iter()
            .map(|(ours, theirs)| ((*ours).to_owned(), (*theirs).to_owned()))
            .collect();
        if let Some(overrides) = present("event_names") {
            for pair in overrides.split(',').filter(|pair| !pair.trim().is_empty()) {
                let (ours, theirs) = pair.split_once('=').ok_or_else(|| {
                    format!("config `event_names`: `{pair}` is not name=MetaEventName")
                })?;
                let theirs = theirs.trim();
                if theirs == "Lead" {
                    return Err(
                        "config `event_names`: `Lead` is for website leads; use `LeadSubmitted`"
                            .into(),
                    );
                }
                event_names.insert(ours.trim().to_owned(), theirs.to_owned());
            }
        }
        Ok(Self {
            api_base: present("api_base")
                .unwrap_or_else(|| DEFAULT_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            api_version: present("api_version").unwrap_or_else(|| DEFAULT_API_VERSION.to_owned()),
            dataset_id,
            whatsapp_business_account_id: present("whatsapp_business_account_id"),
            page_id: present("page_id"),
            ig_account_id: present("ig_account_id"),
            test_event_code: present("test_event_code"),
            event_names,
        })
    }

    /// `POST` target of the events.
    pub fn url(&self) -> String {
        format!(
            "{}/{}/{}/events",
            self.api_base, self.api_version, self.dataset_id
        )
    }
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// POST this body to [`Settings::url`].
    Send(Value),
    /// Send nothing: the reason code.
    Skip(String),
}

/// Plans the request for `event` at `now_ms`; `hash` is the host's normalise-and-hash
/// for Meta. An `Err` is an event or configuration that can never be sent.
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
    let Some(event_name) = settings.event_names.get(&conversion.name) else {
        return skip("unmapped_conversion_name");
    };
    let occurred_ms = conversion
        .occurred_at_ms()
        .ok_or("the conversion's `occurred_at` is not RFC 3339")?;
    if now_ms - occurred_ms > MAX_AGE_MS {
        return skip("older_than_7_days");
    }
    let Some((touch, channel)) = meta_touch(event) else {
        return skip("no_meta_click");
    };
    let mut user_data = match user_ids(event, touch, channel, settings)? {
        Some(ids) => ids,
        None => return skip("no_meta_user_id"),
    };
    let hashed = |identifier: Identifier, kind: &str| -> Vec<Value> {
        event
            .handles(kind)
            .filter_map(|value| hash(identifier, value))
            .map(Value::String)
            .collect()
    };
    for (field, identifier, kind) in [
        ("em", Identifier::Email, "email"),
        ("ph", Identifier::Phone, "phone"),
    ] {
        let values = hashed(identifier, kind);
        if !values.is_empty() {
            user_data.insert(field.to_owned(), Value::Array(values));
        }
    }
    let mut data = json!({
        "event_name": event_name,
        "event_time": occurred_ms.div_euclid(1000),
        "event_id": conversion.id,
        "action_source": "business_messaging",
        "messaging_channel": channel,
        "user_data": user_data,
    });
    if let Some((value, currency)) = conversion.amount()? {
        data["custom_data"] = json!({ "value": value, "currency": currency });
    }
    let mut body = json!({ "data": [data], "partner_agent": "omnigate" });
    if let Some(code) = &settings.test_event_code {
        body["test_event_code"] = json!(code);
    }
    Ok(Plan::Send(body))
}

/// The touch that came from a Meta ad, and its messaging channel: a click-to-WhatsApp
/// click id, or an ad seen on Messenger or Instagram.
fn meta_touch(event: &ConversionEvent) -> Option<(&Touch, &'static str)> {
    let channel_of = |touch: &Touch| -> Option<&'static str> {
        match event.kind_of(touch)? {
            "whatsapp" if touch.click_id.contains_key("ctwa_clid") => Some("whatsapp"),
            "messenger" if touch.source == "ad" => Some("messenger"),
            "instagram" if touch.source == "ad" => Some("instagram"),
            _ => None,
        }
    };
    let touch = event.touch(|touch| channel_of(touch).is_some())?;
    Some((touch, channel_of(touch)?))
}

/// The channel's ids Meta matches the customer by.
fn user_ids(
    event: &ConversionEvent,
    touch: &Touch,
    channel: &str,
    settings: &Settings,
) -> Result<Option<Map<String, Value>>, String> {
    let account = (touch.channel == event.channel.id)
        .then_some(event.channel.account.clone())
        .flatten();
    let mut ids = Map::new();
    match channel {
        "whatsapp" => {
            let waba = settings.whatsapp_business_account_id.clone().ok_or(
                "config `whatsapp_business_account_id` is required for WhatsApp conversions",
            )?;
            ids.insert("whatsapp_business_account_id".into(), json!(waba));
            ids.insert("ctwa_clid".into(), json!(touch.click_id["ctwa_clid"]));
        }
        "messenger" => {
            let (Some(page), Some(psid)) = (
                settings.page_id.clone().or(account),
                event.channel_user(&touch.channel),
            ) else {
                return Ok(None);
            };
            ids.insert("page_id".into(), json!(page));
            ids.insert("page_scoped_user_id".into(), json!(psid));
        }
        _ => {
            let (Some(ig_account), Some(igsid)) = (
                settings.ig_account_id.clone().or(account),
                event.channel_user(&touch.channel),
            ) else {
                return Ok(None);
            };
            ids.insert("ig_account_id".into(), json!(ig_account));
            ids.insert("ig_sid".into(), json!(igsid));
        }
    }
    Ok(Some(ids))
}

/// Graph's answer to the POST: the trace id as the receipt, or the error mapped.
pub fn answer(status: u16, body: &[u8]) -> Verdict {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let receipt = parsed["fbtrace_id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("events_received={}", parsed["events_received"]));
        return Verdict::Sent(receipt);
    }
    let error = &parsed["error"];
    let code = error["code"].as_i64();
    let message = format!(
        "graph error {}: {}",
        code.map_or_else(|| format!("status {status}"), |code| code.to_string()),
        error["message"].as_str().unwrap_or("no message")
    );
    match code {
        Some(code) if THROTTLED.contains(&code) => Verdict::Retry {
            reason: message,
            after_ms: None,
        },
        Some(BAD_TOKEN) => Verdict::Disable(message),
        Some(_) if error["is_transient"].as_bool() == Some(true) => Verdict::Retry {
            reason: message,
            after_ms: None,
        },
        _ if status >= 500 || status == 429 => Verdict::Retry {
            reason: message,
            after_ms: None,
        },
        _ => Verdict::Permanent(message),
    }
}
