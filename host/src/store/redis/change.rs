//! The context rules' decisions on a business message and on an idle conversation, as
//! change.lua takes them: guards on the facts the decision read, and the writes.
//!
//! The rules decide in Rust ([`crate::store::rules`], as for inbound events in plan.rs);
//! the script checks and writes. A guard that fails means another writer moved the
//! conversation since it was read: the caller reads it again and decides again.

use std::time::Duration;

use jiff::Timestamp;

use super::plan::{Head, Op, timeline_json};
use super::{StoreError, micros, owed_record};
use crate::event::{ConversationStatus, HistoryEntry};
use crate::store::model::{Conversation, owed_closed_key};
use crate::store::rules;

/// One change of a contact's conversation, as change.lua takes it.
#[derive(Debug)]
pub(super) struct Change {
    /// The conversation changed.
    pub(super) conversation_id: String,
    /// The history entry (`"<time µs> <JSON>"`) or `""`.
    pub(super) history: String,
    /// The timeline entries it adds (JSON, `\x1e`-joined).
    pub(super) timeline: String,
    /// The owed record's field and the record (see `owed_record`).
    pub(super) owed: (String, String),
    /// Facts the decision read, checked before anything is written.
    pub(super) guards: Vec<Op<'static>>,
    /// The writes.
    pub(super) writes: Vec<Op<'static>>,
}

/// What the sweeper finds of a contact's latest conversation.
#[derive(Debug)]
pub(super) enum Sweep {
    /// Nothing open.
    Gone,
    /// Still active: its latest activity (the index missed it).
    Active(Timestamp),
    /// Idle: this closes it.
    Close(Change),
}

/// What the rules decide for the contact `head` describes when the sweeper looks at it
/// at `now`; a close owes `tail` (see `owed_tail`), committed at `committed`.
pub(super) fn sweep(
    head: &Head,
    now: Timestamp,
    inactivity: Duration,
    committed: Timestamp,
    tail: &str,
) -> Result<Sweep, StoreError> {
    let Some((conversation, touched)) = head.latest() else {
        return Ok(Sweep::Gone);
    };
    if conversation.status != ConversationStatus::Open {
        return Ok(Sweep::Gone);
    }
    let touched = touched.unwrap_or(conversation.last_activity_at);
    if rules::is_active(conversation, touched, now, inactivity) {
        return Ok(Sweep::Active(conversation.last_activity_at.max(touched)));
    }
    let id = conversation.id.clone();
    // Idle means no message by either clock up to `now − inactivity`: both stay so.
    let cutoff = (now.as_microsecond() - micros(inactivity)).to_string();
    let guards = vec![
        Op::new("c", "eq", "latest", id.clone()),
        Op::new("v", "eq", "status", "open"),
        Op::new("v", "le", "last_at", cutoff.clone()),
        Op::new("v", "le", "touched_at", cutoff),
    ];
    let entry = rules::close(&mut conversation.clone(), now);
    let writes = vec![
        Op::new("v", "set", "status", "closed"),
        Op::new("v", "set", "closed_at", now.as_microsecond().to_string()),
        // Instances' copies of the conversation are out of date (see plan.rs).
        Op::new("v", "inc", "sv", "1"),
    ];
    Ok(Sweep::Close(Change {
        owed: (
            owed_closed_key(&id),
            owed_record(committed.as_microsecond(), &id, false, None, tail),
        ),
        conversation_id: id,
        history: String::new(),
        timeline: timeline_json(&entry)?,
        guards,
        writes,
    }))
}

/// What the rules decide for `message`, which the business sent in `conversation` (as
/// read), encoded as `entry_json`; received at `now`, it owes `owed` (field and tail).
pub(super) fn outbound(
    mut conversation: Conversation,
    message: &HistoryEntry,
    entry_json: &str,
    now: Timestamp,
    owed: (String, &str),
) -> Result<Change, StoreError> {
    let before = conversation.clone();
    let entry = rules::apply_outbound(&mut conversation, message);
    let time = |at: Timestamp| at.as_microsecond().to_string();
    // The timeline entry is on the channel read.
    let guards = vec![Op::new(
        "v",
        "eq",
        "current",
        before.current_channel.clone(),
    )];
    // Relative where other instances move the same fields.
    let mut writes = vec![
        Op::new(
            "v",
            "inc",
            "messages",
            (conversation.messages - before.messages).to_string(),
        ),
        Op::new("v", "max", "last_at", time(conversation.last_activity_at)),
        Op::new("v", "set", "touched_at", time(now)),
    ];
    if conversation.awaiting_since.is_none() {
        writes.push(Op::new("v", "del", "awaiting", ""));
    }
    let at = message.at.as_microsecond();
    let (field, tail) = owed;
    Ok(Change {
        history: format!("{at} {entry_json}"),
        timeline: timeline_json(&entry)?,
        owed: (
            field,
            owed_record(now.as_microsecond(), &conversation.id, false, None, tail),
        ),
        conversation_id: conversation.id,
        guards,
        writes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Direction;
    use crate::store::rules::tests::message;

    fn conversation(at: Timestamp) -> Conversation {
        let (mut conversation, _) = rules::opened("cv1".into(), "ct1", "web", at);
        conversation.messages = 3;
        conversation.awaiting_since = Some(at);
        conversation
    }

    fn op(target: &'static str, op: &'static str, field: &str, value: &str) -> Op<'static> {
        Op::new(target, op, field.to_owned(), value.to_owned())
    }

    #[test]
    fn a_business_message_counts_answers_and_is_guarded_on_its_channel() {
        let at = Timestamp::from_second(1_000).expect("time");
        let sent = Timestamp::from_second(1_100).expect("time");
        let ingest = message("web", Direction::Outbound, sent);
        let entry = ingest.message.clone().expect("a message");
        let change = outbound(
            conversation(at),
            &entry,
            "{}",
            sent,
            ("out\u{1f}e1".into(), "\u{1f}payload"),
        )
        .expect("planned");
        assert_eq!(change.guards, vec![op("v", "eq", "current", "web")]);
        assert_eq!(
            change.writes,
            vec![
                op("v", "inc", "messages", "1"),
                op("v", "max", "last_at", "1100000000"),
                op("v", "set", "touched_at", "1100000000"),
                op("v", "del", "awaiting", ""),
            ]
        );
        assert_eq!(change.history, "1100000000 {}");
        assert!(change.timeline.contains(r#""type":"message""#));
        assert_eq!(change.owed.0, "out\u{1f}e1");
        assert_eq!(
            change.owed.1,
            "1100000000\u{1f}cv1\u{1f}0\u{1f}\u{1f}\u{1f}payload"
        );
    }

    /// The contact as head.lua reads it, its latest conversation `status`, last active
    /// at second `last` and touched at second `touched`.
    fn head(status: &str, last: i64, touched: i64) -> Head {
        let micros = |second: i64| (second * 1_000_000).to_string();
        let reply: Vec<String> = [
            "ct1",
            "",
            "0",
            "[]",
            "cv1",
            "",
            "contact",
            "ct1",
            "status",
            status,
            "started_at",
            "0",
            "last_at",
            &micros(last),
            "channels",
            r#"["web"]"#,
            "current",
            "web",
            "messages",
            "2",
            "touched_at",
            &micros(touched),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        Head::parse("ct1", &reply, Timestamp::UNIX_EPOCH).expect("a head")
    }

    #[test]
    fn the_sweeper_closes_what_is_idle_by_both_clocks_and_guards_on_it() {
        let now = Timestamp::from_second(10_000).expect("time");
        let inactivity = Duration::from_secs(600);
        let committed = Timestamp::from_second(10_001).expect("time");
        let sweep_of = |head: &Head| sweep(head, now, inactivity, committed, "\u{1f}closed");
        assert!(matches!(sweep_of(&head("closed", 0, 0)), Ok(Sweep::Gone)));
        // Idle by its provider's time, but received lately.
        let active = sweep_of(&head("open", 1_000, 9_500)).expect("decided");
        assert!(matches!(active, Sweep::Active(at) if at.as_second() == 9_500));
        let Ok(Sweep::Close(change)) = sweep_of(&head("open", 9_000, 9_400)) else {
            panic!("an idle conversation is closed");
        };
        assert_eq!(
            change.guards,
            vec![
                op("c", "eq", "latest", "cv1"),
                op("v", "eq", "status", "open"),
                op("v", "le", "last_at", "9400000000"),
                op("v", "le", "touched_at", "9400000000"),
            ]
        );
        assert_eq!(change.writes[0], op("v", "set", "status", "closed"));
        assert!(change.timeline.contains(r#""type":"conversation.closed""#));
        assert_eq!(change.owed.0, owed_closed_key("cv1"));
        assert!(change.owed.1.starts_with("10001000000\u{1f}cv1\u{1f}0"));
    }
}
