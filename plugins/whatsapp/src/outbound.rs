//! Replies → Cloud API `POST /{phone_number_id}/messages` bodies.
//!
//! One request sends one WhatsApp message: text, one media part (by id or link, the
//! text becoming its caption), a location, contact cards, a template, reply buttons or a
//! list, or a reaction. `options`:
//! - `mark_read=<wamid>`: mark that customer message as read (blue ticks) instead of
//!   sending anything;
//! - `preview_url=true`: render a link preview for a URL in the text;
//! - `biz_opaque_callback_data=<text>`: tracking data WhatsApp echoes in the statuses.

use omnigate_sdk::{
    Interactive, InteractiveStyle, MediaKind, OutboundMessage, Part, SendError, Template,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The answer to a successful send.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Sent {
    /// The messages created; the first one's id is the receipt's.
    pub messages: Vec<SentMessage>,
    /// `true` for a mark-as-read call.
    pub success: bool,
}

/// One created message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SentMessage {
    /// `wamid.…`
    pub id: String,
}

/// The option naming a message to mark as read.
pub const MARK_READ: &str = "mark_read";

/// The value of option `name`, if given.
pub fn option<'a>(message: &'a OutboundMessage, name: &str) -> Option<&'a str> {
    message
        .options
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// The request body for `message`, or `Invalid` for what WhatsApp cannot carry.
pub fn to_body(message: &OutboundMessage) -> Result<Value, SendError> {
    let invalid = |why: &str| Err(SendError::Invalid(why.to_owned()));
    if let Some(wamid) = option(message, MARK_READ) {
        return Ok(json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
        }));
    }
    if message.recipient.trim().is_empty() {
        return invalid("no recipient wa_id");
    }
    if message.parts.len() > 1 {
        return invalid(
            "WhatsApp sends one media, location or contact part per message; send them one by one",
        );
    }
    let (kind, content) = if let Some(reaction) = &message.reaction {
        // An empty emoji removes an earlier reaction.
        let emoji = reaction.emoji.clone().unwrap_or_default();
        (
            "reaction",
            json!({"message_id": reaction.message_id, "emoji": emoji}),
        )
    } else if let Some(template) = &message.template {
        ("template", template_body(template)?)
    } else if let Some(interactive) = &message.interactive {
        (
            "interactive",
            interactive_body(interactive, message.parts.first())?,
        )
    } else if let Some(part) = message.parts.first() {
        part_body(part, message.text.as_deref())?
    } else if let Some(text) = message.text.as_deref().filter(|t| !t.is_empty()) {
        let preview = option(message, "preview_url") == Some("true");
        ("text", json!({"body": text, "preview_url": preview}))
    } else {
        return invalid("an empty message");
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.recipient,
        "type": kind,
    });
    body[kind] = content;
    if let (Some(reply_to), false) = (&message.reply_to, kind == "reaction") {
        body["context"] = json!({"message_id": reply_to});
    }
    if let Some(data) = option(message, "biz_opaque_callback_data") {
        body["biz_opaque_callback_data"] = json!(data);
    }
    Ok(body)
}

fn template_body(template: &Template) -> Result<Value, SendError> {
    let mut body = json!({"name": template.name, "language": {"code": template.language}});
    if let Some(components) = &template.components {
        let parsed: Value = serde_json::from_str(components)
            .map_err(|e| SendError::Invalid(format!("template components are not JSON: {e}")))?;
        if !parsed.is_array() {
            return Err(SendError::Invalid(
                "template components must be a JSON array".into(),
            ));
        }
        body["components"] = parsed;
    }
    Ok(body)
}

fn interactive_body(interactive: &Interactive, header: Option<&Part>) -> Result<Value, SendError> {
    if interactive.choices.is_empty() {
        return Err(SendError::Invalid(
            "interactive message without choices".into(),
        ));
    }
    let mut body = match interactive.style {
        InteractiveStyle::Buttons => {
            let buttons: Vec<Value> = interactive
                .choices
                .iter()
                .map(|c| json!({"type": "reply", "reply": {"id": c.id, "title": c.title}}))
                .collect();
            json!({"type": "button", "body": {"text": interactive.body}, "action": {"buttons": buttons}})
        }
        InteractiveStyle::List => {
            let rows: Vec<Value> = interactive
                .choices
                .iter()
                .map(|c| {
                    let mut row = json!({"id": c.id, "title": c.title});
                    if let Some(d) = &c.description {
                        row["description"] = json!(d);
                    }
                    row
                })
                .collect();
            let label = interactive.action_label.as_deref().unwrap_or("Options");
            json!({"type": "list", "body": {"text": interactive.body},
                   "action": {"button": label, "sections": [{"rows": rows}]}})
        }
    };
    // A text or media part goes above buttons as the header.
    if let Some(Part::Media(media)) = header {
        let (kind, content) = part_body(&Part::Media(media.clone()), None)?;
        let mut header = json!({"type": kind});
        header[kind] = content;
        body["header"] = header;
    }
    Ok(body)
}

/// `(type, object)` for one part; `text` becomes the caption where WhatsApp has one.
fn part_body(part: &Part, text: Option<&str>) -> Result<(&'static str, Value), SendError> {
    match part {
        Part::Media(media) => {
            let kind = match media.kind {
                MediaKind::Image => "image",
                MediaKind::Video => "video",
                MediaKind::Audio | MediaKind::Voice => "audio",
                MediaKind::Document => "document",
                MediaKind::Sticker => "sticker",
            };
            let mut content = match (&media.id, &media.url) {
                (Some(id), _) => json!({"id": id}),
                (None, Some(url)) => json!({"link": url}),
                (None, None) => return Err(SendError::Invalid("media without id or url".into())),
            };
            let caption = media.caption.as_deref().or(text);
            if let (Some(caption), "image" | "video" | "document") = (caption, kind) {
                content["caption"] = json!(caption);
            } else if text.is_some() && media.caption.is_none() {
                return Err(SendError::Invalid(format!(
                    "WhatsApp {kind} messages have no caption for the text"
                )));
            }
            if let (Some(filename), "document") = (&media.filename, kind) {
                content["filename"] = json!(filename);
            }
            Ok((kind, content))
        }
        Part::Location(l) => {
            let mut content = json!({"latitude": l.latitude, "longitude": l.longitude});
            if let Some(name) = &l.name {
                content["name"] = json!(name);
            }
            if let Some(address) = &l.address {
                content["address"] = json!(address);
            }
            Ok(("location", content))
        }
        Part::Contact(card) => {
            let phones: Vec<Value> = card
                .phones
                .iter()
                .map(|p| match &card.user_id {
                    Some(wa_id) if card.phones.len() == 1 => json!({"phone": p, "wa_id": wa_id}),
                    _ => json!({"phone": p}),
                })
                .collect();
            let emails: Vec<Value> = card.emails.iter().map(|e| json!({"email": e})).collect();
            // WhatsApp requires a first name besides the formatted name.
            let first = card.name.split_whitespace().next().unwrap_or(&card.name);
            Ok((
                "contacts",
                json!([{"name": {"formatted_name": card.name, "first_name": first},
                        "phones": phones, "emails": emails}]),
            ))
        }
        Part::Unsupported(u) => Err(SendError::Invalid(format!(
            "cannot send unsupported part {:?}",
            u.provider_type
        ))),
    }
}
