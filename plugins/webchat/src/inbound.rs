//! What the site sends (a visitor's message) and how it becomes an [`InboundEvent`].
//!
//! ```json
//! {"type": "message", "id": "site-msg-1001",
//!  "visitor": {"id": "v-42", "name": "Ana", "email": "ana@example.com",
//!              "phone": "+34600111222", "authenticated": false},
//!  "text": "Hola",
//!  "attachments": [{"type": "image", "url": "https://…", "mime_type": "image/jpeg",
//!                   "filename": "shoe.jpg"}],
//!  "reply_to": "omni-msg-77",
//!  "interactive_reply": {"kind": "button", "id": "track-order", "title": "Track my order"},
//!  "page": {"url": "https://shop.example/p?utm_source=instagram", "referrer": "https://…"},
//!  "sent_at": "2026-11-24T10:00:00Z"}
//! ```
//! Only `type`, `id`, `visitor.id` and text or an attachment are required; unknown fields
//! are ignored.

use omnigate_sdk::{
    Direction, EventBody, Handle, HandleKind, InboundEvent, InteractiveKind, InteractiveReply,
    Media, MediaKind, Message, Part, Party, WebhookError, referral_from_url, time,
};
use serde::{Deserialize, Serialize};

/// Just the `type` field, read first so an unknown type is named in the error.
#[derive(Debug, Deserialize)]
pub struct Kind {
    /// `message` is the only type so far.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A visitor's message.
#[derive(Debug, Deserialize)]
pub struct VisitorMessage {
    /// `message` (checked by the caller, so other types get a clear error).
    #[serde(rename = "type")]
    pub kind: String,
    /// The site's id for the message; the host dedupes on it.
    pub id: String,
    /// Who wrote it.
    pub visitor: Visitor,
    /// The text, if any.
    pub text: Option<String>,
    /// Files the visitor attached.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// The id of the message this one answers (a site id or an omnigate message id).
    pub reply_to: Option<String>,
    /// A button or list option the visitor picked.
    pub interactive_reply: Option<WireInteractiveReply>,
    /// The page the chat is on; its URL carries UTM parameters and click ids.
    pub page: Option<Page>,
    /// When the visitor sent it, RFC 3339.
    pub sent_at: Option<String>,
}

/// The person chatting.
#[derive(Debug, Deserialize)]
pub struct Visitor {
    /// The site's stable visitor id (cookie or account id); replies go to it.
    pub id: String,
    /// Display name, if known.
    pub name: Option<String>,
    /// E-mail, if the visitor gave one.
    pub email: Option<String>,
    /// Phone number, if the visitor gave one.
    pub phone: Option<String>,
    /// `true` when the visitor is logged in on the site, so the site vouches for the
    /// e-mail and phone: they become verified handles. Defaults to `false`.
    #[serde(default)]
    pub authenticated: bool,
}

/// The page the visitor is on.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Its full URL, query included.
    pub url: String,
    /// `document.referrer`, if any.
    pub referrer: Option<String>,
}

/// A file, in either direction.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Attachment {
    /// What kind of file it is.
    #[serde(rename = "type")]
    pub kind: AttachmentKind,
    /// Where it can be fetched.
    pub url: String,
    /// MIME type, e.g. `image/jpeg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// File name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Caption shown with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The `type` of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum AttachmentKind {
    Image,
    Video,
    Audio,
    Voice,
    Document,
    Sticker,
}

/// A picked button or list option.
#[derive(Debug, Deserialize)]
pub struct WireInteractiveReply {
    /// `button` (default) or `list`.
    #[serde(default)]
    pub kind: ReplyKind,
    /// The option's id, as sent in the reply's `interactive.choices`.
    pub id: String,
    /// The option's title as shown.
    pub title: Option<String>,
}

/// Whether a button or a list row was picked.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum ReplyKind {
    #[default]
    Button,
    List,
}

impl From<AttachmentKind> for MediaKind {
    fn from(kind: AttachmentKind) -> Self {
        match kind {
            AttachmentKind::Image => MediaKind::Image,
            AttachmentKind::Video => MediaKind::Video,
            AttachmentKind::Audio => MediaKind::Audio,
            AttachmentKind::Voice => MediaKind::Voice,
            AttachmentKind::Document => MediaKind::Document,
            AttachmentKind::Sticker => MediaKind::Sticker,
        }
    }
}

impl From<MediaKind> for AttachmentKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Image => AttachmentKind::Image,
            MediaKind::Video => AttachmentKind::Video,
            MediaKind::Audio => AttachmentKind::Audio,
            MediaKind::Voice => AttachmentKind::Voice,
            MediaKind::Document => AttachmentKind::Document,
            MediaKind::Sticker => AttachmentKind::Sticker,
        }
    }
}

/// The event for one visitor message; a `BadRequest` says what is missing or invalid.
pub fn to_event(message: VisitorMessage) -> Result<InboundEvent, WebhookError> {
    let bad = |reason: &str| Err(WebhookError::BadRequest(reason.into()));
    if message.id.trim().is_empty() {
        return bad("`id` is empty");
    }
    if message.visitor.id.trim().is_empty() {
        return bad("`visitor.id` is empty");
    }
    let text = message.text.filter(|t| !t.is_empty());
    if text.is_none() && message.attachments.is_empty() && message.interactive_reply.is_none() {
        return bad("message has no text, attachments or interactive_reply");
    }
    let occurred_at = match &message.sent_at {
        None => None,
        Some(sent_at) => Some(time::parse_rfc3339(sent_at).ok_or_else(|| {
            WebhookError::BadRequest(format!(
                "`sent_at` is not an RFC 3339 timestamp: {sent_at:?}"
            ))
        })?),
    };

    let visitor = message.visitor;
    let verified = visitor.authenticated;
    let handles = [
        (HandleKind::Email, visitor.email),
        (HandleKind::Phone, visitor.phone),
    ]
    .into_iter()
    .filter_map(|(kind, value)| {
        value.filter(|v| !v.is_empty()).map(|value| Handle {
            kind,
            value,
            verified,
        })
    })
    .collect();

    Ok(InboundEvent {
        external_id: message.id,
        occurred_at,
        account: None,
        contact: Party {
            id: visitor.id,
            name: visitor.name,
            handles,
        },
        body: EventBody::Message(Message {
            direction: Direction::Inbound,
            text,
            parts: message.attachments.into_iter().map(media_part).collect(),
            reply_to: message.reply_to,
            forwarded: false,
            interactive_reply: message.interactive_reply.map(|r| InteractiveReply {
                kind: match r.kind {
                    ReplyKind::Button => InteractiveKind::Button,
                    ReplyKind::List => InteractiveKind::List,
                },
                id: r.id,
                title: r.title,
            }),
            referral: message
                .page
                .and_then(|page| referral_from_url(&page.url, page.referrer.as_deref())),
        }),
        // The whole body is this one event: the host keeps it as `raw`.
        raw: None,
    })
}

fn media_part(attachment: Attachment) -> Part {
    Part::Media(Media {
        kind: attachment.kind.into(),
        id: None,
        url: Some(attachment.url),
        mime_type: attachment.mime_type,
        caption: attachment.caption,
        filename: attachment.filename,
        size: attachment.size,
        sha256: None,
    })
}
