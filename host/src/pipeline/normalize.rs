//! Stage 1: a plugin's inbound event → the normalized shape (pure, no I/O).

use std::sync::Arc;

use jiff::Timestamp;

use super::identity::Normalizer;
use crate::event::{
    ContactCard, DeliveryStatus, Direction, EventType, HistoryEntry, InteractiveKind,
    InteractiveReply, Location, Media, Message, Part, ProviderError, ReactionInfo, Referral,
    ReferralSource, StatusInfo,
};
use crate::runtime::types::{self as wit, EventBody};
use crate::store::Person;

/// One inbound event in normalized form, before the store has seen it.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// The id the published event will have.
    pub event_id: String,
    /// Event type.
    pub kind: EventType,
    /// Provider id (dedupe key).
    pub external_id: String,
    /// When it happened.
    pub at: Timestamp,
    /// Business account.
    pub account: Option<String>,
    /// Who.
    pub person: Person,
    /// Message content.
    pub message: Option<Arc<Message>>,
    /// Status.
    pub status: Option<StatusInfo>,
    /// Reaction.
    pub reaction: Option<ReactionInfo>,
    /// Edited/deleted message id.
    pub target_message_id: Option<String>,
    /// Referral.
    pub referral: Option<Arc<Referral>>,
    /// The plugin's raw JSON for this event.
    pub raw: Option<String>,
}

/// Why a plugin's event cannot be accepted (a plugin bug: the provider gets a 5xx).
#[derive(Debug, thiserror::Error)]
#[error("plugin produced an invalid event: {0}")]
pub struct InvalidEvent(pub String);

/// Normalize `event` received on `channel` (of `kind`) at `received_at`.
pub fn normalize(
    channel: &str,
    kind: &str,
    normalizer: &Normalizer,
    event: wit::InboundEvent,
    received_at: Timestamp,
) -> Result<Normalized, InvalidEvent> {
    if event.external_id.trim().is_empty() {
        return Err(InvalidEvent("empty external-id".into()));
    }
    if event.contact.id.trim().is_empty() {
        return Err(InvalidEvent(format!(
            "event {}: empty contact id",
            event.external_id
        )));
    }
    let at = event
        .occurred_at
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(received_at);
    let person = Person {
        user: Normalizer::channel_user(channel, &event.contact.id),
        name: event.contact.name.filter(|name| !name.trim().is_empty()),
        handles: event
            .contact
            .handles
            .iter()
            .filter_map(|handle| normalizer.handle(channel, handle))
            .collect(),
    };
    let mut normalized = Normalized {
        event_id: crate::ids::event(),
        kind: EventType::MessageReceived,
        external_id: event.external_id,
        at,
        account: event.account,
        person,
        message: None,
        status: None,
        reaction: None,
        target_message_id: None,
        referral: None,
        raw: event.raw,
    };
    match event.body {
        EventBody::Message(mut message) => {
            normalized.referral = message
                .referral
                .take()
                .map(|r| referral(r, channel, kind, at));
            normalized.kind = match message.direction {
                wit::Direction::Inbound => EventType::MessageReceived,
                wit::Direction::Outbound => EventType::MessageSent,
            };
            normalized.message = Some(Arc::new(self::message(message)));
        }
        EventBody::Status(status) => {
            normalized.kind = EventType::MessageStatus;
            normalized.status = Some(StatusInfo {
                message_id: status.message_id,
                status: match status.status {
                    wit::DeliveryStatus::Sent => DeliveryStatus::Sent,
                    wit::DeliveryStatus::Delivered => DeliveryStatus::Delivered,
                    wit::DeliveryStatus::Read => DeliveryStatus::Read,
                    wit::DeliveryStatus::Failed => DeliveryStatus::Failed,
                },
                error: status.error.map(provider_error),
            });
        }
        EventBody::Reaction(reaction) => {
            normalized.kind = EventType::MessageReaction;
            normalized.reaction = Some(ReactionInfo {
                message_id: reaction.message_id,
                emoji: reaction.emoji,
            });
        }
        EventBody::Edit(edit) => {
            normalized.kind = EventType::MessageEdited;
            normalized.target_message_id = Some(edit.message_id);
            normalized.message = Some(Arc::new(Message {
                direction: Direction::Inbound,
                text: edit.text,
                parts: edit.parts.into_iter().map(part).collect(),
                reply_to: None,
                forwarded: false,
                interactive_reply: None,
            }));
        }
        EventBody::Deletion(message_id) => {
            normalized.kind = EventType::MessageDeleted;
            normalized.target_message_id = Some(message_id);
        }
        EventBody::Referral(value) => {
            normalized.kind = EventType::ConversationReferred;
            normalized.referral = Some(referral(value, channel, kind, at));
        }
    }
    Ok(normalized)
}

impl Normalized {
    /// The history entry this event adds, for messages.
    pub fn history_entry(&self, channel: &str) -> Option<HistoryEntry> {
        let message = self.message.as_ref().filter(|_| {
            matches!(
                self.kind,
                EventType::MessageReceived | EventType::MessageSent
            )
        })?;
        Some(history_entry(
            &self.event_id,
            self.at,
            channel,
            Some(&self.external_id),
            message,
        ))
    }
}

/// A history entry for `message`.
pub fn history_entry(
    event_id: &str,
    at: Timestamp,
    channel: &str,
    external_id: Option<&str>,
    message: &Message,
) -> HistoryEntry {
    HistoryEntry {
        event_id: event_id.to_owned(),
        at,
        channel: channel.to_owned(),
        direction: message.direction,
        external_id: external_id.map(str::to_owned),
        text: message.text.clone(),
        parts: message.parts.iter().map(part_name).collect(),
    }
}

fn message(message: wit::Message) -> Message {
    Message {
        direction: match message.direction {
            wit::Direction::Inbound => Direction::Inbound,
            wit::Direction::Outbound => Direction::Outbound,
        },
        text: message.text,
        parts: message.parts.into_iter().map(part).collect(),
        reply_to: message.reply_to,
        forwarded: message.forwarded,
        interactive_reply: message.interactive_reply.map(|reply| InteractiveReply {
            kind: match reply.kind {
                wit::InteractiveKind::Button => InteractiveKind::Button,
                wit::InteractiveKind::List => InteractiveKind::List,
                wit::InteractiveKind::Postback => InteractiveKind::Postback,
                wit::InteractiveKind::Callback => InteractiveKind::Callback,
            },
            id: reply.id,
            title: reply.title,
        }),
    }
}

/// A contract part → an event part.
pub fn part(part: wit::Part) -> Part {
    match part {
        wit::Part::Media(media) => {
            let kind = media.kind;
            let media = Media {
                id: media.id,
                url: media.url,
                mime_type: media.mime_type,
                caption: media.caption,
                filename: media.filename,
                size: media.size,
                sha256: media.sha256,
            };
            match kind {
                wit::MediaKind::Image => Part::Image { media },
                wit::MediaKind::Video => Part::Video { media },
                wit::MediaKind::Audio => Part::Audio { media },
                wit::MediaKind::Voice => Part::Voice { media },
                wit::MediaKind::Document => Part::Document { media },
                wit::MediaKind::Sticker => Part::Sticker { media },
            }
        }
        wit::Part::Location(location) => Part::Location {
            location: Location {
                latitude: location.latitude,
                longitude: location.longitude,
                name: location.name,
                address: location.address,
                url: location.url,
            },
        },
        wit::Part::Contact(card) => Part::Contact {
            contact: ContactCard {
                name: card.name,
                phones: card.phones,
                emails: card.emails,
                user_id: card.user_id,
            },
        },
        wit::Part::Unsupported(unsupported) => Part::Unsupported {
            provider_type: unsupported.provider_type,
            reason: unsupported.reason,
        },
    }
}

/// The `type` name of a part.
pub fn part_name(part: &Part) -> String {
    match part {
        Part::Image { .. } => "image",
        Part::Video { .. } => "video",
        Part::Audio { .. } => "audio",
        Part::Voice { .. } => "voice",
        Part::Document { .. } => "document",
        Part::Sticker { .. } => "sticker",
        Part::Location { .. } => "location",
        Part::Contact { .. } => "contact",
        Part::Unsupported { .. } => "unsupported",
    }
    .to_owned()
}

fn provider_error(error: wit::ProviderError) -> ProviderError {
    ProviderError {
        code: error.code,
        title: error.title,
        detail: error.detail,
    }
}

fn referral(referral: wit::Referral, channel: &str, kind: &str, at: Timestamp) -> Arc<Referral> {
    let pairs = |pairs: Vec<wit::Pair>| pairs.into_iter().map(|p| (p.name, p.value)).collect();
    Arc::new(Referral {
        source: match referral.source {
            wit::ReferralSource::Ad => ReferralSource::Ad,
            wit::ReferralSource::Post => ReferralSource::Post,
            wit::ReferralSource::Link => ReferralSource::Link,
            wit::ReferralSource::Qr => ReferralSource::Qr,
            wit::ReferralSource::Other => ReferralSource::Other,
        },
        channel: channel.to_owned(),
        channel_kind: Some(kind.to_owned()),
        at,
        ad_id: referral.ad_id,
        campaign: referral.campaign,
        click_id: pairs(referral.click_ids),
        utm: pairs(referral.utm),
        url: referral.url,
        referrer: referral.referrer,
        ref_payload: referral.ref_payload,
        headline: referral.headline,
        body: referral.body,
        media_url: referral.media_url,
    })
}
