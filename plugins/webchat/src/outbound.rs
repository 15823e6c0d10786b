//! What a reply looks like on the wire to the site's `callback_url`.
//!
//! ```json
//! {"type": "message", "id": "omni-msg-1", "conversation_id": "cv_1", "visitor_id": "v-42",
//!  "text": "Yes, in stock!", "parts": [{"type": "image", "url": "https://…"}],
//!  "reply_to": "site-msg-1002",
//!  "interactive": {"style": "buttons", "body": "Want it?", "choices": [{"id": "buy", "title": "Buy"}]},
//!  "sent_at": "2026-11-24T10:05:00Z"}
//! ```
//! The site answers 2xx, optionally with `{"id": "<its id for the message>"}`.

use omnigate_sdk::{
    Interactive as SdkInteractive, InteractiveStyle, OutboundMessage, Part, SendError, time,
};
use serde::{Deserialize, Serialize};

use crate::inbound::Attachment;

/// The JSON body POSTed to the site.
#[derive(Debug, Serialize)]
pub struct Reply {
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// omnigate's message id; also the `webhook-id` header.
    pub id: String,
    /// omnigate's conversation id.
    pub conversation_id: String,
    /// The visitor to show it to (`visitor.id` of their messages).
    pub visitor_id: String,
    /// The text, if any.
    pub text: Option<String>,
    /// Files, in the same shape as inbound `attachments`.
    pub parts: Vec<Attachment>,
    /// The message this one answers.
    pub reply_to: Option<String>,
    /// Buttons or a list to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
    /// When omnigate sent it, RFC 3339.
    pub sent_at: Option<String>,
}

/// Buttons or a list.
#[derive(Debug, Serialize)]
pub struct Interactive {
    /// `buttons` or `list`.
    pub style: &'static str,
    /// Text shown with the options.
    pub body: String,
    /// The list's button label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_label: Option<String>,
    /// The options.
    pub choices: Vec<Choice>,
}

/// One option; its `id` comes back in the visitor's `interactive_reply`.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// Returned when picked.
    pub id: String,
    /// What the visitor sees.
    pub title: String,
    /// Extra line (lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The site's (optional) answer body.
#[derive(Debug, Deserialize)]
pub struct Ack {
    /// The site's id for the delivered message.
    pub id: Option<String>,
}

/// The body for `message`, or `Invalid` for what a web chat cannot show
/// (templates, reactions, locations, contact cards, media without a URL).
pub fn to_payload(message: &OutboundMessage, now_ms: i64) -> Result<Reply, SendError> {
    let invalid = |what: &str| Err(SendError::Invalid(format!("webchat cannot send {what}")));
    if message.template.is_some() {
        return invalid("templates");
    }
    if message.reaction.is_some() {
        return invalid("reactions");
    }
    let mut parts = Vec::with_capacity(message.parts.len());
    for part in &message.parts {
        match part {
            Part::Media(media) => {
                let Some(url) = media.url.clone() else {
                    return invalid("media without a url");
                };
                parts.push(Attachment {
                    kind: media.kind.into(),
                    url,
                    mime_type: media.mime_type.clone(),
                    filename: media.filename.clone(),
                    caption: media.caption.clone(),
                    size: media.size,
                });
            }
            Part::Location(_) => return invalid("locations"),
            Part::Contact(_) => return invalid("contact cards"),
            Part::Unsupported(u) => {
                return invalid(&format!("unsupported part {:?}", u.provider_type));
            }
        }
    }
    if message.text.is_none() && parts.is_empty() && message.interactive.is_none() {
        return invalid("an empty message");
    }
    Ok(Reply {
        kind: "message",
        id: message.id.clone(),
        conversation_id: message.conversation_id.clone(),
        visitor_id: message.recipient.clone(),
        text: message.text.clone(),
        parts,
        reply_to: message.reply_to.clone(),
        interactive: message.interactive.as_ref().map(interactive),
        sent_at: time::format_rfc3339(now_ms),
    })
}

fn interactive(element: &SdkInteractive) -> Interactive {
    Interactive {
        style: match element.style {
            InteractiveStyle::Buttons => "buttons",
            InteractiveStyle::List => "list",
        },
        body: element.body.clone(),
        action_label: element.action_label.clone(),
        choices: element
            .choices
            .iter()
            .map(|c| Choice {
                id: c.id.clone(),
                title: c.title.clone(),
                description: c.description.clone(),
            })
            .collect(),
    }
}
