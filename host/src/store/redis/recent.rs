//! The last messages of a contact's latest conversation as this instance holds them, so
//! that apply.lua (an inbound event) and change.lua (a business message) answer only the
//! ones it lacks (those other writers added since), not the whole history depth with
//! every event: on a known sender's next message that is none.
//!
//! A message's *position* is its number in its conversation, counting from 1: the
//! conversation's `messages` field is the position of its last one. Every message adds
//! one history entry and one to `messages` in the same script, and history lists lose
//! entries only from the front (cap, retention), so the entries from a position on are
//! the list's tail, the same for every reader.

use std::sync::Arc;

use jiff::Timestamp;

use crate::event::HistoryEntry;

/// Messages `through − entries.len() + 1 ..= through` of one conversation, oldest first.
#[derive(Debug, Clone)]
pub(super) struct Recent {
    conversation_id: String,
    /// The position of the last entry.
    through: u64,
    /// How many entries the history kept when this was made: a different depth asks for
    /// everything again.
    keep: usize,
    entries: Vec<Arc<HistoryEntry>>,
    /// About what the entries weigh, in bytes.
    bytes: u64,
}

/// What a script's answer to an event says of the history, with what the caller knew.
#[derive(Debug)]
pub(super) struct Answered<'a> {
    /// The conversation the event landed on.
    pub(super) conversation_id: &'a str,
    /// The position through which the caller held its messages (0: none).
    pub(super) known: u64,
    /// Its `messages` after the event.
    pub(super) count: u64,
    /// The messages after `known` the answer carried (the event's own excluded), oldest
    /// first.
    pub(super) fetched: Vec<HistoryEntry>,
    /// The event's own message.
    pub(super) own: Option<&'a HistoryEntry>,
    /// How many entries the history keeps.
    pub(super) keep: usize,
    /// Entries before this time are gone (message retention).
    pub(super) cutoff: Option<Timestamp>,
}

impl Recent {
    /// The position through which `recent` holds conversation `conversation_id`'s
    /// messages for a history of `keep` entries; 0 when it holds none of them.
    pub(super) fn known(recent: Option<&Recent>, conversation_id: &str, keep: usize) -> u64 {
        recent
            .filter(|recent| recent.conversation_id == conversation_id && recent.keep == keep)
            .map_or(0, |recent| recent.through)
    }

    /// The last messages after an event: those of `before` still among the last `keep`
    /// (when it held the conversation through `answered.known`), the fetched ones, the
    /// event's own; at most `keep`, none older than the cutoff at the front (as the store
    /// drops them).
    pub(super) fn after(before: Option<&Recent>, answered: Answered<'_>) -> Recent {
        let Answered {
            conversation_id,
            known,
            count,
            fetched,
            own,
            keep,
            cutoff,
        } = answered;
        let mut entries: Vec<Arc<HistoryEntry>> = Vec::with_capacity(keep + 1);
        let held = before.filter(|before| {
            known > 0
                && before.through == known
                && before.conversation_id == conversation_id
                && known <= count
                && known + keep as u64 >= count
        });
        if let Some(before) = held {
            entries.extend(before.entries.iter().cloned());
        }
        entries.extend(fetched.into_iter().map(Arc::new));
        entries.extend(own.cloned().map(Arc::new));
        let over = entries.len().saturating_sub(keep);
        entries.drain(..over);
        if let Some(cutoff) = cutoff {
            let old = entries.iter().take_while(|entry| entry.at < cutoff).count();
            entries.drain(..old);
        }
        let bytes = entries.iter().map(|entry| weight(entry)).sum();
        Recent {
            conversation_id: conversation_id.to_owned(),
            through: count,
            keep,
            entries,
            bytes,
        }
    }

    /// About what the entries weigh, in bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The messages, oldest first, as an event carries them.
    pub(super) fn history(&self) -> Vec<HistoryEntry> {
        self.entries.iter().map(|entry| (**entry).clone()).collect()
    }
}

/// About what one entry weighs in memory, in bytes: its strings and the struct.
fn weight(entry: &HistoryEntry) -> u64 {
    let strings = entry.event_id.len()
        + entry.channel.len()
        + entry.external_id.as_ref().map_or(0, String::len)
        + entry.text.as_ref().map_or(0, String::len)
        + entry.parts.iter().map(String::len).sum::<usize>();
    (strings + std::mem::size_of::<HistoryEntry>() + 16) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Direction;

    fn message(n: u64) -> HistoryEntry {
        HistoryEntry {
            event_id: format!("ev{n}"),
            at: Timestamp::from_second(1_700_000_000 + n as i64).expect("valid time"),
            channel: "webchat".into(),
            direction: Direction::Inbound,
            external_id: None,
            text: Some(format!("message {n}")),
            parts: Vec::new(),
        }
    }

    fn ids(recent: &Recent) -> Vec<String> {
        recent.history().into_iter().map(|m| m.event_id).collect()
    }

    fn answered<'a>(
        known: u64,
        count: u64,
        fetched: &[u64],
        own: Option<&'a HistoryEntry>,
    ) -> Answered<'a> {
        Answered {
            conversation_id: "cv1",
            known,
            count,
            fetched: fetched.iter().map(|&n| message(n)).collect(),
            own,
            keep: 3,
            cutoff: None,
        }
    }

    #[test]
    fn a_first_answer_then_own_messages_keep_the_last_ones() {
        let three = message(3);
        let first = Recent::after(None, answered(0, 3, &[1, 2], Some(&three)));
        assert_eq!(ids(&first), ["ev1", "ev2", "ev3"]);
        // The copy's weight counts the messages it holds (their text included).
        let one = Recent::after(None, answered(0, 1, &[1], None));
        assert!(first.bytes() >= 3 * "message 1".len() as u64 && first.bytes() > one.bytes());
        assert_eq!(Recent::known(Some(&first), "cv1", 3), 3);
        assert_eq!(
            Recent::known(Some(&first), "cv2", 3),
            0,
            "another conversation"
        );
        assert_eq!(Recent::known(Some(&first), "cv1", 5), 0, "another depth");
        let four = message(4);
        let next = Recent::after(Some(&first), answered(3, 4, &[], Some(&four)));
        assert_eq!(ids(&next), ["ev2", "ev3", "ev4"]);
    }

    #[test]
    fn messages_other_writers_added_come_between() {
        let before = Recent::after(None, answered(0, 2, &[1, 2], None));
        let five = message(5);
        let after = Recent::after(Some(&before), answered(2, 5, &[3, 4], Some(&five)));
        assert_eq!(ids(&after), ["ev3", "ev4", "ev5"]);
        // An event without a message: the others' messages only.
        let later = Recent::after(Some(&after), answered(5, 6, &[6], None));
        assert_eq!(ids(&later), ["ev4", "ev5", "ev6"]);
    }

    #[test]
    fn what_was_held_is_not_trusted_beyond_what_it_says() {
        let before = Recent::after(None, answered(0, 2, &[1, 2], None));
        // The caller said it knew nothing: only the answer counts.
        let fresh = Recent::after(Some(&before), answered(0, 9, &[8], None));
        assert_eq!(ids(&fresh), ["ev8"]);
        // Held entries that are no longer among the last ones are not used, even when the
        // answer is short (the store dropped some).
        let gap = Recent::after(Some(&before), answered(2, 9, &[9], None));
        assert_eq!(ids(&gap), ["ev9"]);
    }

    #[test]
    fn old_messages_go_from_the_front() {
        let mut both = answered(0, 3, &[1, 2, 3], None);
        both.cutoff = Some(message(2).at);
        assert_eq!(ids(&Recent::after(None, both)), ["ev2", "ev3"]);
    }
}
