//! The context rules' decisions on a business message, an idle conversation, a merge, an
//! unmerge and a linked sender's details, as change.lua takes them: guards on the facts
//! the decision read, and the writes.
//!
//! The rules decide in Rust ([`crate::store::rules`], as for inbound events in plan.rs);
//! the script checks and writes. A guard that fails means another writer moved the
//! conversation since it was read: the caller reads it again and decides again.

use std::time::Duration;

use jiff::Timestamp;

use super::plan::{Head, Op, timeline_json};
use super::{StoreError, internal, keys, micros, owed_record, parse_contact};
use crate::event::{ConversationStatus, HistoryEntry};
use crate::store::model::{Contact, Conversation, Merge, Person, owed_closed_key};
use crate::store::rules;

/// One change of a contact or one of its conversations, as change.lua takes it.
#[derive(Debug, Default)]
pub(super) struct Change {
    /// The conversation changed, `""` for none.
    pub(super) conversation_id: String,
    /// The history entry (`"<time µs> <JSON>"`) or `""`.
    pub(super) history: String,
    /// The timeline entries it adds (JSON, `\x1e`-joined).
    pub(super) timeline: String,
    /// The owed record's field and the record (see `owed_record`); `""` fields: none.
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

/// A contact's hash as a merge reads it.
#[derive(Debug)]
pub(super) struct Stored {
    /// The contact.
    pub(super) contact: Contact,
    /// The contact it is merged into.
    pub(super) merged_into: Option<String>,
    /// `handles` as stored: a handles write is guarded on it.
    handles_json: Option<String>,
    /// `mv`, the version of its merges list: every merge and unmerge increments it.
    mv: Option<String>,
}

impl Stored {
    /// The hash fields [`Stored::FIELDS`] of contact `id` (`None`: it does not exist).
    pub(super) const FIELDS: [&'static str; 6] =
        ["id", "name", "created_at", "handles", "merged_into", "mv"];

    /// Contact `id` from the values of [`Stored::FIELDS`]; `None` when it does not exist.
    pub(super) fn parse(id: &str, values: &[Option<String>]) -> Result<Option<Self>, StoreError> {
        let [Some(_), name, Some(created_at), handles, merged_into, mv] = values else {
            return Ok(None);
        };
        Ok(Some(Self {
            contact: parse_contact(
                id,
                name.as_deref().unwrap_or(""),
                created_at,
                handles.as_deref().unwrap_or("[]"),
            )?,
            merged_into: merged_into.clone(),
            handles_json: handles.clone(),
            mv: mv.clone(),
        }))
    }

    /// A contact nobody has written yet.
    fn fresh(id: &str) -> Self {
        Self {
            contact: Contact::new(id, jiff::Timestamp::UNIX_EPOCH),
            merged_into: None,
            handles_json: None,
            mv: None,
        }
    }

    /// One side of a merge, for [`rules::merge`].
    pub(super) fn side(&self) -> rules::Side<'_> {
        rules::Side {
            contact: &self.contact,
            merged_into: self.merged_into.as_deref(),
        }
    }

    /// Guards that the merges list is as read (it exists, and so does the contact).
    fn merges_guards(&self) -> Vec<Op<'static>> {
        vec![
            Op::new("c", "eq", "id", self.contact.id.clone()),
            Op::as_read("c", "mv", self.mv.clone()),
        ]
    }

    /// The guard and writes that store `after`'s handles when they changed.
    fn handles_change(&self, after: &Contact, change: &mut Change) -> Result<(), StoreError> {
        if after.handles == self.contact.handles {
            return Ok(());
        }
        change
            .guards
            .push(Op::as_read("c", "handles", self.handles_json.clone()));
        let json = serde_json::to_string(&after.handles).map_err(internal)?;
        change.writes.push(Op::new("c", "set", "handles", json));
        // The ingest's shortcut for unchanged handles no longer holds (see plan.rs).
        change.writes.push(Op::new("c", "del", "hs", ""));
        Ok(())
    }
}

/// The change recording `merge` on its survivor (as read): the record, the handles it
/// takes, and when the merge owes its event, the owed record with `tail` (see
/// `owed_tail`) committed at `at_us`. A merge found `existing` only keeps the owed record
/// again (a retry completing a merge a crash cut short: its event replaces the record's).
pub(super) fn merge(
    survivor: &Stored,
    merge: &Merge,
    existing: bool,
    owed: Option<(&str, i64)>,
) -> Result<Change, StoreError> {
    let mut change = Change {
        guards: survivor.merges_guards(),
        ..Change::default()
    };
    if let Some((tail, at_us)) = owed {
        change.owed = (
            crate::store::model::owed_merged_key(&merge.id),
            owed_record(at_us, "", false, None, tail),
        );
    }
    if existing {
        return Ok(change);
    }
    change.guards.push(Op::new("c", "no", "merged_into", ""));
    let mut after = survivor.contact.clone();
    rules::absorb(&mut after, merge);
    survivor.handles_change(&after, &mut change)?;
    change.writes.push(Op::new("c", "inc", "mv", "1"));
    let json = serde_json::to_string(merge).map_err(internal)?;
    change.writes.push(Op::new("m", "rpush", "", json));
    Ok(change)
}

/// The change undoing `merge`, element `position` of the survivor's merges list, on the
/// survivor (as read): the record marked `undone`, the handles given back, and the owed
/// record (`owed`: field, tail, commit time µs).
pub(super) fn unmerge(
    survivor: &Stored,
    position: usize,
    undone: &Merge,
    owed: (String, &str, i64),
) -> Result<Change, StoreError> {
    let (field, tail, at_us) = owed;
    let mut change = Change {
        guards: survivor.merges_guards(),
        owed: (field, owed_record(at_us, "", false, None, tail)),
        ..Change::default()
    };
    let mut after = survivor.contact.clone();
    rules::separate(&mut after, undone);
    survivor.handles_change(&after, &mut change)?;
    change.writes.push(Op::new("c", "inc", "mv", "1"));
    let json = serde_json::to_string(undone).map_err(internal)?;
    change
        .writes
        .push(Op::new("m", "lset", position.to_string(), json));
    // The handles leave the survivor: its events carrying them must be resolved again.
    for handle in &undone.handles {
        change
            .writes
            .push(Op::new("c", "del", keys::verified_field(handle), ""));
    }
    Ok(change)
}

/// The change that records a linked sender's details on its contact `id` (as read;
/// `None`: it does not exist yet and this makes it, created at `at_us`); `None` when
/// nothing changes.
pub(super) fn sender(
    id: &str,
    stored: Option<&Stored>,
    person: &Person,
    at_us: i64,
) -> Result<Option<Change>, StoreError> {
    let fresh;
    let (stored, exists) = match stored {
        Some(stored) => (stored, true),
        None => {
            fresh = Stored::fresh(id);
            (&fresh, false)
        }
    };
    let mut after = stored.contact.clone();
    if !rules::add_person(&mut after, person) && exists {
        return Ok(None);
    }
    let mut change = Change::default();
    change
        .writes
        .push(Op::new("c", "keep", "id", id.to_owned()));
    change
        .writes
        .push(Op::new("c", "keep", "created_at", at_us.to_string()));
    if after.name != stored.contact.name
        && let Some(name) = &after.name
    {
        change
            .writes
            .push(Op::new("c", "set", "name", name.clone()));
    }
    stored.handles_change(&after, &mut change)?;
    Ok(Some(change))
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

    #[test]
    fn merges_guard_on_the_merges_version_and_unmerges_give_the_handles_back() {
        let phone = crate::event::Handle {
            kind: crate::event::HandleKind::Phone,
            value: "+34600000002".into(),
            verified: true,
        };
        let values = |id: &str, handles: &str, mv: Option<&str>| {
            [Some(id), None, Some("0"), Some(handles), None, mv]
                .map(|value| value.map(str::to_owned))
        };
        let survivor = Stored::parse("ct_a", &values("ct_a", "[]", Some("4")))
            .expect("parsed")
            .expect("exists");
        let absorbed_json = serde_json::to_string(&[&phone]).expect("JSON");
        let absorbed = Stored::parse("ct_b", &values("ct_b", &absorbed_json, None))
            .expect("parsed")
            .expect("exists");
        let rules::Merging::New(record) = rules::merge(
            survivor.side(),
            [],
            absorbed.side(),
            "same phone",
            Timestamp::UNIX_EPOCH,
        )
        .expect("decided") else {
            panic!("a new merge");
        };
        let change = merge(&survivor, &record, false, None).expect("planned");
        assert_eq!(
            change.guards,
            vec![
                op("c", "eq", "id", "ct_a"),
                op("c", "eq", "mv", "4"),
                op("c", "no", "merged_into", ""),
                op("c", "eq", "handles", "[]"),
            ]
        );
        let ops: Vec<(&str, &str)> = change.writes.iter().map(|op| (op.target, op.op)).collect();
        assert_eq!(
            ops,
            [("c", "set"), ("c", "del"), ("c", "inc"), ("m", "rpush")],
            "the handles, hs, mv, the record"
        );
        assert!(change.owed.0.is_empty(), "owes nothing");
        let existing = merge(&survivor, &record, true, Some(("tail", 7))).expect("planned");
        assert!(
            existing.writes.is_empty(),
            "a retry only keeps its owed record"
        );
        assert!(existing.owed.1.ends_with("\u{1f}tail"));

        let merged = Stored::parse("ct_a", &values("ct_a", &absorbed_json, Some("5")))
            .expect("parsed")
            .expect("exists");
        let undone = unmerge(&merged, 0, &record, ("unmerged".into(), "t", 8)).expect("planned");
        assert!(undone.writes.contains(&op("c", "set", "handles", "[]")));
        assert!(
            undone
                .writes
                .contains(&op("c", "del", "v:phone:+34600000002", ""))
        );
        assert!(
            undone
                .writes
                .iter()
                .any(|op| op.op == "lset" && op.field == "0")
        );
    }

    #[test]
    fn a_linked_senders_details_are_written_only_when_they_change() {
        let person = Person {
            user: crate::event::Handle {
                kind: crate::event::HandleKind::ChannelUser,
                value: "web:v1".into(),
                verified: false,
            },
            name: Some("Ana".into()),
            handles: Vec::new(),
        };
        let made = sender("ct_s", None, &person, 9)
            .expect("planned")
            .expect("made");
        assert!(made.writes.contains(&op("c", "keep", "id", "ct_s")));
        assert!(made.writes.contains(&op("c", "keep", "created_at", "9")));
        assert!(made.writes.contains(&op("c", "set", "name", "Ana")));
        let handles = serde_json::to_string(&[&person.user]).expect("JSON");
        let values = [
            Some("ct_s"),
            Some("Ana"),
            Some("9"),
            Some(handles.as_str()),
            None,
            None,
        ]
        .map(|value| value.map(str::to_owned));
        let stored = Stored::parse("ct_s", &values).expect("parsed");
        assert!(
            sender("ct_s", stored.as_ref(), &person, 10)
                .expect("planned")
                .is_none(),
            "nothing new"
        );
    }
}
