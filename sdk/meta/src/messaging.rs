//! The Messenger Platform, shared by Messenger (`object: "page"`) and Instagram messaging
//! (`object: "instagram"`): webhook events in `entry[].messaging[]` and the Send API.
//!
//! Each plugin describes itself with a [`Platform`] and hands its three exports here.
//! Every `messaging[]` item becomes one event with `raw` set to its JSON; an item of a
//! kind the plugin does not know becomes an inbound message with an `unsupported` part.

use omnigate_sdk::{
    DeliveryStatus, Direction, Edit, EventBody, HttpRequest, InboundEvent, InteractiveKind,
    InteractiveReply, Location, Media, MediaKind, Message, OutboundMessage, Part, Party, Reaction,
    Referral, ReferralSource, SendError, SendReceipt, Setting, StatusUpdate, Unsupported,
    WebhookError, WebhookOutcome, host, json, ok_text, outcome,
};
use serde::Deserialize;
use serde_json::{Value, json as j};

use crate::{graph, webhook};

/// What differs between Messenger and Instagram.
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    /// The webhook `object`: `page` or `instagram`.
    pub object: &'static str,
    /// The config key of the business account that sends: `page_id` or `account_id`.
    pub account_key: &'static str,
    /// `api_base` when not configured.
    pub default_api_base: &'static str,
    /// Whether the Send API reacts with any emoji (Messenger) or only `love` ❤️
    /// (Instagram).
    pub any_emoji_reaction: bool,
}

/// Config: Graph API base URL with its version.
pub const API_BASE: &str = "api_base";
/// Secret: the Meta app secret that signs webhooks.
pub const APP_SECRET: &str = "app_secret";
/// Secret: the page access token for the Send API.
pub const PAGE_ACCESS_TOKEN: &str = "page_access_token";
/// Secret: the verify token typed into the app's webhook settings.
pub const VERIFY_TOKEN: &str = "verify_token";

/// The configuration keys every Messenger Platform channel declares: the API base and the
/// platform's account key.
pub fn config_settings(platform: &Platform, account_description: &str) -> Vec<Setting> {
    vec![
        Setting::optional(
            API_BASE,
            &format!(
                "Graph API base URL with version (default {})",
                platform.default_api_base
            ),
        ),
        Setting::required(platform.account_key, account_description),
    ]
}

/// The secrets every Messenger Platform channel declares; only the page token's
/// wording differs between platforms.
pub fn secret_settings(page_token_description: &str) -> Vec<Setting> {
    vec![
        Setting::required(
            APP_SECRET,
            "Meta app secret: verifies X-Hub-Signature-256 on webhooks",
        ),
        Setting::required(PAGE_ACCESS_TOKEN, page_token_description),
        Setting::required(
            VERIFY_TOKEN,
            "the verify token entered in the app's webhook settings (handshake)",
        ),
    ]
}

// ---- webhook payload ----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Notification {
    object: String,
    entry: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Entry {
    /// The page or Instagram account id.
    id: String,
    /// Kept as JSON so each event's `raw` is its own item.
    messaging: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    sender: Id,
    recipient: Id,
    timestamp: i64,
    message: Option<Msg>,
    postback: Option<Postback>,
    reaction: Option<ItemReaction>,
    read: Option<Read>,
    delivery: Option<Delivery>,
    message_edit: Option<MessageEdit>,
    optin: Option<Optin>,
    referral: Option<WireReferral>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Id {
    id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Msg {
    mid: String,
    text: Option<String>,
    attachments: Vec<Attachment>,
    quick_reply: Option<QuickReply>,
    reply_to: Option<ReplyTo>,
    is_echo: bool,
    is_deleted: bool,
    is_unsupported: bool,
    referral: Option<WireReferral>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Attachment {
    #[serde(rename = "type")]
    kind: String,
    payload: AttachmentPayload,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AttachmentPayload {
    url: Option<String>,
    title: Option<String>,
    sticker_id: Option<i64>,
    coordinates: Option<Coordinates>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Coordinates {
    lat: f64,
    long: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QuickReply {
    payload: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplyTo {
    mid: Option<String>,
    story: Option<Story>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Story {
    url: Option<String>,
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Postback {
    mid: Option<String>,
    title: Option<String>,
    payload: String,
    referral: Option<WireReferral>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ItemReaction {
    mid: String,
    action: String,
    emoji: Option<String>,
    reaction: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Read {
    watermark: Option<i64>,
    mid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delivery {
    mids: Vec<String>,
    watermark: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageEdit {
    mid: String,
    text: Option<String>,
    num_edit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Optin {
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<String>,
}

/// An ad, m.me link, QR code or other entry point.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireReferral {
    #[serde(rename = "ref")]
    reference: Option<String>,
    source: Option<String>,
    ad_id: Option<String>,
    referer_uri: Option<String>,
    ads_context_data: Option<AdsContext>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdsContext {
    ad_title: Option<String>,
    photo_url: Option<String>,
    video_url: Option<String>,
    post_id: Option<String>,
}

// ---- inbound ----

/// The plugin's `handle_webhook`: handshake or signature first, then every event.
pub fn handle_webhook(
    platform: &Platform,
    request: &HttpRequest,
) -> Result<WebhookOutcome, WebhookError> {
    if let webhook::Verified::Handshake(done) = webhook::verify(request, VERIFY_TOKEN, APP_SECRET)?
    {
        return Ok(done);
    }
    let notification: Notification = json(&request.body)?;
    Ok(outcome(
        ok_text("EVENT_RECEIVED"),
        events(platform, notification),
    ))
}

fn events(platform: &Platform, notification: Notification) -> Vec<InboundEvent> {
    if notification.object != platform.object {
        host::warn(&format!(
            "ignoring notification for object {:?}, expected {:?}",
            notification.object, platform.object
        ));
        return Vec::new();
    }
    let mut events = Vec::new();
    for entry in notification.entry {
        for raw in entry.messaging {
            let text = raw.to_string();
            let item_events = match serde_json::from_value::<Item>(raw.clone()) {
                Ok(item) => item_events(item, &raw),
                Err(e) => vec![unknown(&raw, &format!("unreadable messaging item: {e}"))],
            };
            for mut event in item_events {
                event.account = Some(entry.id.clone()).filter(|a| !a.is_empty());
                event.raw = Some(text.clone());
                events.push(event);
            }
        }
    }
    events
}

fn item_events(item: Item, raw: &Value) -> Vec<InboundEvent> {
    let at = Some(item.timestamp).filter(|t| *t > 0);
    let user = &item.sender.id;
    let event = |external_id: String, party_id: &str, body: EventBody| InboundEvent {
        external_id,
        occurred_at: at,
        account: None,
        contact: Party {
            id: party_id.to_owned(),
            name: None,
            handles: Vec::new(),
        },
        body,
        raw: None,
    };
    let ts = item.timestamp;

    if let Some(mut m) = item.message {
        if m.is_deleted {
            return vec![event(
                format!("{}:deleted", m.mid),
                user,
                EventBody::Deletion(m.mid),
            )];
        }
        // An echo is the page's own message (sent from Inbox or another app): the
        // customer is the recipient.
        let (direction, party) = if m.is_echo {
            (Direction::Outbound, &item.recipient.id)
        } else {
            (Direction::Inbound, user)
        };
        let referral = m.referral.take().or(item.referral).map(referral);
        let mid = m.mid.clone();
        return vec![event(
            mid,
            party,
            EventBody::Message(message(m, direction, referral)),
        )];
    }
    if let Some(p) = item.postback {
        let id = p
            .mid
            .clone()
            .unwrap_or_else(|| format!("{user}:postback:{ts}"));
        let body = EventBody::Message(Message {
            direction: Direction::Inbound,
            text: None,
            parts: Vec::new(),
            reply_to: None,
            forwarded: false,
            interactive_reply: Some(InteractiveReply {
                kind: InteractiveKind::Postback,
                id: p.payload,
                title: p.title,
            }),
            referral: p.referral.map(referral),
        });
        return vec![event(id, user, body)];
    }
    if let Some(r) = item.reaction {
        let emoji = (r.action == "react")
            .then(|| r.emoji.or(r.reaction))
            .flatten();
        let id = format!(
            "{}:reaction:{}:{ts}",
            r.mid,
            emoji.as_deref().unwrap_or("removed")
        );
        return vec![event(
            id,
            user,
            EventBody::Reaction(Reaction {
                message_id: r.mid,
                emoji,
            }),
        )];
    }
    if let Some(r) = item.read {
        // Messenger reads are a watermark: everything sent before it has been read.
        let message_id = r
            .mid
            .or_else(|| r.watermark.map(|w| format!("watermark:{w}")))
            .unwrap_or_else(|| format!("watermark:{ts}"));
        let id = format!("{user}:{message_id}:read");
        return vec![event(id, user, status(message_id, DeliveryStatus::Read))];
    }
    if let Some(d) = item.delivery {
        let mids = if d.mids.is_empty() {
            vec![format!("watermark:{}", d.watermark.unwrap_or(ts))]
        } else {
            d.mids
        };
        return mids
            .into_iter()
            .map(|mid| {
                event(
                    format!("{mid}:delivered"),
                    user,
                    status(mid, DeliveryStatus::Delivered),
                )
            })
            .collect();
    }
    if let Some(e) = item.message_edit {
        let id = format!("{}:edit:{}", e.mid, e.num_edit.unwrap_or(ts));
        let body = EventBody::Edit(Edit {
            message_id: e.mid,
            text: e.text,
            parts: Vec::new(),
        });
        return vec![event(id, user, body)];
    }
    if let Some(o) = item.optin {
        let body = EventBody::Referral(Referral {
            source: ReferralSource::Other,
            ref_payload: o.reference.or(o.payload),
            ..empty_referral()
        });
        let id = format!(
            "{user}:optin:{}:{ts}",
            o.kind.as_deref().unwrap_or("plugin")
        );
        return vec![event(id, user, body)];
    }
    if let Some(r) = item.referral {
        // Someone with an existing thread came back through an ad, link or QR code.
        return vec![event(
            format!("{user}:referral:{ts}"),
            user,
            EventBody::Referral(referral(r)),
        )];
    }
    vec![unknown(
        raw,
        "a messaging event the plugin does not map; details in raw",
    )]
}

fn message(m: Msg, direction: Direction, referral: Option<Referral>) -> Message {
    let mut parts: Vec<Part> = m.attachments.iter().map(attachment).collect();
    let mut reply_to = m.reply_to.as_ref().and_then(|r| r.mid.clone());
    if let Some(story) = m.reply_to.and_then(|r| r.story) {
        // An Instagram story reply: the story is what is answered.
        reply_to = story.id.clone().or(reply_to);
        parts.push(Part::Media(Media {
            kind: MediaKind::Image,
            id: story.id,
            url: story.url,
            mime_type: None,
            caption: Some("story".into()),
            filename: None,
            size: None,
            sha256: None,
        }));
    }
    if m.is_unsupported || (m.text.is_none() && parts.is_empty()) {
        parts.push(unsupported(
            "message",
            "content Meta does not pass to the API; details in raw",
        ));
    }
    Message {
        direction,
        text: m.text,
        parts,
        reply_to,
        forwarded: false,
        interactive_reply: m.quick_reply.map(|q| InteractiveReply {
            kind: InteractiveKind::Button,
            id: q.payload,
            title: None,
        }),
        referral,
    }
}

fn attachment(a: &Attachment) -> Part {
    let kind = match a.kind.as_str() {
        "image" => Some(MediaKind::Image),
        "video" | "ig_reel" | "reel" => Some(MediaKind::Video),
        "audio" => Some(MediaKind::Audio),
        "file" => Some(MediaKind::Document),
        "sticker" => Some(MediaKind::Sticker),
        // An Instagram story that mentions the business: the story's media.
        "story_mention" => Some(MediaKind::Image),
        _ => None,
    };
    if let Some(c) = a
        .payload
        .coordinates
        .as_ref()
        .filter(|_| a.kind == "location")
    {
        return Part::Location(Location {
            latitude: c.lat,
            longitude: c.long,
            name: a.payload.title.clone(),
            address: None,
            url: a.payload.url.clone(),
        });
    }
    match (kind, &a.payload.url) {
        (Some(kind), Some(url)) => Part::Media(Media {
            kind,
            id: a.payload.sticker_id.map(|s| s.to_string()),
            url: Some(url.clone()),
            mime_type: None,
            caption: (a.kind == "story_mention").then(|| "story_mention".to_owned()),
            filename: None,
            size: None,
            sha256: None,
        }),
        _ => unsupported(
            &a.kind,
            "an attachment type the plugin does not map; details in raw",
        ),
    }
}

fn referral(r: WireReferral) -> Referral {
    let source = match r.source.as_deref() {
        Some("ADS") => ReferralSource::Ad,
        Some("SHORTLINK") | Some("CUSTOMER_CHAT_PLUGIN") => ReferralSource::Link,
        Some("MESSENGER_CODE") => ReferralSource::Qr,
        _ if r.ad_id.is_some() => ReferralSource::Ad,
        _ => ReferralSource::Other,
    };
    let ads = r.ads_context_data.unwrap_or_default();
    Referral {
        source,
        ad_id: r.ad_id,
        campaign: None,
        url: r.referer_uri,
        ref_payload: r.reference,
        headline: ads.ad_title,
        media_url: ads.photo_url.or(ads.video_url),
        body: None,
        // The boosted post behind the ad, when Meta says.
        referrer: ads.post_id.map(|p| format!("post:{p}")),
        ..empty_referral()
    }
}

fn empty_referral() -> Referral {
    Referral {
        source: ReferralSource::Other,
        ad_id: None,
        campaign: None,
        click_ids: Vec::new(),
        utm: Vec::new(),
        url: None,
        referrer: None,
        ref_payload: None,
        headline: None,
        body: None,
        media_url: None,
    }
}

fn status(message_id: String, status: DeliveryStatus) -> EventBody {
    EventBody::Status(StatusUpdate {
        message_id,
        status,
        error: None,
    })
}

fn unsupported(provider_type: &str, reason: &str) -> Part {
    Part::Unsupported(Unsupported {
        provider_type: provider_type.to_owned(),
        reason: reason.to_owned(),
    })
}

/// An item the plugin cannot map: the kind is its first field besides the envelope.
fn unknown(raw: &Value, reason: &str) -> InboundEvent {
    let kind = raw
        .as_object()
        .and_then(|o| {
            o.keys()
                .find(|k| !matches!(k.as_str(), "sender" | "recipient" | "timestamp"))
        })
        .map_or("unknown", String::as_str);
    let sender = raw
        .pointer("/sender/id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ts = raw.get("timestamp").and_then(Value::as_i64);
    host::warn(&format!("{reason} ({kind})"));
    InboundEvent {
        external_id: format!("{sender}:{kind}:{}", ts.unwrap_or_default()),
        occurred_at: ts,
        account: None,
        contact: Party {
            id: sender.to_owned(),
            name: None,
            handles: Vec::new(),
        },
        body: EventBody::Message(Message {
            direction: Direction::Inbound,
            text: None,
            parts: vec![unsupported(kind, reason)],
            reply_to: None,
            forwarded: false,
            interactive_reply: None,
            referral: None,
        }),
        raw: None,
    }
}

// ---- outbound ----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Sent {
    message_id: Option<String>,
    recipient_id: Option<String>,
}

/// The value of option `name`, if given.
fn option<'a>(message: &'a OutboundMessage, name: &str) -> Option<&'a str> {
    message
        .options
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// The Send API body for `message`, or `Invalid` for what it cannot carry.
///
/// `options`: `messaging_type` (`RESPONSE` default, `UPDATE`, `MESSAGE_TAG`), `tag`
/// (e.g. `HUMAN_AGENT`; implies `MESSAGE_TAG`), `sender_action` (`mark_seen`,
/// `typing_on`, `typing_off`: sent instead of a message).
pub fn to_body(platform: &Platform, message: &OutboundMessage) -> Result<Value, SendError> {
    let invalid = |why: &str| Err(SendError::Invalid(why.to_owned()));
    if message.recipient.trim().is_empty() {
        return invalid("no recipient id");
    }
    let recipient = j!({"id": message.recipient});
    if let Some(action) = option(message, "sender_action") {
        return Ok(j!({"recipient": recipient, "sender_action": action}));
    }
    if let Some(reaction) = &message.reaction {
        // Messenger takes any emoji; Instagram only the named reaction `love`.
        let (action, payload) = match reaction.emoji.as_deref() {
            None => ("unreact", j!({"message_id": reaction.message_id})),
            Some(emoji) if platform.any_emoji_reaction => (
                "react",
                j!({"message_id": reaction.message_id, "reaction": emoji}),
            ),
            Some("❤" | "❤️" | "love") => (
                "react",
                j!({"message_id": reaction.message_id, "reaction": "love"}),
            ),
            Some(other) => {
                return invalid(&format!("Instagram only reacts with ❤️, not {other}"));
            }
        };
        return Ok(j!({"recipient": recipient, "sender_action": action, "payload": payload}));
    }
    if message.template.is_some() {
        return invalid(
            "Messenger and Instagram have no message templates like WhatsApp's; use a tag",
        );
    }
    if message.parts.len() > 1 {
        return invalid("the Send API sends one attachment per message; send them one by one");
    }
    let mut content = match message.parts.first() {
        Some(Part::Media(media)) => {
            let kind = match media.kind {
                MediaKind::Image | MediaKind::Sticker => "image",
                MediaKind::Video => "video",
                MediaKind::Audio | MediaKind::Voice => "audio",
                MediaKind::Document => "file",
            };
            let payload = match (&media.url, &media.id) {
                (Some(url), _) => j!({"url": url}),
                (None, Some(id)) => j!({"attachment_id": id}),
                (None, None) => return invalid("media without id or url"),
            };
            if message.text.is_some() {
                return invalid("the Send API has no captions; send the text separately");
            }
            j!({"attachment": {"type": kind, "payload": payload}})
        }
        Some(Part::Location(_)) => return invalid("the Send API cannot send locations"),
        Some(Part::Contact(_)) => return invalid("the Send API cannot send contact cards"),
        Some(Part::Unsupported(u)) => {
            return Err(SendError::Invalid(format!(
                "cannot send unsupported part {:?}",
                u.provider_type
            )));
        }
        None => {
            let text = match (&message.text, &message.interactive) {
                (Some(t), Some(i)) if !i.body.is_empty() && *t != i.body => {
                    format!("{t}\n\n{}", i.body)
                }
                (Some(t), _) => t.clone(),
                (None, Some(i)) => i.body.clone(),
                (None, None) => return invalid("an empty message"),
            };
            j!({"text": text})
        }
    };
    if let Some(interactive) = &message.interactive {
        // Buttons and lists both become quick replies, the Send API's reply chips.
        if interactive.choices.len() > 13 {
            return invalid("at most 13 quick replies");
        }
        let replies: Vec<Value> = interactive
            .choices
            .iter()
            .map(|c| j!({"content_type": "text", "title": c.title, "payload": c.id}))
            .collect();
        content["quick_replies"] = Value::Array(replies);
    }
    let tag = option(message, "tag");
    let messaging_type = option(message, "messaging_type").unwrap_or(if tag.is_some() {
        "MESSAGE_TAG"
    } else {
        "RESPONSE"
    });
    let mut body =
        j!({"recipient": recipient, "messaging_type": messaging_type, "message": content});
    if let Some(tag) = tag {
        body["tag"] = j!(tag);
    }
    Ok(body)
}

/// The plugin's `send`: one Send API call to `{api_base}/{account}/messages`.
pub fn send(platform: &Platform, message: &OutboundMessage) -> Result<SendReceipt, SendError> {
    let base = host::config(API_BASE).unwrap_or_else(|| platform.default_api_base.into());
    let account = host::config(platform.account_key).ok_or_else(|| {
        SendError::Invalid(format!("config `{}` is not set", platform.account_key))
    })?;
    let body = to_body(platform, message)?;
    let url = format!("{}/{account}/messages", base.trim_end_matches('/'));
    let response = graph::check(graph::post_json(&url, PAGE_ACCESS_TOKEN, &body)?, |e| {
        match (e.code, e.error_subcode) {
            // The customer has not written in 24 h: a tag (e.g. HUMAN_AGENT) is needed.
            (10, Some(2_018_278)) => Some(e.rejected(Some("outside the 24 h window"))),
            (10, _) if e.message.contains("outside of allowed window") => {
                Some(e.rejected(Some("outside the 24 h window")))
            }
            (551, _) => Some(e.rejected(Some("this person isn't available right now"))),
            _ => None,
        }
    })?;
    let sent: Sent = response.json().unwrap_or_default();
    let external_id = match (sent.message_id, option(message, "sender_action")) {
        (Some(id), _) => id,
        (None, _) if sent.recipient_id.is_some() => message.id.clone(),
        _ => {
            return Err(SendError::Transient(format!(
                "unexpected answer from the Send API: {}",
                response.text()
            )));
        }
    };
    Ok(SendReceipt {
        external_id,
        raw: Some(response.text()),
    })
}
