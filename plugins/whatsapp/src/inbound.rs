//! WhatsApp Cloud API webhook notifications → normalized events.
//!
//! One POST can carry several entries, changes, messages and statuses: every one becomes
//! an event, in Meta's order, with `raw` set to its own JSON. What the plugin does not
//! understand becomes an inbound message with an `unsupported` part, never an error (Meta
//! retries a failed delivery for days) and never dropped.

use omnigate_meta::seconds_to_millis;
use omnigate_sdk::{
    ContactCard, DeliveryStatus, Direction, Edit as SdkEdit, EventBody, Handle, HandleKind,
    InboundEvent, InteractiveKind, InteractiveReply, Location, Media, MediaKind, Message, Pair,
    Part, Party, ProviderError, Reaction, Referral, ReferralSource, StatusUpdate, Unsupported,
    host,
};

use crate::payload::{
    Contact, Content, MessagesValue, Notification, WaError, WaMedia, WaMessage, WaReferral,
    WaStatus,
};

/// The `object` of WhatsApp Business Account notifications.
pub const OBJECT: &str = "whatsapp_business_account";

/// Every event in a notification, in order.
pub fn events(notification: Notification) -> Vec<InboundEvent> {
    if notification.object != OBJECT {
        host::warn(&format!(
            "ignoring notification for object {:?}, expected {OBJECT:?}",
            notification.object
        ));
        return Vec::new();
    }
    let mut events = Vec::new();
    for entry in notification.entry {
        for change in entry.changes {
            if change.field != "messages" {
                // Account-level fields (template reviews, quality ratings) concern no
                // customer: acknowledged and logged, not conversation events.
                host::info(&format!(
                    "ignoring `{}` change for account {}",
                    change.field, entry.id
                ));
                continue;
            }
            match serde_json::from_value::<MessagesValue>(change.value) {
                Ok(value) => events.extend(value_events(value)),
                Err(e) => host::warn(&format!("unreadable `messages` change: {e}")),
            }
        }
    }
    events
}

fn value_events(value: MessagesValue) -> Vec<InboundEvent> {
    let account = Some(value.metadata.phone_number_id.clone()).filter(|a| !a.is_empty());
    if value.messages.is_empty() && value.statuses.is_empty() {
        for error in &value.errors {
            host::warn(&format!(
                "WhatsApp reported error {} ({}) without a message",
                error.code, error.title
            ));
        }
    }
    let mut events = Vec::new();
    for raw in value.messages {
        let text = raw.to_string();
        let mut event = match serde_json::from_value::<WaMessage>(raw.clone()) {
            Ok(message) => message_event(message, &value.contacts, &value.errors),
            Err(e) => unreadable(&raw, &value.contacts, &format!("unreadable message: {e}")),
        };
        event.account.clone_from(&account);
        event.raw = Some(text);
        events.push(event);
    }
    for raw in value.statuses {
        let text = raw.to_string();
        let mut event = match serde_json::from_value::<WaStatus>(raw.clone()) {
            Ok(status) => status_event(status),
            Err(e) => unreadable(&raw, &value.contacts, &format!("unreadable status: {e}")),
        };
        event.account.clone_from(&account);
        event.raw = Some(text);
        events.push(event);
    }
    events
}

/// The customer: `wa_id` (their phone number, which WhatsApp verified) and profile name.
fn party(wa_id: Option<&str>, contacts: &[Contact]) -> Party {
    let profile = contacts
        .iter()
        .find(|c| c.wa_id.is_some() && c.wa_id.as_deref() == wa_id)
        .or_else(|| contacts.first());
    let id = wa_id
        .map(str::to_owned)
        .or_else(|| profile.and_then(|p| p.wa_id.clone().or_else(|| p.user_id.clone())))
        .unwrap_or_default();
    let handles = wa_id
        .or_else(|| profile.and_then(|p| p.wa_id.as_deref()))
        .map(|phone| Handle {
            kind: HandleKind::Phone,
            value: phone.to_owned(),
            verified: true,
        })
        .into_iter()
        .collect();
    Party {
        id,
        name: profile.and_then(|p| p.profile.name.clone()),
        handles,
    }
}

fn message_event(
    message: WaMessage,
    contacts: &[Contact],
    value_errors: &[WaError],
) -> InboundEvent {
    let mut contact = party(message.from.as_deref(), contacts);
    let occurred_at = seconds_to_millis(&message.timestamp);
    let event = |external_id: String, contact: Party, body: EventBody| InboundEvent {
        external_id,
        occurred_at,
        account: None,
        contact,
        body,
        raw: None,
    };

    if let Some(reaction) = message
        .reaction
        .filter(|_| message.content.kind == "reaction")
    {
        let emoji = reaction.emoji.filter(|e| !e.is_empty());
        // Each reaction (and its removal) is a new message with its own wamid; the emoji
        // and time make the key readable and distinct even if Meta reused an id.
        let external_id = format!(
            "{}:reaction:{}:{}",
            message.id,
            emoji.as_deref().unwrap_or("removed"),
            message.timestamp
        );
        let body = EventBody::Reaction(Reaction {
            message_id: reaction.message_id,
            emoji,
        });
        return event(external_id, contact, body);
    }
    if let Some(edit) = message.edit.filter(|_| message.content.kind == "edit") {
        let (text, parts) = content(&edit.message, &[]);
        let body = EventBody::Edit(SdkEdit {
            message_id: edit.original_message_id,
            text,
            parts,
        });
        return event(message.id, contact, body);
    }
    if let Some(revoke) = message.revoke.filter(|_| message.content.kind == "revoke") {
        return event(
            message.id,
            contact,
            EventBody::Deletion(revoke.original_message_id),
        );
    }

    let errors: Vec<WaError> = message.errors.iter().chain(value_errors).cloned().collect();
    let mut text = None;
    let mut parts = Vec::new();
    let mut interactive_reply = None;
    match message.content.kind.as_str() {
        "system" => {
            let system = message.system.unwrap_or_default();
            if let Some(new_wa_id) = system
                .wa_id
                .clone()
                .filter(|_| system.kind == "user_changed_number")
            {
                // The same person on a new number: both numbers are theirs, verified.
                contact.handles.push(Handle {
                    kind: HandleKind::Phone,
                    value: new_wa_id,
                    verified: true,
                });
            }
            text = system.body;
            parts.push(unsupported(
                &format!("system.{}", system.kind),
                "a WhatsApp system notice; details in raw",
            ));
        }
        "order" => {
            let order = message.order.unwrap_or_default();
            text = order.text.filter(|t| !t.is_empty());
            parts.push(unsupported(
                "order",
                &format!(
                    "catalog order of {} item(s) from catalog {}; details in raw",
                    order.product_items.len(),
                    order.catalog_id.as_deref().unwrap_or("?")
                ),
            ));
        }
        "interactive" => match message.content.interactive.as_ref() {
            Some(i) if i.kind == "button_reply" || i.kind == "list_reply" => {
                let (kind, choice) = if i.kind == "button_reply" {
                    (InteractiveKind::Button, i.button_reply.as_ref())
                } else {
                    (InteractiveKind::List, i.list_reply.as_ref())
                };
                let choice = choice.map(|c| (c.id.clone(), c.title.clone()));
                match choice {
                    Some((id, title)) => {
                        interactive_reply = Some(InteractiveReply { kind, id, title })
                    }
                    None => parts.push(unsupported(
                        &format!("interactive.{}", i.kind),
                        "reply without its choice",
                    )),
                }
            }
            Some(i) => parts.push(unsupported(
                &format!("interactive.{}", i.kind),
                "interactive reply of a kind the plugin does not map (e.g. a flow); details in raw",
            )),
            None => parts.push(unsupported(
                "interactive",
                &describe_errors(&errors, "interactive message without content"),
            )),
        },
        "button" => {
            let button = message.content.button.as_ref();
            let title = button.and_then(|b| b.text.clone());
            let id = button
                .and_then(|b| b.payload.clone())
                .or_else(|| title.clone());
            match id {
                Some(id) => {
                    interactive_reply = Some(InteractiveReply {
                        kind: InteractiveKind::Button,
                        id,
                        title,
                    })
                }
                None => parts.push(unsupported(
                    "button",
                    "template button reply without payload",
                )),
            }
        }
        "unsupported" | "unknown" => parts.push(unsupported(
            &message.content.kind,
            &describe_errors(
                &errors,
                "WhatsApp could not deliver this content to the API",
            ),
        )),
        _ => {
            let (t, p) = content(&message.content, &errors);
            text = t;
            parts = p;
        }
    }
    let context = message.context.unwrap_or_default();
    let body = EventBody::Message(Message {
        direction: Direction::Inbound,
        text,
        parts,
        reply_to: context.id,
        forwarded: context.forwarded || context.frequently_forwarded,
        interactive_reply,
        referral: message.referral.map(referral),
    });
    event(message.id, contact, body)
}

/// Text and parts of a content (a message's or an edit's).
fn content(content: &Content, errors: &[WaError]) -> (Option<String>, Vec<Part>) {
    let media = |kind: MediaKind, m: &WaMedia| {
        Part::Media(Media {
            kind,
            id: m.id.clone(),
            url: m.url.clone(),
            mime_type: m.mime_type.clone(),
            caption: m.caption.clone(),
            filename: m.filename.clone(),
            size: None,
            sha256: m.sha256.clone(),
        })
    };
    let part = match content.kind.as_str() {
        "text" => {
            if let Some(text) = &content.text {
                return (Some(text.body.clone()), Vec::new());
            }
            None
        }
        "image" => content.image.as_ref().map(|m| media(MediaKind::Image, m)),
        "video" => content.video.as_ref().map(|m| media(MediaKind::Video, m)),
        "document" => content
            .document
            .as_ref()
            .map(|m| media(MediaKind::Document, m)),
        "sticker" => content
            .sticker
            .as_ref()
            .map(|m| media(MediaKind::Sticker, m)),
        "audio" => content.audio.as_ref().map(|m| {
            media(
                if m.voice {
                    MediaKind::Voice
                } else {
                    MediaKind::Audio
                },
                m,
            )
        }),
        "location" => content.location.as_ref().map(|l| {
            Part::Location(Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: l.name.clone(),
                address: l.address.clone(),
                url: l.url.clone(),
            })
        }),
        "contacts" => {
            if let Some(cards) = &content.contacts {
                return (None, cards.iter().map(card).collect());
            }
            None
        }
        _ => None,
    };
    let part = part.unwrap_or_else(|| {
        unsupported(
            &content.kind,
            &describe_errors(
                errors,
                "message type the plugin does not map; details in raw",
            ),
        )
    });
    (None, vec![part])
}

fn card(card: &crate::payload::Card) -> Part {
    let name = card.name.formatted_name.clone().unwrap_or_else(|| {
        [
            card.name.first_name.as_deref(),
            card.name.last_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    });
    Part::Contact(ContactCard {
        name,
        phones: card.phones.iter().filter_map(|p| p.phone.clone()).collect(),
        emails: card.emails.iter().filter_map(|e| e.email.clone()).collect(),
        user_id: card.phones.iter().find_map(|p| p.wa_id.clone()),
    })
}

/// A click-to-WhatsApp ad (or boosted post) as the event's referral.
fn referral(r: WaReferral) -> Referral {
    let source = match r.source_type.as_deref() {
        Some("ad") => ReferralSource::Ad,
        Some("post") => ReferralSource::Post,
        _ => ReferralSource::Other,
    };
    let click_ids = r
        .ctwa_clid
        .filter(|c| !c.is_empty())
        .map(|value| Pair {
            name: "ctwa_clid".into(),
            value,
        })
        .into_iter()
        .collect();
    Referral {
        ad_id: r.source_id.clone().filter(|_| source == ReferralSource::Ad),
        source,
        campaign: None,
        click_ids,
        utm: Vec::new(),
        url: r.source_url,
        referrer: None,
        ref_payload: None,
        headline: r.headline,
        body: r.body,
        media_url: r.image_url.or(r.video_url),
    }
}

fn status_event(status: WaStatus) -> InboundEvent {
    let delivery = match status.status.as_str() {
        "sent" => Some(DeliveryStatus::Sent),
        "delivered" => Some(DeliveryStatus::Delivered),
        "read" => Some(DeliveryStatus::Read),
        "failed" => Some(DeliveryStatus::Failed),
        _ => None,
    };
    let contact = party(status.recipient_id.as_deref(), &[]);
    let external_id = format!("{}:{}", status.id, status.status);
    let body = match delivery {
        Some(delivery) => EventBody::Status(StatusUpdate {
            message_id: status.id,
            status: delivery,
            error: status.errors.first().map(|e| ProviderError {
                code: e.code.to_string(),
                title: e.title.clone(),
                detail: e
                    .error_data
                    .as_ref()
                    .and_then(|d| d.details.clone())
                    .or_else(|| e.message.clone()),
            }),
        }),
        // A status the contract has no word for (e.g. `played` for voice messages).
        None => unsupported_message(
            &format!("status.{}", status.status),
            "status the contract does not define; details in raw",
        ),
    };
    InboundEvent {
        external_id,
        occurred_at: seconds_to_millis(&status.timestamp),
        account: None,
        contact,
        body,
        raw: None,
    }
}

/// An event for a message or status whose JSON does not fit the expected shape.
fn unreadable(raw: &serde_json::Value, contacts: &[Contact], reason: &str) -> InboundEvent {
    let field = |name: &str| raw.get(name).and_then(serde_json::Value::as_str);
    let id = field("id").unwrap_or("unknown");
    let kind = field("type").or(field("status")).unwrap_or("unknown");
    let wa_id = field("from").or(field("recipient_id"));
    host::warn(&format!("{reason} ({id})"));
    InboundEvent {
        external_id: format!("{id}:{kind}"),
        occurred_at: field("timestamp").and_then(seconds_to_millis),
        account: None,
        contact: party(wa_id, contacts),
        body: unsupported_message(kind, reason),
        raw: None,
    }
}

fn unsupported(provider_type: &str, reason: &str) -> Part {
    Part::Unsupported(Unsupported {
        provider_type: provider_type.to_owned(),
        reason: reason.to_owned(),
    })
}

fn unsupported_message(provider_type: &str, reason: &str) -> EventBody {
    EventBody::Message(Message {
        direction: Direction::Inbound,
        text: None,
        parts: vec![unsupported(provider_type, reason)],
        reply_to: None,
        forwarded: false,
        interactive_reply: None,
        referral: None,
    })
}

fn describe_errors(errors: &[WaError], fallback: &str) -> String {
    match errors.first() {
        Some(e) => {
            let details = e.error_data.as_ref().and_then(|d| d.details.as_deref());
            match details {
                Some(d) => format!("{} ({}): {d}", e.title, e.code),
                None => format!("{} ({})", e.title, e.code),
            }
        }
        None => fallback.to_owned(),
    }
}
