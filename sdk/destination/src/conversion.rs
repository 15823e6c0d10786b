//! A `conversion.recorded` event as destination plugins read it: the conversion, the
//! touches (ads, links) that could have caused it, and the contact's handles.
//!
//! A destination is handed the event's CloudEvents document (`{"data": <event>, …}`);
//! [`ConversionEvent::read`] takes what conversion APIs need from it, so each plugin
//! does not re-parse the event format.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The parts of a `conversion.recorded` event a destination uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConversionEvent {
    /// The event id (`evt_…`).
    pub id: String,
    /// The channel of the conversation the conversion is attributed to.
    pub channel: Channel,
    /// The customer.
    pub contact: Contact,
    /// The conversation and its touches.
    pub conversation: Conversation,
    /// The conversion.
    pub conversion: Conversion,
}

/// A channel as events name it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Channel {
    /// Configured id, e.g. `wa-main`.
    pub id: String,
    /// Kind, e.g. `whatsapp`.
    pub kind: String,
    /// The business account on the provider (phone number id, page id), if known.
    #[serde(default)]
    pub account: Option<String>,
}

/// The customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Contact {
    /// Contact id.
    pub id: String,
    /// Phone numbers (E.164), e-mail addresses and channel user ids.
    #[serde(default)]
    pub handles: Vec<Handle>,
}

/// One way to reach the customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Handle {
    /// `phone`, `email` or `channel_user`.
    pub kind: String,
    /// The value; a channel user is `<channel id>:<user id>`.
    pub value: String,
    /// Whether a provider vouches for it.
    #[serde(default)]
    pub verified: bool,
}

/// The conversation's attribution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Conversation {
    /// Conversation id.
    pub id: String,
    /// First and last touch.
    #[serde(default)]
    pub attribution: Attribution,
}

/// First and last touch of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Attribution {
    /// The first referral seen.
    #[serde(default)]
    pub first_touch: Option<Touch>,
    /// The latest referral seen.
    #[serde(default)]
    pub last_touch: Option<Touch>,
}

/// An ad, link or QR code seen in the conversation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Touch {
    /// `ad`, `post`, `link`, `qr` or `other`.
    pub source: String,
    /// The channel id where it was seen.
    pub channel: String,
    /// The kind of that channel (`whatsapp`, `instagram`, …), when the event gives it.
    #[serde(default)]
    pub channel_kind: Option<String>,
    /// When (RFC 3339).
    pub at: String,
    /// Ad id.
    #[serde(default)]
    pub ad_id: Option<String>,
    /// Campaign.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Click ids by name (`ctwa_clid`, `gclid`, …).
    #[serde(default)]
    pub click_id: BTreeMap<String, String>,
}

impl Touch {
    /// When it was seen, in milliseconds since the epoch.
    pub fn at_ms(&self) -> Option<i64> {
        crate::millis(&self.at)
    }
}

/// The conversion itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Conversion {
    /// The caller's id: the deduplication key every platform takes.
    pub id: String,
    /// `purchase`, `lead`, … or `custom:<name>`.
    pub name: String,
    /// Amount, a decimal string.
    #[serde(default)]
    pub value: Option<String>,
    /// ISO 4217 code.
    #[serde(default)]
    pub currency: Option<String>,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
    /// Consent flags as given (`ad_user_data`, `ad_personalization`).
    #[serde(default)]
    pub consent: Option<BTreeMap<String, bool>>,
}

impl Conversion {
    /// When it happened, in milliseconds since the epoch.
    pub fn occurred_at_ms(&self) -> Option<i64> {
        crate::millis(&self.occurred_at)
    }

    /// A consent flag: `Some(false)` when explicitly refused, `None` when not given.
    pub fn consent(&self, flag: &str) -> Option<bool> {
        self.consent.as_ref()?.get(flag).copied()
    }

    /// Whether the customer refused their data being sent to ad platforms
    /// (`ad_user_data: false`): every ad platform destination skips such a conversion.
    pub fn refuses_ad_user_data(&self) -> bool {
        self.consent("ad_user_data") == Some(false)
    }

    /// The value as a JSON number (what conversion APIs take) with its currency, when
    /// the conversion has both; an error when the value is not a number.
    pub fn amount(&self) -> Result<Option<(serde_json::Number, &str)>, String> {
        let (Some(value), Some(currency)) = (&self.value, &self.currency) else {
            return Ok(None);
        };
        let number = value
            .parse()
            .map_err(|_| format!("the conversion's value `{value}` is not a number"))?;
        Ok(Some((number, currency)))
    }
}

/// What a destination made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The platform took it; its receipt (request id, trace id).
    Sent(String),
    /// Nothing to send, and why (a short code such as `no_click_id`).
    Skipped(String),
    /// Worth trying again, after `after_ms` if the platform said.
    Retry {
        /// What went wrong.
        reason: String,
        /// The platform's wait, in milliseconds.
        after_ms: Option<u64>,
    },
    /// This event can never be taken (invalid parameter).
    Permanent(String),
    /// No event can be taken until the operator acts (revoked token).
    Disable(String),
    /// Too early: the platform takes it from this time (ms since the epoch).
    NotBefore(i64),
}

#[derive(Deserialize)]
struct Document {
    data: serde_json::Value,
}

impl ConversionEvent {
    /// The event in a CloudEvents document; an error names what is missing.
    pub fn read(document: &[u8]) -> Result<Self, String> {
        let document: Document = serde_json::from_slice(document)
            .map_err(|error| format!("not a CloudEvents document: {error}"))?;
        // The event's own type (the document's `type` carries a reverse-DNS prefix).
        let kind = document.data["type"].as_str().unwrap_or_default();
        if kind != "conversion.recorded" {
            return Err(format!("a `{kind}` event is not a conversion"));
        }
        serde_json::from_value(document.data)
            .map_err(|error| format!("not a conversion.recorded event: {error}"))
    }

    /// The touch that carries `wanted` (e.g. one of this platform's click ids): the first
    /// touch when it does (the click that started the conversation), else the last.
    pub fn touch(&self, wanted: impl Fn(&Touch) -> bool) -> Option<&Touch> {
        let attribution = &self.conversation.attribution;
        [&attribution.first_touch, &attribution.last_touch]
            .into_iter()
            .flatten()
            .find(|touch| wanted(touch))
    }

    /// The kind of the channel a touch was seen on, when the event says (on the touch, or
    /// the conversation's channel when the touch was seen there).
    pub fn kind_of<'a>(&'a self, touch: &'a Touch) -> Option<&'a str> {
        touch
            .channel_kind
            .as_deref()
            .or_else(|| (touch.channel == self.channel.id).then_some(self.channel.kind.as_str()))
    }

    /// The customer's user id on channel `channel_id`.
    pub fn channel_user(&self, channel_id: &str) -> Option<&str> {
        self.contact.handles.iter().find_map(|handle| {
            let (channel, user) = handle.value.split_once(':')?;
            (handle.kind == "channel_user" && channel == channel_id).then_some(user)
        })
    }

    /// The customer's handles of `kind` (`phone`, `email`).
    pub fn handles(&self, kind: &str) -> impl Iterator<Item = &str> {
        self.contact
            .handles
            .iter()
            .filter(move |handle| handle.kind == kind)
            .map(|handle| handle.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{
        "specversion": "1.0", "id": "evt_1", "type": "conversion.recorded", "source": "/omnigate",
        "data": {
            "id": "evt_1", "type": "conversion.recorded",
            "channel": {"id": "wa", "kind": "whatsapp", "account": "1065"},
            "contact": {"id": "ct_1", "handles": [
                {"kind": "phone", "value": "+16505551234", "verified": true},
                {"kind": "channel_user", "value": "wa:16505551234", "verified": true},
                {"kind": "channel_user", "value": "ig:17841", "verified": true}
            ]},
            "conversation": {"id": "cv_1", "attribution": {
                "first_touch": {"source": "link", "channel": "web", "at": "2026-11-20T10:00:00Z",
                                "click_id": {"gclid": "G-1"}},
                "last_touch": {"source": "ad", "channel": "wa", "at": "2026-11-21T10:00:00Z",
                               "ad_id": "120", "click_id": {"ctwa_clid": "C-1"}}
            }},
            "conversion": {"id": "ord-1", "name": "purchase", "value": "129.90", "currency": "EUR",
                           "occurred_at": "2026-11-22T10:00:00Z", "attributed": true,
                           "consent": {"ad_user_data": true}}
        }
    }"#;

    #[test]
    fn reads_touches_handles_and_consent() {
        let event = ConversionEvent::read(DOCUMENT.as_bytes()).expect("reads");
        assert_eq!(event.conversion.id, "ord-1");
        assert_eq!(event.conversion.consent("ad_user_data"), Some(true));
        assert_eq!(event.conversion.consent("ad_personalization"), None);
        let meta = event
            .touch(|touch| touch.click_id.contains_key("ctwa_clid"))
            .expect("meta touch");
        assert_eq!(meta.channel, "wa");
        assert_eq!(event.kind_of(meta), Some("whatsapp"));
        let google = event
            .touch(|touch| touch.click_id.contains_key("gclid"))
            .expect("google touch");
        assert_eq!(
            (google.channel.as_str(), event.kind_of(google)),
            ("web", None)
        );
        assert_eq!(event.channel_user("ig"), Some("17841"));
        assert_eq!(event.handles("phone").collect::<Vec<_>>(), ["+16505551234"]);
        assert!(meta.at_ms().is_some() && event.conversion.occurred_at_ms().is_some());
    }

    #[test]
    fn other_events_are_refused_by_name() {
        let error = ConversionEvent::read(
            br#"{"type": "dev.omnigate.message.received", "data": {"type": "message.received"}}"#,
        )
        .expect_err("refused");
        assert_eq!(error, "a `message.received` event is not a conversion");
    }
}
