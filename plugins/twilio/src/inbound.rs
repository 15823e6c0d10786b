//! Twilio webhooks → events: incoming SMS/MMS/WhatsApp messages and status callbacks.
//!
//! Both arrive as `application/x-www-form-urlencoded` POSTs to the same URL (the number's
//! "A message comes in" webhook and the `StatusCallback` of sent messages); a request
//! with `MessageStatus` (other than `received`) is a status callback.

use omnigate_sdk::{
    DeliveryStatus, Direction, EventBody, Handle, HandleKind, Header, HttpRequest, HttpResponse,
    InboundEvent, InteractiveKind, InteractiveReply, Location, Media, MediaKind, Message, Pair,
    Part, Party, ProviderError, Referral, ReferralSource, StatusUpdate, WebhookError,
    WebhookOutcome, form, header, outcome, require_method, signature,
};

use crate::AUTH_TOKEN;

/// The header in which the host passes the URL Twilio called.
pub const PUBLIC_URL_HEADER: &str = "x-omnigate-public-url";
/// Twilio's signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The prefix of WhatsApp addresses in `From`/`To`.
pub const WHATSAPP_PREFIX: &str = "whatsapp:";

/// The decoded POST parameters of one webhook.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a form body.
    pub fn parse(body: &[u8]) -> Self {
        Self(form(body))
    }

    /// The first non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// The value of `name`, or a `BadRequest` naming it.
    pub fn require(&self, name: &str) -> Result<&str, WebhookError> {
        self.get(name)
            .ok_or_else(|| WebhookError::BadRequest(format!("missing parameter `{name}`")))
    }

    /// Every pair, as decoded (the signature covers all of them).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Verify, then map the request to its event.
pub fn handle(request: &HttpRequest) -> Result<WebhookOutcome, WebhookError> {
    require_method(request, "POST")?;
    let params = Params::parse(&request.body);
    verify(request, &params)?;
    let event = match params.get("MessageStatus") {
        Some(status) if status != "received" => status_event(&params, status)?,
        _ => Some(message_event(&params)?),
    };
    Ok(outcome(empty_twiml(), event.into_iter().collect()))
}

/// `X-Twilio-Signature` over the public URL and every POST parameter, before anything
/// in the body is trusted.
fn verify(request: &HttpRequest, params: &Params) -> Result<(), WebhookError> {
    let signature = header(request, SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::Unauthorized(format!("missing {SIGNATURE_HEADER} header")))?;
    let url = header(request, PUBLIC_URL_HEADER).ok_or_else(|| {
        WebhookError::Unauthorized(
            "the host passed no public URL to check the signature against".into(),
        )
    })?;
    signature::verify_twilio(url, params.pairs(), signature, AUTH_TOKEN)
}

/// An empty TwiML answer: Twilio sends nothing back to the customer.
fn empty_twiml() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![Header {
            name: "content-type".into(),
            value: "text/xml".into(),
        }],
        body: br#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#.to_vec(),
    }
}

/// An incoming message.
pub fn message_event(params: &Params) -> Result<InboundEvent, WebhookError> {
    let sid = message_sid(params)?;
    let from = params.require("From")?;
    let mut parts = media_parts(params)?;
    parts.extend(location(params)?);
    let message = Message {
        direction: Direction::Inbound,
        text: params.get("Body").map(str::to_owned),
        parts,
        reply_to: params.get("OriginalRepliedMessageSid").map(str::to_owned),
        forwarded: params.get("Forwarded") == Some("true")
            || params.get("FrequentlyForwarded") == Some("true"),
        interactive_reply: button_reply(params),
        referral: referral(params)?,
    };
    Ok(InboundEvent {
        external_id: sid.to_owned(),
        occurred_at: None,
        account: params.get("To").map(str::to_owned),
        contact: Party {
            id: from.to_owned(),
            name: params.get("ProfileName").map(str::to_owned),
            handles: phone_handle(params, from).into_iter().collect(),
        },
        body: EventBody::Message(message),
        raw: None,
    })
}

fn message_sid(params: &Params) -> Result<&str, WebhookError> {
    params
        .get("MessageSid")
        .or_else(|| params.get("SmsSid"))
        .ok_or_else(|| WebhookError::BadRequest("missing parameter `MessageSid`".into()))
}

/// The sender's number: `WaId` (WhatsApp's id, digits with country code) or the `From`
/// number. Twilio (and WhatsApp behind it) delivered from it, so it is verified.
fn phone_handle(params: &Params, from: &str) -> Option<Handle> {
    let address = from.strip_prefix(WHATSAPP_PREFIX).unwrap_or(from);
    let number = params.get("WaId").or_else(|| {
        // Other channel addresses (`messenger:…`, short codes with letters) are no phones.
        let digits = address.trim_start_matches('+');
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(address)
    })?;
    Some(Handle {
        kind: HandleKind::Phone,
        value: number.to_owned(),
        verified: true,
    })
}

/// `MediaUrl{N}` / `MediaContentType{N}` for N below `NumMedia`.
fn media_parts(params: &Params) -> Result<Vec<Part>, WebhookError> {
    let count = count(params, "NumMedia")?;
    (0..count)
        .map(|n| {
            let url = params.require(&format!("MediaUrl{n}"))?;
            let mime = params.get(&format!("MediaContentType{n}"));
            Ok(Part::Media(Media {
                kind: MediaKind::of_mime(mime),
                id: None,
                url: Some(url.to_owned()),
                mime_type: mime.map(str::to_owned),
                caption: None,
                filename: None,
                size: None,
                sha256: None,
            }))
        })
        .collect()
}

/// A non-negative count parameter; absent is zero.
fn count(params: &Params, name: &str) -> Result<u32, WebhookError> {
    params.get(name).map_or(Ok(0), |value| {
        value.trim().parse().map_err(|_| {
            WebhookError::BadRequest(format!("parameter `{name}` is not a count: {value:?}"))
        })
    })
}

/// A WhatsApp location (`Latitude`, `Longitude`, `Address`, `Label`).
fn location(params: &Params) -> Result<Option<Part>, WebhookError> {
    let (Some(latitude), Some(longitude)) = (params.get("Latitude"), params.get("Longitude"))
    else {
        return Ok(None);
    };
    let degrees = |name: &str, value: &str| {
        value.trim().parse::<f64>().map_err(|_| {
            WebhookError::BadRequest(format!("parameter `{name}` is not a number: {value:?}"))
        })
    };
    Ok(Some(Part::Location(Location {
        latitude: degrees("Latitude", latitude)?,
        longitude: degrees("Longitude", longitude)?,
        name: params.get("Label").map(str::to_owned),
        address: params.get("Address").map(str::to_owned),
        url: None,
    })))
}

/// A WhatsApp quick-reply button the customer tapped.
fn button_reply(params: &Params) -> Option<InteractiveReply> {
    let text = params.get("ButtonText");
    let payload = params.get("ButtonPayload");
    let id = payload.or(text)?;
    Some(InteractiveReply {
        kind: InteractiveKind::Button,
        id: id.to_owned(),
        title: text.map(str::to_owned),
    })
}

/// A click-to-WhatsApp ad or post (`Referral*` parameters).
fn referral(params: &Params) -> Result<Option<Referral>, WebhookError> {
    let field = |name: &str| params.get(name).map(str::to_owned);
    let source_type = params.get("ReferralSourceType");
    let source_id = field("ReferralSourceId");
    let clid = field("ReferralCtwaClid");
    let url = field("ReferralSourceUrl");
    if source_type.is_none() && source_id.is_none() && clid.is_none() && url.is_none() {
        return Ok(None);
    }
    let source = match source_type.map(str::to_ascii_lowercase).as_deref() {
        Some("ad") => ReferralSource::Ad,
        Some("post") => ReferralSource::Post,
        _ => ReferralSource::Other,
    };
    let media_url = if count(params, "ReferralNumMedia")? > 0 {
        field("ReferralMediaUrl")
    } else {
        None
    };
    Ok(Some(Referral {
        ad_id: source_id.filter(|_| source == ReferralSource::Ad),
        source,
        campaign: None,
        click_ids: clid
            .map(|value| Pair {
                name: "ctwa_clid".into(),
                value,
            })
            .into_iter()
            .collect(),
        utm: Vec::new(),
        url,
        referrer: None,
        ref_payload: None,
        headline: field("ReferralHeadline"),
        body: field("ReferralBody"),
        media_url,
    }))
}

/// A status callback → `message.status`, or nothing for Twilio's intermediate states.
pub fn status_event(params: &Params, status: &str) -> Result<Option<InboundEvent>, WebhookError> {
    let sid = message_sid(params)?;
    let Some(mapped) = delivery_status(status) else {
        return Ok(None);
    };
    let error = match mapped {
        DeliveryStatus::Failed => Some(ProviderError {
            code: params.get("ErrorCode").unwrap_or(status).to_owned(),
            title: format!("message {status}"),
            detail: params.get("ErrorMessage").map(str::to_owned),
        }),
        _ => None,
    };
    let recipient = params.require("To")?;
    Ok(Some(InboundEvent {
        // One event per state: `queued` and `sent` are both `sent`, so the second is a
        // duplicate the host drops.
        external_id: format!("{sid}:{}", status_name(mapped)),
        occurred_at: None,
        account: params.get("From").map(str::to_owned),
        contact: Party {
            id: recipient.to_owned(),
            name: None,
            handles: Vec::new(),
        },
        body: EventBody::Status(StatusUpdate {
            message_id: sid.to_owned(),
            status: mapped,
            error,
        }),
        raw: None,
    }))
}

/// Twilio's `MessageStatus` → the contract's status: every state before delivery is
/// `sent` (accepted by the provider), `undelivered` and `canceled` are `failed`; `None` for
/// `receiving`/`received` and states Twilio may add later (acknowledged, not mapped).
pub fn delivery_status(status: &str) -> Option<DeliveryStatus> {
    match status {
        "accepted" | "scheduled" | "queued" | "sending" | "sent" => Some(DeliveryStatus::Sent),
        "delivered" => Some(DeliveryStatus::Delivered),
        "read" => Some(DeliveryStatus::Read),
        "failed" | "undelivered" | "canceled" => Some(DeliveryStatus::Failed),
        _ => None,
    }
}

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Read => "read",
        DeliveryStatus::Failed => "failed",
    }
}
