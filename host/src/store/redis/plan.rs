//! The context rules on Redis: what this instance last saw of a contact ([`Head`]), the
//! guards and writes the rules' decision on an inbound event makes for `apply.lua`
//! ([`Plan`]), and the script's answer turned back into what the ingest did.
//!
//! The rules decide in Rust ([`crate::store::rules`]); the script only checks the facts
//! the decision read and writes. It guards on what a decision depends on and other
//! writers rarely change (the latest conversation's id, status and channel, that it was
//! active after `event time − inactivity`), and writes what other instances also move
//! relatively (the message count by `HINCRBY`, the latest activity by a maximum, the
//! first and unanswered message by set-if-absent), so a copy of a contact stays good while
//! several instances take turns with its messages (docs/store.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use super::{
    StoreError, corrupt, internal, micros, optional, owed_record, parse_conversation, parse_json,
    parse_list, parse_time,
};
use crate::event::{Direction, HistoryEntry, Referral};
use crate::store::model::{
    Contact, Conversation, Ingest, IngestPolicy, Ingested, Merge, TimelineEntry,
};
use crate::store::rules::{self, Threading, Windows};

use super::recent::Recent;

/// What the rules read of a contact, as this instance last saw it in Redis.
#[derive(Debug, Clone)]
pub(super) struct Head {
    /// The contact (a placeholder with the event's time when it does not exist yet).
    pub(super) contact: Contact,
    /// Whether its hash exists.
    exists: bool,
    /// Its `handles` field as stored: a handles write is guarded on it.
    handles_json: Option<String>,
    /// Its `hs` field: the sender's handles (JSON) as last merged into `handles`.
    hs: Option<String>,
    /// Its latest conversation.
    latest: Option<Latest>,
    /// The last messages of its latest conversation as this instance holds them.
    pub(super) recent: Option<Recent>,
}

/// A contact's latest conversation with what the rules read beside it.
#[derive(Debug, Clone)]
struct Latest {
    conversation: Conversation,
    windows: Windows,
    /// `channels` as stored: a channels write is guarded on it.
    channels_json: String,
    /// The conversation still has the reply windows in one JSON field (`windows`), as
    /// written before a field per channel (`w:<channel>`): the next write moves them.
    legacy_windows: bool,
    /// `first_touch` as stored, so an answer repeating it is not parsed again.
    first_touch_json: Option<String>,
    /// `sv`, the version of the fields a decision reads and other instances change
    /// rarely (status, channels, touches): every write of them increments it.
    sv: Option<String>,
    /// `touched_at`: when its latest message was received (µs), whatever time the
    /// provider reported.
    touched: Option<Timestamp>,
}

impl Head {
    /// A contact nobody has written yet: the next event makes it.
    pub(super) fn unknown(id: &str, at: Timestamp) -> Self {
        Self {
            contact: Contact::new(id, at),
            exists: false,
            handles_json: None,
            hs: None,
            latest: None,
            recent: None,
        }
    }

    /// The head in a `stale` answer of apply.lua (after `'stale'` and the owner): the
    /// contact hash's `id, name, created_at, handles, latest, hs`, then the latest
    /// conversation's fields as name/value pairs. `at` stands for a contact that does
    /// not exist.
    pub(super) fn parse(owner: &str, reply: &[String], at: Timestamp) -> Result<Self, StoreError> {
        let [id, name, created_at, handles, latest, hs, pairs @ ..] = reply else {
            return Err(corrupt("contact", "short apply.lua answer"));
        };
        if id.is_empty() {
            return Ok(Self::unknown(owner, at));
        }
        let contact = Contact {
            id: owner.to_owned(),
            name: Some(name.clone()).filter(|name| !name.is_empty()),
            handles: parse_list(handles)?,
            created_at: optional(created_at, parse_time)?.unwrap_or(at),
        };
        let latest = if latest.is_empty() || pairs.is_empty() {
            None
        } else {
            Some(Latest::parse(latest, pairs)?)
        };
        Ok(Self {
            contact,
            exists: true,
            handles_json: Some(handles.clone()).filter(|json| !json.is_empty()),
            hs: Some(hs.clone()).filter(|json| !json.is_empty()),
            latest,
            recent: None,
        })
    }
}

impl Head {
    /// About what the copy weighs, in KiB: 2 for the contact and its latest conversation,
    /// plus the messages it holds.
    pub(super) fn weight(&self) -> u64 {
        2 + self
            .recent
            .as_ref()
            .map_or(0, |recent| recent.bytes() / 1024)
    }

    /// The contact's latest conversation as read, and when its latest message was
    /// received.
    pub(super) fn latest(&self) -> Option<(&Conversation, Option<Timestamp>)> {
        self.latest
            .as_ref()
            .map(|latest| (&latest.conversation, latest.touched))
    }
}

/// Weighs the copies an instance keeps ([`Head::weight`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadWeight;

impl quick_cache::Weighter<String, Arc<Head>> for HeadWeight {
    fn weight(&self, _id: &String, head: &Arc<Head>) -> u64 {
        head.weight()
    }
}

/// Conversation `id` from its hash fields as name/value pairs (`HGETALL`); `None` when it
/// has none (it does not exist).
pub(super) fn stored_conversation(
    id: &str,
    pairs: &[String],
) -> Result<Option<Conversation>, StoreError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    Ok(Some(Latest::parse(id, pairs)?.conversation))
}

impl Latest {
    /// Conversation `id` from its hash fields as name/value pairs.
    fn parse(id: &str, pairs: &[String]) -> Result<Self, StoreError> {
        let fields: HashMap<&str, &str> = pairs
            .chunks_exact(2)
            .map(|pair| (pair[0].as_str(), pair[1].as_str()))
            .collect();
        let mut values = vec![id.to_owned()];
        values.extend(
            super::CONVERSATION_HASH_FIELDS
                .iter()
                .map(|field| fields.get(field).copied().unwrap_or_default().to_owned()),
        );
        let conversation = parse_conversation(&values)?;
        let mut windows = Windows::new();
        let legacy = fields.get("windows").copied();
        if let Some(json) = legacy {
            let stored: HashMap<String, String> = parse_json(json)?;
            for (channel, until) in stored {
                windows.insert(channel, parse_time(&until)?);
            }
        }
        for (field, until) in &fields {
            if let Some(channel) = field.strip_prefix("w:") {
                windows.insert(channel.to_owned(), parse_time(until)?);
            }
        }
        Ok(Self {
            conversation,
            windows,
            channels_json: fields.get("channels").copied().unwrap_or("[]").to_owned(),
            legacy_windows: legacy.is_some(),
            first_touch_json: fields.get("first_touch").map(|json| (*json).to_owned()),
            sv: fields.get("sv").map(|sv| (*sv).to_owned()),
            touched: optional(
                fields.get("touched_at").copied().unwrap_or_default(),
                parse_time,
            )?,
        })
    }
}

/// One guard or write of apply.lua: target (`c` contact, `l` latest conversation, `v`
/// the event's conversation), operation, field, value.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Op<'a> {
    pub(super) target: &'static str,
    pub(super) op: &'static str,
    pub(super) field: Cow<'a, str>,
    pub(super) value: Cow<'a, str>,
}

impl<'a> Op<'a> {
    /// A guard that `field` of `target` holds `value` as it was read (`None`: absent).
    pub(super) fn as_read(
        target: &'static str,
        field: &'static str,
        value: Option<impl Into<Cow<'a, str>>>,
    ) -> Self {
        match value {
            Some(value) => Self::new(target, "eq", field, value),
            None => Self::new(target, "no", field, ""),
        }
    }

    /// `op` on `field` of `target` with `value`.
    pub(super) fn new(
        target: &'static str,
        op: &'static str,
        field: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, str>>,
    ) -> Self {
        Self {
            target,
            op,
            field: field.into(),
            value: value.into(),
        }
    }
}

/// What a reply value of a write tells.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    CreatedAt,
    Sv,
    Messages,
    LastAt,
    FirstIn,
    Awaiting,
    ReplyUntil,
    FirstTouch,
}

/// The encoded parts of an event every plan of it uses, made once per ingest.
pub(super) struct EventText<'a> {
    /// The history entry (JSON), `""` when the event is no message.
    pub(super) entry: &'a str,
    /// The sender's handles (JSON).
    pub(super) handles: &'a str,
    /// The referral (JSON) or `""`.
    pub(super) referral: &'a str,
    /// The id a conversation this event opens gets.
    pub(super) proposed: &'a str,
    /// Now (ms).
    pub(super) now_ms: i64,
    /// The owed record's tail (`<merge JSON or empty>\x1f<payload>`), `""` when the
    /// event owes nothing.
    pub(super) owed_tail: &'a str,
    /// Contact hash fields (`v:<kind>:<value>`) of verified handles found pointing at
    /// the contact: set, so later events carrying them take the one-request path.
    pub(super) confirmed: &'a [String],
}

/// The rules' decision on one inbound event, as apply.lua takes it.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    /// The conversation the event lands on.
    pub(super) conversation_id: String,
    /// The latest conversation the decision read (`""`: none).
    pub(super) latest_id: String,
    /// Its `conversation.closed` timeline entry when the event closes it, or `""`.
    pub(super) close_entry: String,
    /// Whether the event opens the conversation.
    pub(super) opened: bool,
    /// The history entry (`"<time µs> <JSON>"`) or `""`.
    pub(super) history: String,
    /// The timeline entries of the conversation (JSON, `\x1e`-joined) or `""`.
    pub(super) timeline: String,
    /// The owed record or `""`.
    pub(super) owed: String,
    /// Facts the decision read, checked before anything is written.
    pub(super) guards: Vec<Op<'a>>,
    /// The writes.
    pub(super) writes: Vec<Op<'a>>,
    slots: Vec<Slot>,
    after: Ingested,
    head_after: Head,
    latest_after: LatestAfter,
}

/// What the rules decide for `ingest` on the contact `head` describes.
pub(super) fn plan<'a>(
    head: &'a Head,
    ingest: &'a Ingest,
    policy: &IngestPolicy,
    text: &'a EventText<'a>,
    merged: Option<&Merge>,
) -> Result<Plan<'a>, StoreError> {
    let at = ingest.at.as_microsecond();
    let now_us = text.now_ms * 1000;
    let mut guards = Vec::new();
    let mut writes = Vec::new();
    let mut slots = Vec::new();
    // The copy after the event; its latest conversation is added once the answer is in.
    let mut head_after = Head {
        contact: head.contact.clone(),
        exists: true,
        handles_json: head.handles_json.clone(),
        hs: head.hs.clone(),
        latest: None,
        recent: None,
    };

    // The contact: the latest name, every handle reported (verified wins).
    let contact = &mut head_after.contact;
    let name_before = contact.name.clone();
    if !head.exists {
        writes.push(Op::new("c", "keep", "created_at", at.to_string()));
        slots.push(Slot::CreatedAt);
    }
    if head.hs.as_deref() == Some(text.handles) {
        // The same handles as last time (nearly every message): nothing to merge, as long
        // as no merge or unmerge changed the contact's handles since.
        guards.push(Op::new("c", "eq", "hs", text.handles));
        if let Some(name) = &ingest.person.name {
            contact.name = Some(name.clone());
        }
    } else {
        let handles_before = contact.handles.clone();
        rules::add_person(contact, &ingest.person);
        if contact.handles != handles_before {
            let json = serde_json::to_string(&contact.handles).map_err(internal)?;
            guards.push(Op::as_read("c", "handles", head.handles_json.as_deref()));
            writes.push(Op::new("c", "set", "handles", json.clone()));
            head_after.handles_json = Some(json);
        }
        writes.push(Op::new("c", "set", "hs", text.handles));
        head_after.hs = Some(text.handles.to_owned());
    }
    let contact = &head_after.contact;
    if contact.name != name_before
        && let Some(name) = &contact.name
    {
        writes.push(Op::new("c", "set", "name", name.clone()));
    }
    for field in text.confirmed {
        writes.push(Op::new("c", "set", field.as_str(), "1"));
    }

    // The conversation: continue the latest one, or open one (closing the latest).
    let latest = head.latest.as_ref();
    let threading = rules::threading(
        latest.map(|latest| &latest.conversation),
        ingest.at,
        policy.inactivity,
    );
    let threshold = at - micros(policy.inactivity);
    let latest_id = latest
        .map(|latest| latest.conversation.id.clone())
        .unwrap_or_default();
    guards.push(Op::as_read(
        "c",
        "latest",
        latest.map(|latest| latest.conversation.id.as_str()),
    ));
    let mut close_entry = String::new();
    let mut timeline: Vec<TimelineEntry> = Vec::new();
    let (mut conversation, mut windows, started) = match (threading, latest) {
        (Threading::Continue, Some(latest)) => {
            guards.push(Op::new("l", "eq", "status", "open"));
            guards.push(Op::as_read("l", "sv", latest.sv.as_deref()));
            guards.push(Op::new("l", "gt", "last_at", threshold.to_string()));
            (latest.conversation.clone(), latest.windows.clone(), false)
        }
        (threading, latest) => {
            if let Some(latest) = latest {
                if matches!(threading, Threading::Start { close_latest: true }) {
                    guards.push(Op::new("l", "eq", "status", "open"));
                    guards.push(Op::new("l", "le", "last_at", threshold.to_string()));
                    let mut closed = latest.conversation.clone();
                    close_entry = timeline_json(&rules::close(&mut closed, ingest.at))?;
                    writes.push(Op::new("l", "set", "status", "closed"));
                    writes.push(Op::new("l", "set", "closed_at", at.to_string()));
                } else {
                    guards.push(Op::new("l", "eq", "status", "closed"));
                }
            }
            let (conversation, entry) = rules::opened(
                text.proposed.to_owned(),
                &contact.id,
                &ingest.channel,
                ingest.at,
            );
            timeline.push(entry);
            writes.push(Op::new("c", "set", "latest", text.proposed));
            (conversation, Windows::new(), true)
        }
    };
    let applied = rules::apply_inbound(&mut conversation, &mut windows, ingest);
    // Encoded once: for the write (when the list changed) and for the copy.
    let channels_json = match latest {
        Some(latest)
            if !started && latest.conversation.channels_used == conversation.channels_used =>
        {
            latest.channels_json.clone()
        }
        _ => serde_json::to_string(&conversation.channels_used).map_err(internal)?,
    };
    if started {
        conversation_fields(
            &conversation,
            &windows,
            ingest,
            text,
            &channels_json,
            now_us,
            &mut writes,
        );
    } else if let Some(latest) = latest {
        continued_writes(
            &conversation,
            &applied,
            latest,
            ingest,
            text,
            &channels_json,
            now_us,
            (&mut guards, &mut writes, &mut slots),
        );
    }
    timeline.extend(applied.timeline);
    let timeline = timeline
        .iter()
        .map(timeline_json)
        .collect::<Result<Vec<_>, _>>()?
        .join("\u{1e}");
    let history = if ingest.message.is_some() {
        format!("{at} {}", text.entry)
    } else {
        String::new()
    };
    let owed = if text.owed_tail.is_empty() {
        String::new()
    } else {
        owed_record(
            now_us,
            &conversation.id,
            started,
            applied.switched_from.as_deref(),
            text.owed_tail,
        )
    };
    let latest_after = LatestAfter {
        channels_json,
        windows,
        first_touch_json: match latest {
            Some(latest) if !started => latest.first_touch_json.clone(),
            _ => None,
        }
        .or_else(|| (!text.referral.is_empty()).then(|| text.referral.to_owned())),
        sv: if started {
            None
        } else {
            latest.and_then(|latest| latest.sv.clone())
        },
        // Written with every message, and when a conversation opens.
        touched: if started || ingest.message.is_some() {
            Timestamp::from_microsecond(now_us).ok()
        } else {
            latest.and_then(|latest| latest.touched)
        },
    };
    Ok(Plan {
        conversation_id: conversation.id.clone(),
        latest_id,
        close_entry,
        opened: started,
        history,
        timeline,
        owed,
        guards,
        writes,
        slots,
        after: Ingested {
            contact: head_after.contact.clone(),
            conversation,
            started,
            first_inbound: applied.first_inbound,
            switched_from: applied.switched_from,
            history: Vec::new(),
            merged: merged.cloned(),
        },
        head_after,
        latest_after,
    })
}

/// The guards and writes of a message continuing an open conversation with nothing else
/// to change, in order: target, operation (`None`: `eq`, or `no` when the field is
/// absent), field.
const CONTINUED: [(&str, Option<&str>, &str); 12] = [
    ("c", Some("eq"), "hs"),
    ("c", Some("eq"), "latest"),
    ("l", Some("eq"), "status"),
    ("l", None, "sv"),
    ("l", Some("gt"), "last_at"),
    ("l", Some("eq"), "current"),
    ("v", Some("inc"), "messages"),
    ("v", Some("max"), "last_at"),
    ("v", Some("set"), "touched_at"),
    ("v", Some("get"), "reply_until"),
    ("v", Some("keep"), "first_in"),
    ("v", Some("keep"), "awaiting"),
];

/// apply.lua's short form of `plan` when it is a message continuing an open conversation
/// with nothing else to change, or nothing but a referral (nearly every message): the
/// form (`F`, or `R` with a referral), then the values of its guards and writes at fixed
/// places (`hs`, `latest`, `sv` or `""`, the activity threshold, the channel, the event
/// time, now, `first_in`, `awaiting`, and for `R` the referral) instead of the
/// interpreted list. The script's answer is the same. `None` for any other plan.
pub(super) fn short_form<'p>(plan: &'p Plan<'_>) -> Option<(&'static str, Vec<&'p str>)> {
    let (guards, writes) = (&plan.guards, &plan.writes);
    let is = |op: &Op, target: &str, kind: &str, field: &str| {
        op.target == target && op.op == kind && op.field == field
    };
    let (form, counters, referral) = match writes.as_slice() {
        counters @ [_, _, _, _, _, _] => ("F", counters, None),
        [sv, counters @ .., first, last]
            if counters.len() == 6
                && is(sv, "v", "inc", "sv")
                && sv.value == "1"
                && is(first, "v", "keep", "first_touch")
                && is(last, "v", "set", "last_touch")
                && first.value == last.value =>
        {
            ("R", counters, Some(&last.value))
        }
        _ => return None,
    };
    let fits = guards.len() == 6
        && plan.conversation_id == plan.latest_id
        && guards
            .iter()
            .chain(counters)
            .zip(CONTINUED)
            .all(|(op, (target, kind, field))| {
                op.target == target
                    && op.field == field
                    && kind.map_or(op.op == "eq" || op.op == "no", |kind| op.op == kind)
            })
        && guards[2].value == "open"
        && counters[0].value == "1";
    if !fits {
        return None;
    }
    let sv = if guards[3].op == "no" {
        ""
    } else {
        &guards[3].value
    };
    let mut values = vec![
        &*guards[0].value,
        &guards[1].value,
        sv,
        &guards[4].value,
        &guards[5].value,
        &counters[1].value,
        &counters[2].value,
        &counters[4].value,
        &counters[5].value,
    ];
    values.extend(referral.map(|referral| &**referral));
    Some((form, values))
}

/// The parts of the copy's latest conversation besides the conversation itself, known
/// when the plan is made.
#[derive(Debug)]
struct LatestAfter {
    windows: Windows,
    channels_json: String,
    first_touch_json: Option<String>,
    sv: Option<String>,
    touched: Option<Timestamp>,
}

/// Every field of a conversation the event opened (nobody else knows it yet). Its
/// touches are the event's referral, whose JSON `text` has already.
fn conversation_fields<'a>(
    conversation: &Conversation,
    windows: &Windows,
    ingest: &Ingest,
    text: &'a EventText<'a>,
    channels_json: &str,
    now_us: i64,
    writes: &mut Vec<Op<'a>>,
) {
    let time = |at: Timestamp| at.as_microsecond().to_string();
    let mut set = |field: Cow<'a, str>, value: Cow<'a, str>| {
        writes.push(Op::new("v", "set", field, value));
    };
    set("status".into(), "open".into());
    set("started_at".into(), time(conversation.started_at).into());
    set("last_at".into(), time(conversation.last_activity_at).into());
    set("channels".into(), channels_json.to_owned().into());
    set(
        "current".into(),
        conversation.current_channel.clone().into(),
    );
    set("messages".into(), conversation.messages.to_string().into());
    set("touched_at".into(), now_us.to_string().into());
    if let Some(previous) = &conversation.previous_channel {
        set("previous".into(), previous.clone().into());
    }
    if let Some(until) = conversation.reply_window_until {
        set("reply_until".into(), time(until).into());
    }
    if let Some(until) = windows.get(&ingest.channel) {
        set(format!("w:{}", ingest.channel).into(), time(*until).into());
    }
    if ingest.referral.is_some() {
        set("first_touch".into(), text.referral.into());
        set("last_touch".into(), text.referral.into());
    }
    if let Some(first) = conversation.first_inbound_at {
        set("first_in".into(), time(first).into());
    }
    if let Some(awaiting) = conversation.awaiting_since {
        set("awaiting".into(), time(awaiting).into());
    }
}

/// The guards and writes of an event continuing the latest conversation: relative where
/// other instances move the same fields.
#[allow(clippy::too_many_arguments)]
fn continued_writes<'a>(
    after: &Conversation,
    applied: &rules::Applied,
    latest: &'a Latest,
    ingest: &'a Ingest,
    text: &'a EventText<'a>,
    channels_json: &str,
    now_us: i64,
    (guards, writes, slots): (&mut Vec<Op<'a>>, &mut Vec<Op<'a>>, &mut Vec<Slot>),
) {
    let before = &latest.conversation;
    let at = ingest.at.as_microsecond().to_string();
    let channel = &ingest.channel;
    let structural = latest.legacy_windows
        || applied.switched_from.is_some()
        || after.channels_used != before.channels_used
        || applied.touched;
    if structural {
        // Other instances' copies of these fields are now out of date.
        writes.push(Op::new("v", "inc", "sv", "1"));
        slots.push(Slot::Sv);
    }
    if latest.legacy_windows {
        // Move the reply windows to a field per channel.
        for (on, until) in &latest.windows {
            writes.push(Op::new(
                "v",
                "set",
                format!("w:{on}"),
                until.as_microsecond().to_string(),
            ));
        }
        writes.push(Op::new("v", "del", "windows", ""));
    }
    if let Some(message) = &ingest.message {
        // The switch (or its absence) was decided on the current channel.
        guards.push(Op::new(
            "l",
            "eq",
            "current",
            before.current_channel.as_str(),
        ));
        if let Some(previous) = &applied.switched_from {
            writes.push(Op::new("v", "set", "current", channel.as_str()));
            writes.push(Op::new("v", "set", "previous", previous.clone()));
        }
        if after.channels_used != before.channels_used {
            guards.push(Op::new(
                "l",
                "eq",
                "channels",
                latest.channels_json.as_str(),
            ));
            writes.push(Op::new("v", "set", "channels", channels_json.to_owned()));
        }
        writes.push(Op::new("v", "inc", "messages", "1"));
        slots.push(Slot::Messages);
        writes.push(Op::new("v", "max", "last_at", at.clone()));
        slots.push(Slot::LastAt);
        writes.push(Op::new("v", "set", "touched_at", now_us.to_string()));
        if applied.window_opened
            && let Some(until) = after.reply_window_until
        {
            let until = until.as_microsecond().to_string();
            writes.push(Op::new("v", "set", format!("w:{channel}"), until.clone()));
            writes.push(Op::new("v", "set", "reply_until", until));
        } else if applied.switched_from.is_some() && latest.legacy_windows {
            // The windows move to their fields in this same write: copy from the values.
            match after.reply_window_until {
                Some(until) => writes.push(Op::new(
                    "v",
                    "set",
                    "reply_until",
                    until.as_microsecond().to_string(),
                )),
                None => writes.push(Op::new("v", "del", "reply_until", "")),
            }
        } else if applied.switched_from.is_some() {
            writes.push(Op::new("v", "copy", "reply_until", format!("w:{channel}")));
            slots.push(Slot::ReplyUntil);
        } else {
            // Another instance may have renewed this channel's window meanwhile.
            writes.push(Op::new("v", "get", "reply_until", ""));
            slots.push(Slot::ReplyUntil);
        }
        match message.direction {
            Direction::Inbound => {
                writes.push(Op::new("v", "keep", "first_in", at.clone()));
                slots.push(Slot::FirstIn);
                writes.push(Op::new("v", "keep", "awaiting", at));
                slots.push(Slot::Awaiting);
            }
            Direction::Outbound => writes.push(Op::new("v", "del", "awaiting", "")),
        }
    }
    if applied.touched {
        writes.push(Op::new("v", "keep", "first_touch", text.referral));
        slots.push(Slot::FirstTouch);
        writes.push(Op::new("v", "set", "last_touch", text.referral));
    }
}

impl Plan<'_> {
    /// What the ingest did, from the reply values of the writes (in order) and the
    /// history the script read; with the contact as it is now, for the cache.
    pub(super) fn finish(
        self,
        owner: &str,
        values: &[String],
        history: Vec<HistoryEntry>,
    ) -> Result<(Ingested, Head), StoreError> {
        let Plan {
            slots,
            mut after,
            mut head_after,
            mut latest_after,
            ..
        } = self;
        // A plan made before the owner was known (a first message) names a placeholder.
        if after.contact.id != owner {
            owner.clone_into(&mut after.contact.id);
            owner.clone_into(&mut head_after.contact.id);
        }
        if after.started {
            owner.clone_into(&mut after.conversation.contact_id);
        }
        if values.len() != slots.len() {
            return Err(corrupt("apply.lua answer", "wrong number of values"));
        }
        let conversation = &mut after.conversation;
        for (slot, value) in slots.iter().zip(values) {
            match slot {
                Slot::CreatedAt => {
                    let created = parse_time(kept(value)?.1)?;
                    after.contact.created_at = created;
                    head_after.contact.created_at = created;
                }
                Slot::Sv => latest_after.sv = Some(value.clone()),
                Slot::Messages => {
                    conversation.messages = value
                        .parse()
                        .map_err(|_| corrupt("conversation", "messages is not a number"))?;
                }
                Slot::LastAt => conversation.last_activity_at = parse_time(value)?,
                Slot::ReplyUntil => conversation.reply_window_until = optional(value, parse_time)?,
                Slot::FirstIn => {
                    let (set, time) = kept(value)?;
                    after.first_inbound = set;
                    conversation.first_inbound_at = Some(parse_time(time)?);
                }
                Slot::Awaiting => conversation.awaiting_since = Some(parse_time(kept(value)?.1)?),
                Slot::FirstTouch => {
                    let (set, json) = kept(value)?;
                    // The copy's first touch is the stored one (nearly always): no parse.
                    if !set && latest_after.first_touch_json.as_deref() != Some(json) {
                        conversation.attribution.first_touch =
                            Some(Arc::new(parse_json::<Referral>(json)?));
                        latest_after.first_touch_json = Some(json.to_owned());
                    }
                }
            }
        }
        after.history = history;
        let LatestAfter {
            windows,
            channels_json,
            first_touch_json,
            sv,
            touched,
        } = latest_after;
        head_after.latest = Some(Latest {
            conversation: after.conversation.clone(),
            windows,
            channels_json,
            legacy_windows: false,
            first_touch_json,
            sv,
            touched,
        });
        Ok((after, head_after))
    }
}

/// A `keep` reply: whether this call set the field, and the value it holds.
fn kept(value: &str) -> Result<(bool, &str), StoreError> {
    match value.split_at_checked(1) {
        Some(("+", rest)) => Ok((true, rest)),
        Some(("=", rest)) => Ok((false, rest)),
        _ => Err(corrupt("apply.lua answer", value)),
    }
}

/// A timeline entry as the scripts store it (time in µs).
#[derive(Serialize)]
struct StoredEntryOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    at_us: i64,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a HistoryEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral: Option<&'a Referral>,
}

pub(super) fn timeline_json(entry: &TimelineEntry) -> Result<String, StoreError> {
    serde_json::to_string(&StoredEntryOut {
        kind: &entry.kind,
        at_us: entry.at.as_microsecond(),
        channel: &entry.channel,
        previous_channel: entry.previous_channel.as_deref(),
        message: entry.message.as_ref(),
        referral: entry.referral.as_deref(),
    })
    .map_err(internal)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> IngestPolicy {
        IngestPolicy {
            dedupe_ttl: Duration::from_secs(3600),
            inactivity: Duration::from_secs(24 * 3600),
            history_cap: 50,
            timeline_cap: 1000,
            history_depth: 10,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("in range")
    }

    fn inbound(channel: &str, when: Timestamp) -> Ingest {
        crate::store::rules::tests::message(channel, Direction::Inbound, when)
    }

    fn text<'a>(handles: &'a str) -> EventText<'a> {
        EventText {
            entry: "{}",
            handles,
            referral: "",
            proposed: "cv_new",
            now_ms: at(0).as_millisecond(),
            owed_tail: "",
            confirmed: &[],
        }
    }

    /// The head apply.lua answers `stale` with: contact fields, then the latest
    /// conversation's pairs (here with reply windows in the old single JSON field).
    fn stored(current: &str) -> Head {
        let micros = |seconds: i64| at(seconds).as_microsecond().to_string();
        let mut reply: Vec<String> = [
            "ct_1",
            "",
            &micros(0),
            "[]",
            "cv_1",
            "[\"h\"]",
            "contact",
            "ct_1",
            "status",
            "open",
            "started_at",
            &micros(0),
            "last_at",
            &micros(0),
            "channels",
            "[\"wa\",\"web\"]",
            "current",
            current,
            "messages",
            "4",
            "first_in",
            &micros(0),
            "sv",
            "3",
        ]
        .iter()
        .map(|value| (*value).to_owned())
        .collect();
        reply.extend([
            "windows".to_owned(),
            format!("{{\"wa\":\"{}\"}}", micros(86_400)),
        ]);
        Head::parse("ct_1", &reply, at(0)).expect("parses")
    }

    #[test]
    fn a_message_in_an_open_conversation_guards_on_its_facts_and_writes_relatively() {
        let head = stored("web");
        assert_eq!(
            head.latest.as_ref().map(|latest| latest.windows.len()),
            Some(1)
        );
        let event = inbound("web", at(60));
        let text = text("[\"h\"]");
        let plan = plan(&head, &event, &policy(), &text, None).expect("plan");
        assert_eq!(plan.conversation_id, "cv_1");
        assert!(!plan.opened && plan.close_entry.is_empty());
        let ops = |list: &[Op]| -> Vec<String> {
            list.iter()
                .map(|op| format!("{} {} {}", op.target, op.op, op.field))
                .collect()
        };
        let guards = ops(&plan.guards);
        for expected in [
            "c eq hs",
            "c eq latest",
            "l eq status",
            "l eq sv",
            "l gt last_at",
            "l eq current",
        ] {
            assert!(
                guards.contains(&expected.to_owned()),
                "{expected} in {guards:?}"
            );
        }
        let writes = ops(&plan.writes);
        for expected in [
            "v inc messages",
            "v max last_at",
            "v keep first_in",
            "v keep awaiting",
            "v set w:wa",
            "v del windows",
            "v inc sv",
        ] {
            assert!(
                writes.contains(&expected.to_owned()),
                "{expected} in {writes:?}"
            );
        }
        assert!(
            !writes.iter().any(|write| write.contains("handles")),
            "{writes:?}"
        );
        // The script answers the relative writes' values: the stored figures win.
        let at_us = at(60).as_microsecond().to_string();
        let first = at(0).as_microsecond().to_string();
        // In the order of the writes: sv, messages, last_at, reply_until, first_in,
        // awaiting.
        let values = [
            "4".to_owned(),
            "7".to_owned(),
            at_us.clone(),
            String::new(),
            format!("={first}"),
            format!("+{at_us}"),
        ];
        assert!(short_form(&plan).is_none(), "windows moved: the list form");
        let (ingested, head) = plan.finish("ct_1", &values, Vec::new()).expect("finish");
        assert_eq!(ingested.conversation.messages, 7);
        assert!(!ingested.first_inbound);
        assert_eq!(ingested.conversation.awaiting_since, Some(at(60)));
        let latest = head.latest.as_ref().expect("latest");
        assert_eq!(latest.sv.as_deref(), Some("4"));
        assert!(!latest.legacy_windows);

        // The next message only moves counters: the short form, the same values.
        let next = inbound("web", at(61));
        let plan = super::plan(&head, &next, &policy(), &text, None).expect("plan");
        let (form, short) = short_form(&plan).expect("the short form");
        assert_eq!(form, "F");
        let next_us = at(61).as_microsecond().to_string();
        let threshold = (at(61).as_microsecond() - 86_400_000_000).to_string();
        assert_eq!(short[..3], ["[\"h\"]", "cv_1", "4"]);
        assert_eq!(short[3], threshold);
        assert_eq!(short[4], "web");
        assert_eq!(short[5], next_us);
        assert_eq!(short[7], next_us, "first_in, kept when absent");
        let values: Vec<String> = plan.writes.iter().map(|op| op.value.to_string()).collect();
        assert_eq!(values[1], short[5]);
        assert_eq!(values[2], short[6]);

        // With a referral: the `R` form, the referral last.
        let mut with_ad = inbound("web", at(62));
        with_ad.referral = Some(crate::store::rules::tests::referral("ad-1"));
        let text = EventText {
            referral: r#"{"ad":"ad-1"}"#,
            ..text
        };
        let plan = super::plan(&head, &with_ad, &policy(), &text, None).expect("plan");
        let (form, short) = short_form(&plan).expect("the short form");
        assert_eq!(form, "R");
        assert_eq!(short.len(), 10);
        assert_eq!(short[9], r#"{"ad":"ad-1"}"#);
    }

    #[test]
    fn an_idle_conversation_is_closed_and_a_new_one_written_whole() {
        let head = stored("web");
        let event = inbound("wa", at(2 * 86_400));
        let text = text("[\"h\"]");
        let plan = plan(&head, &event, &policy(), &text, None).expect("plan");
        assert!(plan.opened);
        assert_eq!(plan.conversation_id, "cv_new");
        assert!(plan.close_entry.contains("conversation.closed"));
        assert!(plan.guards.contains(&Op::new(
            "l",
            "le",
            "last_at",
            (at(2 * 86_400).as_microsecond() - 86_400_000_000).to_string()
        )));
        assert!(
            plan.writes
                .contains(&Op::new("l", "set", "status", "closed"))
        );
        assert!(
            plan.writes
                .contains(&Op::new("c", "set", "latest", "cv_new"))
        );
        assert!(plan.writes.contains(&Op::new("v", "set", "messages", "1")));
        assert!(
            plan.timeline
                .starts_with("{\"type\":\"conversation.started\"")
        );
        let (ingested, _) = plan.finish("ct_1", &[], Vec::new()).expect("finish");
        assert!(ingested.started && ingested.first_inbound);
        assert_eq!(ingested.conversation.contact_id, "ct_1");
    }

    #[test]
    fn a_contact_nobody_wrote_is_made_and_guarded_on_having_no_conversation() {
        let head = Head::unknown("ct_9", at(0));
        let event = inbound("web", at(0));
        let text = text("[\"h\"]");
        let plan = plan(&head, &event, &policy(), &text, None).expect("plan");
        assert!(plan.opened);
        assert!(plan.guards.contains(&Op::new("c", "no", "latest", "")));
        assert!(plan.guards.contains(&Op::new("c", "no", "handles", "")));
        assert!(plan.writes.contains(&Op::new("c", "set", "hs", "[\"h\"]")));
        let created = at(0).as_microsecond().to_string();
        let (ingested, head) = plan
            .finish("ct_home", &[format!("+{created}")], Vec::new())
            .expect("finish");
        assert_eq!(ingested.contact.id, "ct_home", "the owner the script made");
        assert_eq!(head.contact.id, "ct_home");
        assert!(kept("x").is_err(), "a keep answer starts with + or =");
    }
}
