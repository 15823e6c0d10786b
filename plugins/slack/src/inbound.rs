//! Slack Events API requests → events.
//!
//! Message ids are `{channel}:{ts}`: Slack's `ts` is unique within a channel, and a retry
//! (`X-Slack-Retry-Num`) carries the same message, so the host drops it as a duplicate.
//! A message in a thread has `reply_to` = `{channel}:{thread_ts}` (the thread's root),
//! which is what a reply passes on to be posted in that thread.

use omnigate_sdk::{
    Direction, Edit, EventBody, Handle, HandleKind, HttpRequest, InboundEvent, Media, MediaKind,
    Message, Part, Party, WebhookError, WebhookOutcome, header, host, json, ok, ok_text, outcome,
    require_method, signature,
};
use serde::Deserialize;

use crate::{SIGNING_SECRET, TOLERANCE_SECS};

/// The outer request: a handshake or an event callback.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Envelope {
    /// Slack checks the Request URL: echo `challenge`.
    UrlVerification {
        /// The value to echo.
        challenge: String,
    },
    /// One event of a subscribed type.
    EventCallback(Callback),
    /// `app_rate_limited` and anything Slack adds later: acknowledged, nothing mapped.
    #[serde(other)]
    Other,
}

/// An `event_callback`.
#[derive(Debug, Deserialize)]
pub struct Callback {
    /// The workspace.
    pub team_id: Option<String>,
    /// Slack's id of this delivery (the same on retries).
    pub event_id: String,
    /// The event itself, parsed further only when it is a `message`.
    pub event: serde_json::Value,
}

/// A `message` event (and the `message` / `previous_message` inside edits and deletions).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SlackMessage {
    /// `message_changed`, `message_deleted`, `file_share`, `bot_message`, … or none.
    pub subtype: Option<String>,
    /// The conversation: `C…` channel, `G…` private channel, `D…` DM.
    pub channel: String,
    /// The author.
    pub user: Option<String>,
    /// Set when a bot (our own app included) wrote it.
    pub bot_id: Option<String>,
    /// The text (Slack `mrkdwn`).
    pub text: Option<String>,
    /// The message's id within the channel, `seconds.micros`.
    pub ts: String,
    /// The thread's root `ts`, for messages in a thread.
    pub thread_ts: Option<String>,
    /// Files shared with it.
    pub files: Vec<SlackFile>,
    /// `message_changed`: the message as it is now.
    pub message: Option<Box<SlackMessage>>,
    /// `message_changed`, `message_deleted`: the message as it was.
    pub previous_message: Option<Box<SlackMessage>>,
    /// `message_deleted`: the deleted message's `ts`.
    pub deleted_ts: Option<String>,
}

/// A file shared in a message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SlackFile {
    /// `F…`
    pub id: String,
    /// File name.
    pub name: Option<String>,
    /// Its title, used as the caption.
    pub title: Option<String>,
    /// MIME type.
    pub mimetype: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Download URL (needs the bot token).
    pub url_private: Option<String>,
}

/// Verify, then answer the handshake or map the callback.
pub fn handle(request: &HttpRequest) -> Result<WebhookOutcome, WebhookError> {
    require_method(request, "POST")?;
    signature::verify_slack(request, SIGNING_SECRET, TOLERANCE_SECS)?;
    if let Some(retry) = header(request, "x-slack-retry-num") {
        let reason = header(request, "x-slack-retry-reason").unwrap_or("unknown");
        host::debug(&format!("Slack retry {retry} ({reason})"));
    }
    match json::<Envelope>(&request.body)? {
        Envelope::UrlVerification { challenge } => Ok(outcome(ok_text(&challenge), Vec::new())),
        Envelope::EventCallback(callback) => {
            Ok(outcome(ok(), event(&callback)?.into_iter().collect()))
        }
        Envelope::Other => Ok(outcome(ok(), Vec::new())),
    }
}

/// The event of a callback, or `None` for what is not a customer's message (other event
/// types, bot messages, joins and other housekeeping subtypes).
pub fn event(callback: &Callback) -> Result<Option<InboundEvent>, WebhookError> {
    if callback.event.get("type").and_then(|t| t.as_str()) != Some("message") {
        return Ok(None);
    }
    let message: SlackMessage = serde_json::from_value(callback.event.clone())
        .map_err(|error| WebhookError::BadRequest(format!("invalid message event: {error}")))?;
    if message.channel.is_empty() || message.ts.is_empty() {
        return Err(WebhookError::BadRequest(
            "message event without `channel` or `ts`".into(),
        ));
    }
    let mapped = match message.subtype.as_deref() {
        None | Some("file_share" | "thread_broadcast" | "me_message") => new_message(&message)?,
        Some("message_changed") => edit(&message)?,
        Some("message_deleted") => deletion(&message),
        // `bot_message`, `channel_join`, `channel_topic`, …: not a customer writing.
        Some(_) => None,
    };
    Ok(mapped.map(|(id, author, body, ts)| InboundEvent {
        external_id: id,
        occurred_at: ts.and_then(|ts| ts_millis(&ts)),
        account: callback.team_id.clone(),
        contact: party(&message.channel, &author),
        body,
        raw: None,
    }))
}

/// `(external id, author, body, ts)` of a mapped message.
type Mapped = (String, String, EventBody, Option<String>);

fn new_message(message: &SlackMessage) -> Result<Option<Mapped>, WebhookError> {
    // Our own replies come back as bot messages: never treat them as the customer's.
    let Some(user) = message.user.clone().filter(|_| message.bot_id.is_none()) else {
        return Ok(None);
    };
    let id = message_id(&message.channel, &message.ts);
    let reply_to = message
        .thread_ts
        .as_deref()
        .filter(|root| *root != message.ts)
        .map(|root| message_id(&message.channel, root));
    let body = EventBody::Message(Message {
        direction: Direction::Inbound,
        text: message.text.clone().filter(|text| !text.is_empty()),
        parts: files(&message.files),
        reply_to,
        forwarded: false,
        interactive_reply: None,
        referral: None,
    });
    Ok(Some((id, user, body, Some(message.ts.clone()))))
}

fn edit(event: &SlackMessage) -> Result<Option<Mapped>, WebhookError> {
    let current = event
        .message
        .as_deref()
        .ok_or_else(|| WebhookError::BadRequest("message_changed without `message`".into()))?;
    let Some(user) = current.user.clone().filter(|_| current.bot_id.is_none()) else {
        return Ok(None);
    };
    let target = message_id(&event.channel, &current.ts);
    // The edit's own `ts` makes each edit of one message a distinct event.
    let id = format!("{target}:edited:{}", event.ts);
    let body = EventBody::Edit(Edit {
        message_id: target,
        text: current.text.clone(),
        parts: files(&current.files),
    });
    Ok(Some((id, user, body, Some(event.ts.clone()))))
}

fn deletion(event: &SlackMessage) -> Option<Mapped> {
    let deleted = event.deleted_ts.clone()?;
    // Who wrote it is only in `previous_message`; without it there is no contact.
    let previous = event.previous_message.as_deref()?;
    let user = previous
        .user
        .clone()
        .filter(|_| previous.bot_id.is_none())?;
    let target = message_id(&event.channel, &deleted);
    let id = format!("{target}:deleted");
    Some((
        id,
        user,
        EventBody::Deletion(target),
        Some(event.ts.clone()),
    ))
}

/// `{channel}:{ts}`: a message's id.
pub fn message_id(channel: &str, ts: &str) -> String {
    format!("{channel}:{ts}")
}

/// The customer: `{channel}/{user}` (replies go to the channel; one person in several
/// channels is linked through the user handle).
fn party(channel: &str, user: &str) -> Party {
    Party {
        id: format!("{channel}/{user}"),
        name: None,
        handles: vec![Handle {
            kind: HandleKind::ChannelUser,
            value: user.to_owned(),
            verified: true,
        }],
    }
}

fn files(files: &[SlackFile]) -> Vec<Part> {
    files
        .iter()
        .map(|file| {
            Part::Media(Media {
                kind: MediaKind::of_mime(file.mimetype.as_deref()),
                id: Some(file.id.clone()).filter(|id| !id.is_empty()),
                url: file.url_private.clone(),
                mime_type: file.mimetype.clone(),
                caption: file
                    .title
                    .clone()
                    .filter(|title| Some(title) != file.name.as_ref()),
                filename: file.name.clone(),
                size: file.size,
                sha256: None,
            })
        })
        .collect()
}

/// Slack's `ts` (`1355517523.000005`, seconds with microseconds) in milliseconds.
pub fn ts_millis(ts: &str) -> Option<i64> {
    let (secs, fraction) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs: i64 = secs.parse().ok()?;
    let millis: i64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    secs.checked_mul(1000)?.checked_add(millis)
}
