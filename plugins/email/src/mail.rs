//! One inbound mail, whatever the provider, and its event.

use omnigate_sdk::{
    Direction, EventBody, Handle, HandleKind, InboundEvent, Media, MediaKind, Message, Part, Party,
    Referral, WebhookError, link_referral,
};

use crate::address::{self, Mailbox};

/// Width HTML is wrapped at when reduced to text; wide, so sentences stay whole.
const TEXT_WIDTH: usize = 10_000;

/// A mail as the provider reported it.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// The sender.
    pub from: Option<Mailbox>,
    /// Every recipient address the provider reports (`To`, `Cc`, the envelope).
    pub recipients: Vec<Mailbox>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Message-ID`, without brackets.
    pub message_id: Option<String>,
    /// The provider's own id, used when the mail has no `Message-ID`.
    pub provider_id: Option<String>,
    /// `In-Reply-To`, without brackets.
    pub in_reply_to: Option<String>,
    /// `References`, without brackets, oldest first.
    pub references: Vec<String>,
    /// The text part.
    pub text: Option<String>,
    /// The HTML part.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Whether the provider reports SPF or DKIM passing for the sender.
    pub authenticated: bool,
}

/// An attachment: described, not carried (the provider's payload keeps the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// A reference to it within the provider's payload (e.g. `attachment-1`).
    pub reference: String,
    /// File name.
    pub filename: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
}

impl Mail {
    /// The message event of this mail on the channel whose mailbox is `account`.
    pub fn into_event(self) -> Result<InboundEvent, WebhookError> {
        let from = self
            .from
            .clone()
            .ok_or_else(|| WebhookError::BadRequest("the mail has no sender address".into()))?;
        let external_id = self
            .message_id
            .clone()
            .or_else(|| self.provider_id.clone())
            .ok_or_else(|| WebhookError::BadRequest("the mail has no Message-ID".into()))?;
        let referral = self.link_token_referral();
        let account = self
            .recipients
            .iter()
            .find(|mailbox| address::plus_detail(&mailbox.email).is_none())
            .or(self.recipients.first())
            .map(|mailbox| mailbox.email.clone());
        let reply_to = self
            .in_reply_to
            .clone()
            .or_else(|| self.references.last().cloned());
        let message = Message {
            direction: Direction::Inbound,
            text: self.text_for_message(),
            parts: self.parts(),
            reply_to,
            forwarded: false,
            interactive_reply: None,
            referral,
        };
        Ok(InboundEvent {
            external_id,
            occurred_at: None,
            account,
            contact: Party {
                id: from.email.clone(),
                name: from.name,
                handles: vec![Handle {
                    kind: HandleKind::Email,
                    value: from.email,
                    // Without SPF or DKIM passing, the From line is only what the sender
                    // typed: a probable handle, never one that merges contacts.
                    verified: self.authenticated,
                }],
            },
            body: EventBody::Message(message),
            raw: None,
        })
    }

    /// The text part, else the HTML reduced to text; the subject leads when there is one.
    fn text_for_message(&self) -> Option<String> {
        let body = self
            .text
            .clone()
            .filter(|text| !text.trim().is_empty())
            .or_else(|| self.html.as_deref().map(html_to_text))
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        match (&self.subject, body) {
            (Some(subject), Some(body)) => Some(format!("{subject}\n\n{body}")),
            (Some(subject), None) => Some(subject.clone()),
            (None, body) => body,
        }
    }

    fn parts(&self) -> Vec<Part> {
        let html = self.html.as_ref().map(|html| {
            Part::Media(Media {
                kind: MediaKind::Document,
                id: Some("body.html".into()),
                url: None,
                mime_type: Some("text/html".into()),
                caption: Some("the original HTML body (in the raw payload)".into()),
                filename: Some("body.html".into()),
                size: Some(html.len() as u64),
                sha256: None,
            })
        });
        html.into_iter()
            .chain(self.attachments.iter().map(|attachment| {
                Part::Media(Media {
                    kind: MediaKind::of_mime(attachment.mime_type.as_deref()),
                    id: Some(attachment.reference.clone()),
                    url: None,
                    mime_type: attachment.mime_type.clone(),
                    caption: None,
                    filename: attachment.filename.clone(),
                    size: attachment.size,
                    sha256: None,
                })
            }))
            .collect()
    }

    /// `support+<token>@…`: the plus detail of a recipient, as a link's ref payload (the
    /// host redeems it when it is a live link token).
    fn link_token_referral(&self) -> Option<Referral> {
        let detail = self
            .recipients
            .iter()
            .find_map(|mailbox| address::plus_detail(&mailbox.email))?;
        Some(link_referral(detail))
    }
}

/// HTML reduced to plain text: the words of the page, no markup or link footnotes.
pub fn html_to_text(html: &str) -> String {
    html2text::config::plain_no_decorate()
        .string_from_read(html.as_bytes(), TEXT_WIDTH)
        .unwrap_or_default()
}

/// Whether an `Authentication-Results`, `Received-SPF` or provider verdict says `pass`.
pub fn says_pass(verdict: &str) -> bool {
    let verdict = verdict.to_ascii_lowercase();
    verdict.trim_start().starts_with("pass")
        || verdict.contains("spf=pass")
        || verdict.contains("dkim=pass")
        || verdict.contains(": pass")
}
