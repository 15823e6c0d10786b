//! The WhatsApp Cloud API webhook as serde types: only what the plugin reads. Meta omits
//! most fields depending on the message type, so nearly everything is optional; unknown
//! fields are ignored (the event's `raw` keeps them).

use serde::Deserialize;

/// A webhook notification: `{"object": "whatsapp_business_account", "entry": […]}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notification {
    /// `whatsapp_business_account` for this product.
    pub object: String,
    /// One entry per WhatsApp Business Account; Meta batches several.
    pub entry: Vec<Entry>,
}

/// The changes of one WhatsApp Business Account.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Entry {
    /// The WhatsApp Business Account id.
    pub id: String,
    /// What changed; conversation events are in `field: "messages"`.
    pub changes: Vec<Change>,
}

/// One change.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Change {
    /// `messages`, or an account field (`message_template_status_update`, …).
    pub field: String,
    /// The change itself, parsed per field.
    pub value: serde_json::Value,
}

/// The value of a `messages` change.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessagesValue {
    /// Which business number it arrived on.
    pub metadata: Metadata,
    /// Profiles of the customers who wrote (`wa_id` + name).
    pub contacts: Vec<Contact>,
    /// Incoming messages, kept as JSON so each one's `raw` is its own text.
    pub messages: Vec<serde_json::Value>,
    /// Status updates of messages the business sent, kept as JSON likewise.
    pub statuses: Vec<serde_json::Value>,
    /// Errors about the notification itself (not tied to a message).
    pub errors: Vec<WaError>,
}

/// The business phone number.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// The number as shown, e.g. `15550783881`.
    pub display_phone_number: String,
    /// The phone number id: the channel's `account`.
    pub phone_number_id: String,
}

/// A customer's profile.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Contact {
    /// The customer's WhatsApp id: their phone number, digits only.
    pub wa_id: Option<String>,
    /// The business-scoped user id, where Meta sends one.
    pub user_id: Option<String>,
    /// The profile.
    pub profile: Profile,
}

/// A profile.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// The name the customer set in WhatsApp.
    pub name: Option<String>,
}

/// One incoming message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaMessage {
    /// Sender's `wa_id`; absent in some system messages.
    pub from: Option<String>,
    /// The message id (`wamid.…`).
    pub id: String,
    /// Unix seconds, as a string.
    pub timestamp: String,
    /// Reply-to and forwarding information.
    pub context: Option<Context>,
    /// The click-to-WhatsApp ad or post that led to this message.
    pub referral: Option<WaReferral>,
    /// Why Meta could not deliver the content (`type: unsupported`, …).
    pub errors: Vec<WaError>,
    /// A reaction to an earlier message.
    pub reaction: Option<WaReaction>,
    /// A change on the customer's side (new number, new identity).
    pub system: Option<System>,
    /// An edit of an earlier message.
    pub edit: Option<Edit>,
    /// The customer deleted an earlier message.
    pub revoke: Option<Revoke>,
    /// An order from the business's catalog.
    pub order: Option<Order>,
    /// The message's content, by `type`.
    #[serde(flatten)]
    pub content: Content,
}

/// A message's content: `type` and the field named after it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Content {
    /// `text`, `image`, `audio`, `interactive`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// For `text`.
    pub text: Option<Text>,
    /// For `image`.
    pub image: Option<WaMedia>,
    /// For `audio` (`voice: true` for voice notes).
    pub audio: Option<WaMedia>,
    /// For `video`.
    pub video: Option<WaMedia>,
    /// For `document`.
    pub document: Option<WaMedia>,
    /// For `sticker`.
    pub sticker: Option<WaMedia>,
    /// For `location`.
    pub location: Option<WaLocation>,
    /// For `contacts`.
    pub contacts: Option<Vec<Card>>,
    /// For `interactive`: a reply button or list row the customer picked.
    pub interactive: Option<WaInteractive>,
    /// For `button`: a template's quick-reply button.
    pub button: Option<Button>,
}

/// Text content.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Text {
    /// The text.
    pub body: String,
}

/// Media content: Meta sends the media id; the file is fetched with the access token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaMedia {
    /// Media id, for `GET /{media-id}`.
    pub id: Option<String>,
    /// A download URL, where Meta includes one.
    pub url: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// SHA-256 of the file, base64.
    pub sha256: Option<String>,
    /// Caption (image, video, document).
    pub caption: Option<String>,
    /// File name (document).
    pub filename: Option<String>,
    /// `true` for a recorded voice note (audio).
    pub voice: bool,
}

/// A shared location.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaLocation {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Place name.
    pub name: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Link to the place.
    pub url: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Card {
    /// Names.
    pub name: CardName,
    /// Phone numbers.
    pub phones: Vec<CardPhone>,
    /// E-mail addresses.
    pub emails: Vec<CardEmail>,
}

/// A card's names.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CardName {
    /// Full name as shown.
    pub formatted_name: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
}

/// A phone number on a card.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CardPhone {
    /// The number as written.
    pub phone: Option<String>,
    /// Its WhatsApp id, when it has WhatsApp.
    pub wa_id: Option<String>,
}

/// An e-mail address on a card.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CardEmail {
    /// The address.
    pub email: Option<String>,
}

/// The customer's answer to an interactive message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaInteractive {
    /// `button_reply`, `list_reply`, `nfm_reply` (flows), …
    #[serde(rename = "type")]
    pub kind: String,
    /// The reply button picked.
    pub button_reply: Option<Choice>,
    /// The list row picked.
    pub list_reply: Option<Choice>,
}

/// A picked button or row.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Choice {
    /// The id the business gave it.
    pub id: String,
    /// Its title.
    pub title: Option<String>,
}

/// A template quick-reply button.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Button {
    /// The payload the business set on the button.
    pub payload: Option<String>,
    /// The button's text.
    pub text: Option<String>,
}

/// Reply-to and forwarding.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Context {
    /// The message replied to.
    pub id: Option<String>,
    /// Forwarded.
    pub forwarded: bool,
    /// Forwarded more than five times.
    pub frequently_forwarded: bool,
}

/// A click-to-WhatsApp ad or post.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaReferral {
    /// The ad or post URL.
    pub source_url: Option<String>,
    /// The ad or post id.
    pub source_id: Option<String>,
    /// `ad` or `post`.
    pub source_type: Option<String>,
    /// The ad's headline.
    pub headline: Option<String>,
    /// The ad's body.
    pub body: Option<String>,
    /// `image` or `video`.
    pub media_type: Option<String>,
    /// The ad's image.
    pub image_url: Option<String>,
    /// The ad's video.
    pub video_url: Option<String>,
    /// The video's thumbnail.
    pub thumbnail_url: Option<String>,
    /// The click id of the ad click.
    pub ctwa_clid: Option<String>,
}

/// A reaction; no or an empty emoji means it was removed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaReaction {
    /// The message reacted to.
    pub message_id: String,
    /// The emoji.
    pub emoji: Option<String>,
}

/// A system message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct System {
    /// What happened, for humans.
    pub body: Option<String>,
    /// `user_changed_number`, `customer_identity_changed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The customer's new `wa_id` (`user_changed_number`).
    pub wa_id: Option<String>,
}

/// An edit.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Edit {
    /// The message edited.
    pub original_message_id: String,
    /// Its new content.
    pub message: Content,
}

/// A deletion.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Revoke {
    /// The message deleted.
    pub original_message_id: String,
}

/// A catalog order.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Order {
    /// The catalog.
    pub catalog_id: Option<String>,
    /// The customer's note.
    pub text: Option<String>,
    /// What was ordered.
    pub product_items: Vec<serde_json::Value>,
}

/// A status update of a message the business sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WaStatus {
    /// The message (`wamid.…`).
    pub id: String,
    /// `sent`, `delivered`, `read`, `failed`, …
    pub status: String,
    /// Unix seconds, as a string.
    pub timestamp: String,
    /// The customer's `wa_id`.
    pub recipient_id: Option<String>,
    /// Why it failed.
    pub errors: Vec<WaError>,
}

/// An error as the webhook reports it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct WaError {
    /// E.g. `131051`.
    pub code: i64,
    /// E.g. `Message type unknown`.
    pub title: String,
    /// Longer message.
    pub message: Option<String>,
    /// `details`.
    pub error_data: Option<ErrorData>,
}

/// An error's details.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ErrorData {
    /// Details, for humans.
    pub details: Option<String>,
}
