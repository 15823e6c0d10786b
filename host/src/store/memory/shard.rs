//! One shard of the memory store's contacts: the contacts whose id hashes to it, with
//! their conversations, latest conversation and merges. A change of one contact locks
//! its shard only.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::index::Index;
use crate::event::{ConversationStatus, HistoryEntry};
use crate::store::model::{
    Contact, Conversation, Ingest, IngestPolicy, Ingested, Merge, Person, TimelineEntry,
    probable_keys,
};
use crate::store::rules::{self, Threading, Windows};

/// Contacts and what is kept with each of them.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) contacts: HashMap<String, Contact>,
    /// Conversations of this shard's contacts (kept with the contact that opened them).
    pub(super) conversations: HashMap<String, Thread>,
    /// Contact id → its latest conversation.
    pub(super) latest: HashMap<String, String>,
    /// Contact id → its conversations, oldest first.
    pub(super) owned: HashMap<String, Vec<String>>,
    /// Absorbed contact id → survivor, while merged.
    pub(super) merged_into: HashMap<String, String>,
    /// Survivor id → merges into it (undone ones included).
    pub(super) merges: HashMap<String, Vec<Merge>>,
}

/// A conversation with its messages and timeline.
pub(super) struct Thread {
    pub(super) conversation: Conversation,
    pub(super) history: VecDeque<HistoryEntry>,
    pub(super) timeline: Vec<TimelineEntry>,
    /// Timeline entries dropped by retention (cursors count from the first entry ever).
    pub(super) trimmed: u64,
    /// Channel → end of its reply window.
    pub(super) windows: Windows,
    /// Wall-clock time of the latest message (the sweeper's idea of activity, whatever
    /// times providers report).
    pub(super) touched: Timestamp,
    /// The outcome record's version (0: none yet) and JSON.
    pub(super) outcome: (u64, Option<String>),
}

impl Shard {
    /// Contact `id`, made (empty, first seen `at`) if it does not exist yet.
    pub(super) fn ensure_contact(&mut self, id: &str, at: Timestamp) {
        if !self.contacts.contains_key(id) {
            self.contacts.insert(
                id.to_owned(),
                Contact {
                    id: id.to_owned(),
                    name: None,
                    handles: Vec::new(),
                    created_at: at,
                },
            );
        }
    }

    /// Record the sender's name and handles on contact `id`, and index them.
    pub(super) fn upsert_person(&mut self, index: &Index, id: &str, person: &Person) {
        for (key, _) in probable_keys(person.name.as_deref(), &person.handles) {
            index.add_probable(key, id);
        }
        let Some(contact) = self.contacts.get_mut(id) else {
            return;
        };
        rules::add_person(contact, person);
        for handle in std::iter::once(&person.user).chain(&person.handles) {
            // First claim wins: a handle already owned by another contact stays with it
            // (the Redis backend claims with SET NX, so both behave the same).
            if rules::identifies(handle) {
                index.claim(handle, id);
            }
        }
    }

    /// The contact's latest activity: its creation, or the latest message of any of its
    /// conversations (by event time or by when it was received).
    pub(super) fn last_activity(&self, contact: &Contact) -> Timestamp {
        self.owned
            .get(&contact.id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.conversations.get(id))
            .map(|thread| thread.conversation.last_activity_at.max(thread.touched))
            .fold(contact.created_at, Timestamp::max)
    }

    /// Record the event on the contact's latest conversation, or on a new one when the
    /// rules say so ([`rules::threading`]).
    pub(super) fn touch_conversation(
        &mut self,
        index: &Index,
        contact_id: &str,
        ingest: &Ingest,
        policy: &IngestPolicy,
    ) -> Ingested {
        let latest = self
            .latest
            .get(contact_id)
            .and_then(|id| self.conversations.get_mut(id));
        let threading = rules::threading(
            latest.as_ref().map(|thread| &thread.conversation),
            ingest.at,
            policy.inactivity,
        );
        let started = matches!(threading, Threading::Start { .. });
        let thread = match (threading, latest) {
            (Threading::Continue, Some(thread)) => thread,
            (threading, latest) => {
                if let (Threading::Start { close_latest: true }, Some(previous)) =
                    (threading, latest)
                {
                    let entry = rules::close(&mut previous.conversation, ingest.at);
                    previous.timeline.push(entry);
                }
                let thread = Thread::opened(contact_id, &ingest.channel, ingest.at);
                let id = thread.conversation.id.clone();
                index.keep_conversation(&id, contact_id);
                self.latest.insert(contact_id.to_owned(), id.clone());
                self.owned
                    .entry(contact_id.to_owned())
                    .or_default()
                    .push(id.clone());
                self.conversations.entry(id).or_insert(thread)
            }
        };
        let applied = rules::apply_inbound(&mut thread.conversation, &mut thread.windows, ingest);
        if let Some(message) = &ingest.message {
            thread.touched = Timestamp::now();
            push_history(&mut thread.history, message.clone(), policy.history_cap);
        }
        thread.timeline.extend(applied.timeline);
        thread.cap_timeline(policy.timeline_cap);
        let conversation = thread.conversation.clone();
        let history = last(&thread.history, policy.history_depth);
        let contact = self
            .contacts
            .get(contact_id)
            .cloned()
            .unwrap_or_else(|| Contact {
                id: contact_id.to_owned(),
                name: None,
                handles: Vec::new(),
                created_at: ingest.at,
            });
        Ingested {
            contact,
            conversation,
            started,
            first_inbound: applied.first_inbound,
            switched_from: applied.switched_from,
            history,
            merged: None,
        }
    }

    /// Close the open conversations of this shard idle for `inactivity` as of `now`, up
    /// to `limit`; returns each (contact, conversation after the close).
    pub(super) fn close_idle(
        &mut self,
        now: Timestamp,
        inactivity: Duration,
        limit: usize,
    ) -> Vec<(Contact, Conversation)> {
        let mut closed = Vec::new();
        for (contact_id, conversation_id) in &self.latest {
            if closed.len() >= limit {
                break;
            }
            let Some(thread) = self.conversations.get_mut(conversation_id) else {
                continue;
            };
            if thread.conversation.status == ConversationStatus::Closed
                || rules::is_active(&thread.conversation, thread.touched, now, inactivity)
            {
                continue;
            }
            let entry = rules::close(&mut thread.conversation, now);
            thread.timeline.push(entry);
            if let Some(contact) = self.contacts.get(contact_id) {
                closed.push((contact.clone(), thread.conversation.clone()));
            }
        }
        closed
    }
}

impl Thread {
    /// A conversation opened on `channel` at `at`.
    fn opened(contact_id: &str, channel: &str, at: Timestamp) -> Self {
        let (conversation, started) =
            rules::opened(crate::ids::conversation(), contact_id, channel, at);
        Thread {
            conversation,
            history: VecDeque::new(),
            timeline: vec![started],
            windows: Windows::new(),
            trimmed: 0,
            touched: Timestamp::now(),
            outcome: (0, None),
        }
    }

    /// Drop history and timeline entries older than `cutoff`.
    pub(super) fn retain(&mut self, cutoff: Timestamp) {
        while self.history.front().is_some_and(|entry| entry.at < cutoff) {
            self.history.pop_front();
        }
        let old = self
            .timeline
            .iter()
            .take_while(|entry| entry.at < cutoff)
            .count();
        self.timeline.drain(..old);
        self.trimmed += old as u64;
    }

    /// Keep at most `cap` timeline entries, dropping the oldest.
    pub(super) fn cap_timeline(&mut self, cap: usize) {
        let over = self.timeline.len().saturating_sub(cap.max(1));
        self.timeline.drain(..over);
        self.trimmed += over as u64;
    }
}

pub(super) fn push_history(history: &mut VecDeque<HistoryEntry>, entry: HistoryEntry, cap: usize) {
    history.push_back(entry);
    while history.len() > cap.max(1) {
        history.pop_front();
    }
}

pub(super) fn last(history: &VecDeque<HistoryEntry>, limit: usize) -> Vec<HistoryEntry> {
    history
        .iter()
        .skip(history.len().saturating_sub(limit))
        .cloned()
        .collect()
}
