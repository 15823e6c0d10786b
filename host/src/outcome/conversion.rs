//! Conversions posted by a CRM or shop: their validation, and the rule that attributes
//! one to a conversation.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde_json::Value;

use super::record::ConversionRef;

/// Conversion names everyone shares (a destination maps them to its own events); any
/// other is written `custom:<name>`.
pub const NAMES: [&str; 10] = [
    "purchase",
    "lead",
    "qualified_lead",
    "signup",
    "booking",
    "add_to_cart",
    "begin_checkout",
    "subscribe",
    "contact",
    "submit_form",
];

/// A field of a request that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct FieldError {
    /// The field, e.g. `value` or `contact.phone`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Who the conversion is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A contact id.
    Contact(String),
    /// A phone number as given (normalized by the caller).
    Phone(String),
    /// An e-mail address, lowercased.
    Email(String),
    /// A user on a channel.
    ChannelUser {
        /// Channel id.
        channel: String,
        /// The user's id there.
        user: String,
    },
    /// A conversation, named directly.
    Conversation(String),
}

/// A valid conversion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionInput {
    /// The conversion.
    pub conversion: ConversionRef,
    /// Who.
    pub subject: Subject,
    /// Consent flags for ad platforms, as given.
    pub consent: Option<Value>,
    /// Free properties, as given.
    pub properties: Option<Value>,
}

/// Largest `properties` object, serialized.
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

/// Validate a `POST /v1/conversions` body; every error names its field.
pub fn parse(body: &Value, now: Timestamp) -> Result<ConversionInput, FieldError> {
    let object = body
        .as_object()
        .ok_or_else(|| bad("body", "must be a JSON object"))?;
    const KNOWN: [&str; 9] = [
        "id",
        "name",
        "value",
        "currency",
        "occurred_at",
        "contact",
        "conversation_id",
        "consent",
        "properties",
    ];
    if let Some(unknown) = object.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(bad(unknown, "is not a field of a conversion"));
    }
    let id = text(object, "id")?.ok_or_else(|| bad("id", "is required"))?;
    if !(1..=128).contains(&id.len())
        || !id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/".contains(&byte))
    {
        return Err(bad(
            "id",
            "must be 1-128 characters of A-Z a-z 0-9 - _ . : /",
        ));
    }
    let name = text(object, "name")?.ok_or_else(|| bad("name", "is required"))?;
    check_name(name)?;
    let value = match object.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(decimal(text)?),
        Some(_) => {
            return Err(bad(
                "value",
                "must be a decimal string such as \"129.90\" (never a JSON number)",
            ));
        }
    };
    let currency = text(object, "currency")?
        .map(|code| {
            iso_currency::Currency::from_code(code)
                .map(|_| code.to_owned())
                .ok_or_else(|| bad("currency", format!("`{code}` is not an ISO 4217 code")))
        })
        .transpose()?;
    match (&value, &currency) {
        (Some(_), None) => return Err(bad("currency", "is required with `value`")),
        (None, Some(_)) => return Err(bad("value", "is required with `currency`")),
        _ => {}
    }
    let occurred_at = match text(object, "occurred_at")? {
        None => now,
        Some(at) => at
            .parse::<Timestamp>()
            .map_err(|_| bad("occurred_at", format!("`{at}` is not an RFC 3339 time")))?,
    };
    if occurred_at > now + SignedDuration::from_mins(5) {
        return Err(bad("occurred_at", "is in the future"));
    }
    let subject = subject(object)?;
    let consent = optional_object(object, "consent")?;
    if let Some(consent) = consent.as_ref().and_then(Value::as_object) {
        for (flag, value) in consent {
            if !["ad_user_data", "ad_personalization"].contains(&flag.as_str()) {
                return Err(bad(
                    &format!("consent.{flag}"),
                    "is not a consent flag (ad_user_data, ad_personalization)",
                ));
            }
            if !value.is_boolean() {
                return Err(bad(&format!("consent.{flag}"), "must be true or false"));
            }
        }
    }
    let properties = optional_object(object, "properties")?;
    if properties
        .as_ref()
        .is_some_and(|properties| properties.to_string().len() > MAX_PROPERTIES_BYTES)
    {
        return Err(bad(
            "properties",
            format!("is over {MAX_PROPERTIES_BYTES} bytes"),
        ));
    }
    Ok(ConversionInput {
        conversion: ConversionRef {
            id: id.to_owned(),
            name: name.to_owned(),
            value,
            currency,
            occurred_at,
        },
        subject,
        consent,
        properties,
    })
}

fn text<'a>(
    object: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, FieldError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

fn optional_object(
    object: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<Value>, FieldError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value.clone())),
        Some(_) => Err(bad(field, "must be an object")),
    }
}

fn check_name(name: &str) -> Result<(), FieldError> {
    if NAMES.contains(&name) {
        return Ok(());
    }
    match name.strip_prefix("custom:") {
        Some(custom) if super::settings::is_name(custom) => Ok(()),
        Some(_) => Err(bad(
            "name",
            "`custom:<name>` takes 1-40 of a-z, 0-9 and _ after `custom:`",
        )),
        None => Err(bad(
            "name",
            format!(
                "`{name}` is not one of {} or custom:<name>",
                NAMES.join(", ")
            ),
        )),
    }
}

/// Largest amount accepted (integer digits): beyond it the sums would not stay exact.
const MAX_INTEGER_DIGITS: usize = 12;

fn decimal(text: &str) -> Result<Decimal, FieldError> {
    let shape = text
        .split_once('.')
        .map_or((text, ""), |(int, frac)| (int, frac));
    let plain = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if text.is_empty() || shape.0.is_empty() || !plain(shape.0) || !plain(shape.1) {
        return Err(bad(
            "value",
            format!("`{text}` is not a non-negative decimal such as \"129.90\""),
        ));
    }
    if shape.0.len() > MAX_INTEGER_DIGITS || shape.1.len() > super::rollup::VALUE_SCALE as usize {
        return Err(bad(
            "value",
            format!(
                "`{text}` is out of range (at most {MAX_INTEGER_DIGITS} digits before the point and {} after)",
                super::rollup::VALUE_SCALE
            ),
        ));
    }
    Decimal::from_str_exact(text).map_err(|error| bad("value", format!("`{text}`: {error}")))
}

fn subject(object: &serde_json::Map<String, Value>) -> Result<Subject, FieldError> {
    let conversation = text(object, "conversation_id")?;
    let contact = object.get("contact").filter(|value| !value.is_null());
    match (contact, conversation) {
        (Some(_), Some(_)) => Err(bad(
            "conversation_id",
            "cannot be given with `contact` (one or the other)",
        )),
        (None, None) => Err(bad("contact", "is required (or `conversation_id`)")),
        (None, Some(id)) => Ok(Subject::Conversation(id.to_owned())),
        (Some(contact), None) => contact_subject(contact),
    }
}

fn contact_subject(contact: &Value) -> Result<Subject, FieldError> {
    let object = contact
        .as_object()
        .ok_or_else(|| bad("contact", "must be an object"))?;
    let field = |name: &str| -> Result<Option<&str>, FieldError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if !text.trim().is_empty() => Ok(Some(text.as_str())),
            Some(_) => Err(bad(
                &format!("contact.{name}"),
                "must be a non-empty string",
            )),
        }
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !["id", "phone", "email", "channel", "user"].contains(&key.as_str()))
    {
        return Err(bad(
            &format!("contact.{unknown}"),
            "is not a way to name a contact (id, phone, email, or channel + user)",
        ));
    }
    let given = [
        field("id")?.map(|id| Subject::Contact(id.to_owned())),
        field("phone")?.map(|phone| Subject::Phone(phone.to_owned())),
        field("email")?.map(|email| Subject::Email(email.trim().to_lowercase())),
    ];
    let channel_user = match (field("channel")?, field("user")?) {
        (Some(channel), Some(user)) => Some(Subject::ChannelUser {
            channel: channel.to_owned(),
            user: user.to_owned(),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(bad("contact.user", "is required with `contact.channel`")),
        (None, Some(_)) => return Err(bad("contact.channel", "is required with `contact.user`")),
    };
    let mut all: Vec<Subject> = given.into_iter().flatten().chain(channel_user).collect();
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(bad(
            "contact",
            "needs one of id, phone, email, or channel + user",
        )),
        _ => Err(bad(
            "contact",
            "takes one of id, phone, email, or channel + user, not several",
        )),
    }
}

/// A conversation a conversion may be attributed to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its id.
    pub id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Its latest message.
    pub last_activity_at: Timestamp,
    /// Still open.
    pub open: bool,
}

/// Why a conversion is not attributed.
pub const NO_CONVERSATION: &str = "no_conversation";
/// Why a conversion is not attributed.
pub const OUTSIDE_WINDOW: &str = "outside_window";

/// The conversation a conversion at `at` belongs to: the one open at `at` (the latest
/// started if several), else the latest that started within `window` before `at`; else
/// why none.
pub fn attribute<'a>(
    candidates: &'a [Candidate],
    at: Timestamp,
    window: Duration,
    inactivity: Duration,
) -> Result<&'a Candidate, &'static str> {
    if candidates.is_empty() {
        return Err(NO_CONVERSATION);
    }
    let span =
        |duration: Duration| SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
    let open_at = |candidate: &&Candidate| {
        let end = if candidate.open {
            Timestamp::MAX
        } else {
            candidate
                .last_activity_at
                .checked_add(span(inactivity))
                .unwrap_or(Timestamp::MAX)
        };
        candidate.started_at <= at && at <= end
    };
    let started_before = |candidate: &&Candidate| candidate.started_at <= at;
    let latest = |found: Option<&'a Candidate>, candidate: &'a Candidate| match found {
        Some(best) if best.started_at >= candidate.started_at => Some(best),
        _ => Some(candidate),
    };
    if let Some(open) = candidates.iter().filter(open_at).fold(None, latest) {
        return Ok(open);
    }
    let earliest = at.checked_sub(span(window)).unwrap_or(Timestamp::MIN);
    candidates
        .iter()
        .filter(started_before)
        .filter(|candidate| candidate.started_at >= earliest)
        .fold(None, latest)
        .ok_or(OUTSIDE_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().expect("time")
    }

    fn body() -> Value {
        json!({"id": "order-1001", "name": "purchase", "value": "129.90", "currency": "EUR",
               "occurred_at": "2026-11-24T10:20:00Z", "contact": {"phone": "+34600111222"},
               "consent": {"ad_user_data": true, "ad_personalization": false}, "properties": {}})
    }

    #[test]
    fn the_documented_example_is_valid() {
        let input = parse(&body(), now()).expect("valid");
        assert_eq!(input.conversion.value, Some("129.90".parse().expect("d")));
        assert_eq!(input.subject, Subject::Phone("+34600111222".into()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&str, Value, &str); 16] = [
            ("id", json!(7), "id"),
            ("id", json!("with space"), "id"),
            ("name", json!("sale"), "name"),
            ("name", json!("custom:Big Sale"), "name"),
            ("value", json!(129.9), "value"),
            ("value", json!("-1"), "value"),
            ("value", json!("1e3"), "value"),
            ("value", json!("1.00001"), "value"),
            ("value", json!("9999999999999"), "value"),
            ("currency", json!("EURO"), "currency"),
            ("occurred_at", json!("yesterday"), "occurred_at"),
            ("occurred_at", json!("2030-01-01T00:00:00Z"), "occurred_at"),
            (
                "contact",
                json!({"phone": "1", "email": "a@b.c"}),
                "contact",
            ),
            ("contact", json!({"channel": "wa"}), "contact.user"),
            (
                "consent",
                json!({"ad_user_data": "yes"}),
                "consent.ad_user_data",
            ),
            ("properties", json!([1]), "properties"),
        ];
        for (field, value, named) in cases {
            let mut body = body();
            body[field] = value.clone();
            let error = parse(&body, now()).expect_err(&format!("{field} = {value}"));
            assert_eq!(error.field, named, "{field} = {value}: {error}");
        }
        let mut body = body();
        body.as_object_mut().expect("object").remove("currency");
        assert_eq!(parse(&body, now()).expect_err("pair").field, "currency");
        body["extra"] = json!(1);
        assert_eq!(parse(&body, now()).expect_err("unknown").field, "extra");
    }

    fn candidate(id: &str, started: &str, last: &str, open: bool) -> Candidate {
        Candidate {
            id: id.into(),
            started_at: started.parse().expect("time"),
            last_activity_at: last.parse().expect("time"),
            open,
        }
    }

    #[test]
    fn the_open_conversation_wins_then_the_latest_within_the_window() {
        let day = Duration::from_secs(24 * 3600);
        let window = day * 28;
        let at: Timestamp = "2026-11-24T10:20:00Z".parse().expect("time");
        let old = candidate("old", "2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z", false);
        let open = candidate("open", "2026-11-24T09:00:00Z", "2026-11-24T10:00:00Z", true);
        let both = [old.clone(), open];
        assert_eq!(attribute(&both, at, window, day).expect("open").id, "open");
        let only_old = [old.clone()];
        assert_eq!(
            attribute(&only_old, at, window, day).expect("within").id,
            "old"
        );
        assert_eq!(
            attribute(&only_old, at, day, day).expect_err("outside"),
            OUTSIDE_WINDOW
        );
        assert_eq!(
            attribute(&[], at, window, day).expect_err("none"),
            NO_CONVERSATION
        );
        let later = [candidate(
            "later",
            "2026-11-25T00:00:00Z",
            "2026-11-25T00:00:00Z",
            true,
        )];
        assert_eq!(
            attribute(&later, at, window, day).expect_err("later"),
            OUTSIDE_WINDOW
        );
    }
}
