//! The Telegram Bot API `Update` as serde types: only what the plugin reads. Telegram
//! omits every empty field, so nearly everything is optional; unknown fields are ignored
//! (the event's `raw` keeps them).

use serde::Deserialize;

/// One webhook call carries one `Update`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Update {
    /// Telegram's sequential id: the dedupe key.
    pub update_id: i64,
    /// A new message.
    pub message: Option<TgMessage>,
    /// An edit of a message.
    pub edited_message: Option<TgMessage>,
    /// A new post in a channel the bot is in.
    pub channel_post: Option<TgMessage>,
    /// An edit of a channel post.
    pub edited_channel_post: Option<TgMessage>,
    /// A press on an inline keyboard button.
    pub callback_query: Option<CallbackQuery>,
    /// The bot's own membership changed (a user blocked or unblocked it).
    pub my_chat_member: Option<ChatMemberUpdated>,
    /// A user changed their reaction to a message.
    pub message_reaction: Option<MessageReaction>,
}

/// A message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TgMessage {
    /// Unique in its chat.
    pub message_id: i64,
    /// The sender (absent in channels).
    pub from: Option<User>,
    /// The chat it is in.
    pub chat: Chat,
    /// Unix seconds.
    pub date: i64,
    /// Unix seconds of the last edit.
    pub edit_date: Option<i64>,
    /// Text.
    pub text: Option<String>,
    /// Caption of media.
    pub caption: Option<String>,
    /// Sizes of a photo, smallest first.
    pub photo: Vec<File>,
    /// A file.
    pub document: Option<File>,
    /// A voice note.
    pub voice: Option<File>,
    /// A video.
    pub video: Option<File>,
    /// A round video note.
    pub video_note: Option<File>,
    /// A music file.
    pub audio: Option<File>,
    /// A GIF (Telegram also sends it as `document`).
    pub animation: Option<File>,
    /// A sticker.
    pub sticker: Option<File>,
    /// A location.
    pub location: Option<TgLocation>,
    /// A venue: a location with a name.
    pub venue: Option<Venue>,
    /// A contact.
    pub contact: Option<TgContact>,
    /// The message this one replies to.
    pub reply_to_message: Option<Box<TgMessage>>,
    /// Set when forwarded (Bot API 7.0+).
    pub forward_origin: Option<serde_json::Value>,
    /// Set when forwarded (before Bot API 7.0).
    pub forward_date: Option<i64>,
    /// Buttons under the message (for callback titles).
    pub reply_markup: Option<ReplyMarkup>,
}

/// A Telegram user or bot.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct User {
    /// The user id.
    pub id: i64,
    /// Whether it is a bot.
    pub is_bot: bool,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: Option<String>,
    /// `@username` without the `@`.
    pub username: Option<String>,
}

/// A chat.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Chat {
    /// The chat id: the user id for private chats; negative for groups and channels.
    pub id: i64,
    /// `private`, `group`, `supergroup`, `channel`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Title of a group or channel.
    pub title: Option<String>,
    /// First name (private chats).
    pub first_name: Option<String>,
    /// Last name (private chats).
    pub last_name: Option<String>,
    /// Username.
    pub username: Option<String>,
}

/// A file: photo size, document, voice, video, sticker…
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct File {
    /// For `getFile` and for sending it again.
    pub file_id: String,
    /// File name (documents, audio, video).
    pub file_name: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Size in bytes.
    pub file_size: Option<u64>,
    /// A sticker's emoji.
    pub emoji: Option<String>,
}

/// A location.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TgLocation {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
}

/// A venue.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Venue {
    /// Where.
    pub location: TgLocation,
    /// Name.
    pub title: Option<String>,
    /// Address.
    pub address: Option<String>,
}

/// A shared contact.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TgContact {
    /// Phone number.
    pub phone_number: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: Option<String>,
    /// The contact's Telegram user id, if they use Telegram.
    pub user_id: Option<i64>,
}

/// An inline keyboard.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReplyMarkup {
    /// Rows of buttons.
    pub inline_keyboard: Vec<Vec<InlineButton>>,
}

/// An inline keyboard button.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InlineButton {
    /// Label.
    pub text: String,
    /// Data sent back in the callback query.
    pub callback_data: Option<String>,
}

/// A button press.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CallbackQuery {
    /// Needed to answer it (`answerCallbackQuery`).
    pub id: String,
    /// Who pressed.
    pub from: User,
    /// The message with the button.
    pub message: Option<TgMessage>,
    /// The button's `callback_data`.
    pub data: Option<String>,
}

/// The bot's membership in a chat changed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatMemberUpdated {
    /// The chat.
    pub chat: Chat,
    /// Who changed it.
    pub from: User,
    /// Unix seconds.
    pub date: i64,
    /// The bot's new membership.
    pub new_chat_member: ChatMember,
}

/// A membership.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatMember {
    /// `member`, `kicked` (blocked), `left`, `administrator`, …
    pub status: String,
}

/// A reaction change.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessageReaction {
    /// The chat.
    pub chat: Chat,
    /// The message reacted to.
    pub message_id: i64,
    /// Who reacted (absent for anonymous reactions).
    pub user: Option<User>,
    /// Unix seconds.
    pub date: i64,
    /// Reactions now set.
    pub new_reaction: Vec<ReactionType>,
}

/// One reaction.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReactionType {
    /// `emoji`, `custom_emoji`, `paid`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The emoji, for `emoji`.
    pub emoji: Option<String>,
}
