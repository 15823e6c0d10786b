//! Telegram `Update`s → normalized events.
//!
//! One webhook call is one update; its `update_id` is the event's `external_id` (Telegram
//! resends an update until it gets a 2xx, always with the same id). The customer
//! (`party.id`) is the **chat id**: replies go to a chat, and for a private chat it is
//! the user's id. In groups the party is the group. An update the plugin does not
//! understand becomes an inbound message with an `unsupported` part, never an error:
//! Telegram would otherwise hold back every later update.

use omnigate_sdk::{
    ContactCard, Direction, Edit, EventBody, Handle, HandleKind, InboundEvent, InteractiveKind,
    InteractiveReply, Location, Media, MediaKind, Message, Part, Party, Reaction, Unsupported,
    link_referral,
};
use serde_json::Value;

use crate::payload::{
    CallbackQuery, Chat, ChatMemberUpdated, File, MessageReaction, TgMessage, Update, User,
};

/// The event for one update; `raw` is the update's JSON text.
pub fn event(update: Update, raw: &Value, account: Option<String>) -> InboundEvent {
    let external_id = update.update_id.to_string();
    let (occurred_at, contact, body) = if let Some(m) = update.message {
        let mut contact = chat_party(&m.chat, m.from.as_ref());
        if let Some(phone) = own_phone(&m) {
            contact.handles.push(phone);
        }
        (secs(m.date), contact, message_body(&m, Direction::Inbound))
    } else if let Some(m) = update.channel_post {
        (
            secs(m.date),
            chat_party(&m.chat, None),
            message_body(&m, Direction::Inbound),
        )
    } else if let Some(m) = update.edited_message.or(update.edited_channel_post) {
        (
            secs(m.edit_date.unwrap_or(m.date)),
            chat_party(&m.chat, m.from.as_ref()),
            edit_body(&m),
        )
    } else if let Some(q) = update.callback_query {
        callback(q)
    } else if let Some(c) = update.my_chat_member {
        membership(c)
    } else if let Some(r) = update.message_reaction {
        reaction(r)
    } else {
        unknown(raw)
    };
    InboundEvent {
        external_id,
        occurred_at,
        account,
        contact,
        body,
        raw: Some(raw.to_string()),
    }
}

/// A contact the user shared of themselves (the `request_contact` keyboard button):
/// Telegram only lets a user share their own number with their own `user_id`, so it is a
/// verified phone.
fn own_phone(m: &TgMessage) -> Option<Handle> {
    let contact = m.contact.as_ref()?;
    let from = m.from.as_ref()?;
    (contact.user_id == Some(from.id) && m.chat.kind == "private").then(|| Handle {
        kind: HandleKind::Phone,
        value: contact.phone_number.clone(),
        verified: true,
    })
}

fn secs(seconds: i64) -> Option<i64> {
    seconds.checked_mul(1000).filter(|ms| *ms > 0)
}

/// The chat as the party; in a private chat the chat is the user, so their name and
/// `@username` describe it.
fn chat_party(chat: &Chat, from: Option<&User>) -> Party {
    let private = chat.kind == "private";
    let name = if private {
        let first = chat
            .first_name
            .clone()
            .or_else(|| from.map(|u| u.first_name.clone()));
        let last = chat
            .last_name
            .clone()
            .or_else(|| from.and_then(|u| u.last_name.clone()));
        match (first, last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (f, l) => f.or(l),
        }
    } else {
        chat.title.clone()
    };
    let username = chat
        .username
        .clone()
        .or_else(|| from.filter(|_| private).and_then(|u| u.username.clone()));
    Party {
        id: chat.id.to_string(),
        name,
        handles: username
            // Not verified: a username can be given up and taken by someone else.
            .map(|u| Handle {
                kind: HandleKind::ChannelUser,
                value: format!("@{u}"),
                verified: false,
            })
            .into_iter()
            .collect(),
    }
}

fn message_body(m: &TgMessage, direction: Direction) -> EventBody {
    let (text, parts) = content(m);
    // `/start <payload>`: the t.me/<bot>?start=<payload> deep link the user came from.
    let referral = m
        .text
        .as_deref()
        .and_then(|t| t.strip_prefix("/start "))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(link_referral);
    EventBody::Message(Message {
        direction,
        text,
        parts,
        reply_to: m
            .reply_to_message
            .as_ref()
            .map(|r| r.message_id.to_string()),
        forwarded: m.forward_origin.is_some() || m.forward_date.is_some(),
        interactive_reply: None,
        referral,
    })
}

fn edit_body(m: &TgMessage) -> EventBody {
    let (text, parts) = content(m);
    EventBody::Edit(Edit {
        message_id: m.message_id.to_string(),
        text,
        parts,
    })
}

/// Text and parts; the caption of media is on the part.
fn content(m: &TgMessage) -> (Option<String>, Vec<Part>) {
    let media = |kind: MediaKind, f: &File| {
        Part::Media(Media {
            kind,
            id: Some(f.file_id.clone()),
            url: None,
            mime_type: f.mime_type.clone(),
            caption: m.caption.clone(),
            filename: f.file_name.clone(),
            size: f.file_size,
            sha256: None,
        })
    };
    let mut parts = Vec::new();
    // The largest size of a photo is the last one.
    if let Some(photo) = m.photo.last() {
        parts.push(media(MediaKind::Image, photo));
    } else if let Some(f) = &m.animation {
        parts.push(media(MediaKind::Video, f));
    } else if let Some(f) = &m.document {
        parts.push(media(MediaKind::Document, f));
    } else if let Some(f) = &m.voice {
        parts.push(media(MediaKind::Voice, f));
    } else if let Some(f) = m.video.as_ref().or(m.video_note.as_ref()) {
        parts.push(media(MediaKind::Video, f));
    } else if let Some(f) = &m.audio {
        parts.push(media(MediaKind::Audio, f));
    } else if let Some(f) = &m.sticker {
        let mut part = media(MediaKind::Sticker, f);
        if let Part::Media(sticker) = &mut part {
            // A sticker has no caption; its emoji says what it means.
            sticker.caption = sticker.caption.take().or_else(|| f.emoji.clone());
        }
        parts.push(part);
    } else if let Some(v) = &m.venue {
        parts.push(Part::Location(Location {
            latitude: v.location.latitude,
            longitude: v.location.longitude,
            name: v.title.clone(),
            address: v.address.clone(),
            url: None,
        }));
    } else if let Some(l) = &m.location {
        parts.push(Part::Location(Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: None,
            address: None,
            url: None,
        }));
    } else if let Some(c) = &m.contact {
        let name = match &c.last_name {
            Some(last) => format!("{} {last}", c.first_name),
            None => c.first_name.clone(),
        };
        parts.push(Part::Contact(ContactCard {
            name,
            phones: vec![c.phone_number.clone()],
            emails: Vec::new(),
            user_id: c.user_id.map(|id| id.to_string()),
        }));
    }
    if parts.is_empty() && m.text.is_none() {
        // A poll, dice, game, invoice, service message…: kept whole in raw.
        parts.push(unsupported(
            "message",
            "a message kind the plugin does not map; details in raw",
        ));
    }
    (m.text.clone(), parts)
}

fn callback(q: CallbackQuery) -> (Option<i64>, Party, EventBody) {
    let message = q.message.as_ref();
    let data = q.data.clone().unwrap_or_default();
    // The button's label, from the keyboard of the message it was under.
    let title = message
        .and_then(|m| m.reply_markup.as_ref())
        .and_then(|k| {
            k.inline_keyboard
                .iter()
                .flatten()
                .find(|b| b.callback_data.as_deref() == Some(data.as_str()))
        })
        .map(|b| b.text.clone());
    let contact = match message {
        Some(m) => chat_party(&m.chat, Some(&q.from)),
        None => user_party(&q.from),
    };
    let body = EventBody::Message(Message {
        direction: Direction::Inbound,
        text: None,
        parts: Vec::new(),
        reply_to: message.map(|m| m.message_id.to_string()),
        forwarded: false,
        interactive_reply: Some(InteractiveReply {
            kind: InteractiveKind::Callback,
            id: data,
            title,
        }),
        referral: None,
    });
    // A callback query has no date; its message's date is when the keyboard was sent.
    (None, contact, body)
}

fn user_party(user: &User) -> Party {
    let chat = Chat {
        id: user.id,
        kind: "private".into(),
        first_name: Some(user.first_name.clone()),
        last_name: user.last_name.clone(),
        username: user.username.clone(),
        title: None,
    };
    chat_party(&chat, Some(user))
}

fn membership(c: ChatMemberUpdated) -> (Option<i64>, Party, EventBody) {
    let status = &c.new_chat_member.status;
    let reason = match status.as_str() {
        "kicked" if c.chat.kind == "private" => "the user blocked the bot".to_owned(),
        "member" if c.chat.kind == "private" => {
            "the user (un)blocked or started the bot".to_owned()
        }
        other => format!("the bot's membership in this chat is now {other:?}"),
    };
    let body = EventBody::Message(Message {
        direction: Direction::Inbound,
        text: None,
        parts: vec![unsupported(&format!("my_chat_member.{status}"), &reason)],
        reply_to: None,
        forwarded: false,
        interactive_reply: None,
        referral: None,
    });
    (secs(c.date), chat_party(&c.chat, Some(&c.from)), body)
}

fn reaction(r: MessageReaction) -> (Option<i64>, Party, EventBody) {
    let emoji = r.new_reaction.iter().find_map(|t| t.emoji.clone());
    let body = EventBody::Reaction(Reaction {
        message_id: r.message_id.to_string(),
        emoji,
    });
    (secs(r.date), chat_party(&r.chat, r.user.as_ref()), body)
}

/// An update of a kind the plugin does not know: the party is whatever chat or user it
/// names, the kind is its field name.
fn unknown(raw: &Value) -> (Option<i64>, Party, EventBody) {
    let (kind, inner) = raw
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| *k != "update_id"))
        .map_or(("update", &Value::Null), |(k, v)| (k.as_str(), v));
    let id = ["chat", "from", "user"]
        .iter()
        .find_map(|k| inner.get(k)?.get("id")?.as_i64())
        .map(|id| id.to_string())
        .unwrap_or_default();
    let body = EventBody::Message(Message {
        direction: Direction::Inbound,
        text: None,
        parts: vec![unsupported(
            kind,
            "an update kind the plugin does not map; details in raw",
        )],
        reply_to: None,
        forwarded: false,
        interactive_reply: None,
        referral: None,
    });
    let date = inner.get("date").and_then(Value::as_i64).and_then(secs);
    (
        date,
        Party {
            id,
            name: None,
            handles: Vec::new(),
        },
        body,
    )
}

fn unsupported(provider_type: &str, reason: &str) -> Part {
    Part::Unsupported(Unsupported {
        provider_type: provider_type.to_owned(),
        reason: reason.to_owned(),
    })
}
