//! Replies → Bot API calls: `{api_base}/bot{{secret:bot_token}}/<method>`.
//!
//! - text → `sendMessage` (buttons/list → an inline keyboard; `reply_to` → `reply_parameters`);
//! - one media part → `sendPhoto`, `sendDocument`, `sendVideo`, `sendAudio`, `sendVoice`,
//!   `sendSticker` (by `file_id` or URL; the text becomes the caption);
//! - a location → `sendLocation`, a contact card → `sendContact`;
//! - a reaction → `setMessageReaction` (no emoji removes it).
//!
//! `options`:
//! - `answer_callback_query=<callback_query.id>` → `answerCallbackQuery` (the text, if
//!   any, is shown to the user as a notification) instead of a message;
//! - `edit_message_id=<message_id>` → `editMessageText` of that message with the text
//!   (and keyboard) instead of a new message;
//! - `parse_mode=HTML|MarkdownV2`, `disable_notification=true`, `message_thread_id=<id>`
//!   are passed through.

use omnigate_sdk::{InteractiveStyle, MediaKind, OutboundMessage, Part, SendError};
use serde_json::{Value, json};

/// The option that answers a callback query.
pub const ANSWER_CALLBACK_QUERY: &str = "answer_callback_query";
/// The option that edits an earlier message.
pub const EDIT_MESSAGE_ID: &str = "edit_message_id";

/// The value of option `name`, if given.
pub fn option<'a>(message: &'a OutboundMessage, name: &str) -> Option<&'a str> {
    message
        .options
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// The Bot API method and its JSON parameters for `message`.
pub fn to_call(message: &OutboundMessage) -> Result<(&'static str, Value), SendError> {
    let invalid = |why: &str| Err(SendError::Invalid(why.to_owned()));
    if let Some(id) = option(message, ANSWER_CALLBACK_QUERY) {
        let mut params = json!({"callback_query_id": id});
        if let Some(text) = &message.text {
            params["text"] = json!(text);
        }
        return Ok(("answerCallbackQuery", params));
    }
    let chat_id = chat_id(&message.recipient)?;
    if message.template.is_some() {
        return invalid("Telegram has no message templates");
    }
    if message.parts.len() > 1 {
        return invalid(
            "Telegram sends one media, location or contact part per message; send them one by one",
        );
    }
    let text = match (&message.text, &message.interactive) {
        (Some(t), Some(i)) if !i.body.is_empty() && *t != i.body => {
            Some(format!("{t}\n\n{}", i.body))
        }
        (Some(t), _) => Some(t.clone()),
        (None, Some(i)) => Some(i.body.clone()),
        (None, None) => None,
    };

    if let Some(reaction) = &message.reaction {
        let reaction_list: Vec<Value> = reaction
            .emoji
            .iter()
            .map(|e| json!({"type": "emoji", "emoji": e}))
            .collect();
        let message_id = message_id(&reaction.message_id)?;
        return Ok((
            "setMessageReaction",
            json!({"chat_id": chat_id, "message_id": message_id, "reaction": reaction_list}),
        ));
    }
    if let Some(id) = option(message, EDIT_MESSAGE_ID) {
        let Some(text) = text else {
            return invalid("editing a message needs the new text");
        };
        let mut params = json!({"chat_id": chat_id, "message_id": message_id(id)?, "text": text});
        add_common(&mut params, message)?;
        return Ok(("editMessageText", params));
    }

    let (method, mut params) = match message.parts.first() {
        None => {
            let Some(text) = text else {
                return invalid("an empty message");
            };
            ("sendMessage", json!({"chat_id": chat_id, "text": text}))
        }
        Some(Part::Media(media)) => {
            let (method, field) = match media.kind {
                MediaKind::Image => ("sendPhoto", "photo"),
                MediaKind::Document => ("sendDocument", "document"),
                MediaKind::Video => ("sendVideo", "video"),
                MediaKind::Audio => ("sendAudio", "audio"),
                MediaKind::Voice => ("sendVoice", "voice"),
                MediaKind::Sticker => ("sendSticker", "sticker"),
            };
            // A file_id or an HTTP URL: Telegram accepts both in the same field.
            let Some(file) = media.id.as_ref().or(media.url.as_ref()) else {
                return invalid("media without id or url");
            };
            let mut params = json!({"chat_id": chat_id, field: file});
            if let Some(caption) = media.caption.as_ref().or(text.as_ref()) {
                if media.kind == MediaKind::Sticker {
                    return invalid("Telegram stickers have no caption");
                }
                params["caption"] = json!(caption);
            }
            (method, params)
        }
        Some(Part::Location(l)) => (
            "sendLocation",
            json!({"chat_id": chat_id, "latitude": l.latitude, "longitude": l.longitude}),
        ),
        Some(Part::Contact(c)) => {
            let Some(phone) = c.phones.first() else {
                return invalid("a contact card without a phone number");
            };
            (
                "sendContact",
                json!({"chat_id": chat_id, "phone_number": phone, "first_name": c.name}),
            )
        }
        Some(Part::Unsupported(u)) => {
            return Err(SendError::Invalid(format!(
                "cannot send unsupported part {:?}",
                u.provider_type
            )));
        }
    };
    if let Some(reply_to) = &message.reply_to {
        params["reply_parameters"] = json!({"message_id": message_id(reply_to)?});
    }
    add_common(&mut params, message)?;
    Ok((method, params))
}

/// Inline keyboard and pass-through options.
fn add_common(params: &mut Value, message: &OutboundMessage) -> Result<(), SendError> {
    if let Some(interactive) = &message.interactive {
        let button = |c: &omnigate_sdk::Choice| json!({"text": c.title, "callback_data": c.id});
        let rows: Vec<Value> = match interactive.style {
            // Up to three short buttons side by side, like reply buttons elsewhere.
            InteractiveStyle::Buttons if interactive.choices.len() <= 3 => {
                vec![Value::Array(
                    interactive.choices.iter().map(button).collect(),
                )]
            }
            _ => interactive
                .choices
                .iter()
                .map(|c| json!([button(c)]))
                .collect(),
        };
        if interactive.choices.iter().any(|c| c.id.len() > 64) {
            return Err(SendError::Invalid(
                "Telegram callback data is at most 64 bytes".into(),
            ));
        }
        params["reply_markup"] = json!({"inline_keyboard": rows});
    }
    if let Some(mode) = option(message, "parse_mode") {
        params["parse_mode"] = json!(mode);
    }
    if option(message, "disable_notification") == Some("true") {
        params["disable_notification"] = json!(true);
    }
    if let Some(thread) = option(message, "message_thread_id") {
        params["message_thread_id"] = json!(message_id(thread)?);
    }
    Ok(())
}

fn chat_id(recipient: &str) -> Result<Value, SendError> {
    let recipient = recipient.trim();
    if let Ok(id) = recipient.parse::<i64>() {
        return Ok(json!(id));
    }
    // `@channelusername` is also a valid chat id for channels.
    if recipient.starts_with('@') && recipient.len() > 1 {
        return Ok(json!(recipient));
    }
    Err(SendError::Invalid(format!(
        "{recipient:?} is not a Telegram chat id"
    )))
}

fn message_id(id: &str) -> Result<i64, SendError> {
    id.trim()
        .parse()
        .map_err(|_| SendError::Invalid(format!("{id:?} is not a Telegram message_id")))
}
