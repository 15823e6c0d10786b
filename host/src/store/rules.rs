//! The context rules, decided once for every backend: whether an event continues the
//! contact's latest conversation or opens a new one, what the event does to that
//! conversation (channel switch, reply windows, the customer's first and unanswered
//! message, first and last touch, the timeline entries it adds), what a business message
//! and an idle close do to it, how a sender's details land on its contact, and when two
//! contacts merge or separate.
//!
//! Every function here is pure: it reads the state it is given and returns (or writes
//! into the values it is lent) what the change makes of it. A backend reads that state,
//! calls the rule and stores the result atomically; it decides nothing itself. The
//! memory store calls these under its contact's lock; the Redis store calls them on
//! what it read and has a script check that those facts still hold while it writes
//! (docs/store.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::StoreError;
use super::model::{Contact, Conversation, Ingest, Merge, Person, TimelineEntry};
use crate::event::{Attribution, ConversationStatus, Direction, Handle, HandleKind, Referral};

/// The end of each channel's reply window in one conversation (a provider such as
/// WhatsApp lets the business answer freely only for a while after the customer wrote).
pub type Windows = HashMap<String, Timestamp>;

/// Whether an event continues the contact's latest conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// The latest conversation is open and was active within the inactivity period.
    Continue,
    /// A new conversation opens. `close_latest`: the latest one is still marked open
    /// (idle, not swept yet) and closes now, at the event's time.
    Start {
        /// Whether the latest conversation closes first.
        close_latest: bool,
    },
}

/// How an event at `at` threads, given the contact's latest conversation.
pub fn threading(latest: Option<&Conversation>, at: Timestamp, inactivity: Duration) -> Threading {
    match latest {
        Some(conversation)
            if is_active(conversation, conversation.last_activity_at, at, inactivity) =>
        {
            Threading::Continue
        }
        Some(conversation) => Threading::Start {
            close_latest: conversation.status == ConversationStatus::Open,
        },
        None => Threading::Start {
            close_latest: false,
        },
    }
}

/// Whether the open conversation saw activity (its latest message, or `touched`: when
/// that message was received, whatever time its provider reported) within `inactivity`
/// before `now`. What is not active is idle: the next event opens a new conversation,
/// and the sweeper closes it.
pub fn is_active(
    conversation: &Conversation,
    touched: Timestamp,
    now: Timestamp,
    inactivity: Duration,
) -> bool {
    let last = conversation.last_activity_at.max(touched);
    let idle = now.duration_since(last);
    conversation.status == ConversationStatus::Open && idle.as_secs_f64() < inactivity.as_secs_f64()
}

/// A conversation opened on `channel` at `at`, with its first timeline entry.
pub fn opened(
    id: String,
    contact_id: &str,
    channel: &str,
    at: Timestamp,
) -> (Conversation, TimelineEntry) {
    let conversation = Conversation {
        id,
        contact_id: contact_id.to_owned(),
        status: ConversationStatus::Open,
        started_at: at,
        last_activity_at: at,
        channels_used: vec![channel.to_owned()],
        current_channel: channel.to_owned(),
        previous_channel: None,
        messages: 0,
        reply_window_until: None,
        attribution: Attribution::default(),
        first_inbound_at: None,
        awaiting_since: None,
    };
    (
        conversation,
        TimelineEntry::new("conversation.started", at, channel),
    )
}

/// Close `conversation` at `at`; returns its `conversation.closed` timeline entry.
pub fn close(conversation: &mut Conversation, at: Timestamp) -> TimelineEntry {
    conversation.status = ConversationStatus::Closed;
    TimelineEntry::new("conversation.closed", at, &conversation.current_channel)
}

/// What an inbound event did to its conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The channel the conversation was on before, when the event switched channel.
    pub switched_from: Option<String>,
    /// Whether the event is the customer's first message in the conversation.
    pub first_inbound: bool,
    /// Whether the event opened (or renewed) its channel's reply window.
    pub window_opened: bool,
    /// Whether the event's referral is a new touch (not a repeat of the last one).
    pub touched: bool,
    /// The timeline entries the event adds, in order.
    pub timeline: Vec<TimelineEntry>,
}

/// Apply an inbound event (a message, a referral, or both) to its conversation and the
/// conversation's reply windows.
pub fn apply_inbound(
    conversation: &mut Conversation,
    windows: &mut Windows,
    ingest: &Ingest,
) -> Applied {
    let mut applied = Applied::default();
    if let Some(message) = &ingest.message {
        if conversation.current_channel != ingest.channel {
            let previous =
                std::mem::replace(&mut conversation.current_channel, ingest.channel.clone());
            conversation.previous_channel = Some(previous.clone());
            let mut entry =
                TimelineEntry::new("conversation.channel_switched", ingest.at, &ingest.channel);
            entry.previous_channel = Some(previous.clone());
            applied.timeline.push(entry);
            applied.switched_from = Some(previous);
        }
        if !conversation.channels_used.contains(&ingest.channel) {
            conversation.channels_used.push(ingest.channel.clone());
        }
        conversation.messages += 1;
        conversation.last_activity_at = conversation.last_activity_at.max(ingest.at);
        // Reply windows are per channel; the conversation shows the current channel's.
        if let Some(until) = ingest
            .reply_window
            .and_then(|window| ingest.at.checked_add(window).ok())
        {
            windows.insert(ingest.channel.clone(), until);
            applied.window_opened = true;
        }
        conversation.reply_window_until = windows.get(&ingest.channel).copied();
        applied.first_inbound = note_direction(conversation, message.direction, ingest.at);
        let mut entry = TimelineEntry::new("message", ingest.at, &ingest.channel);
        entry.message = Some(message.clone());
        applied.timeline.push(entry);
    }
    if let Some(referral) = &ingest.referral
        && !repeats_last_touch(&conversation.attribution, referral)
    {
        touch(&mut conversation.attribution, referral);
        let mut entry = TimelineEntry::new("referral", ingest.at, &ingest.channel);
        entry.referral = Some(referral.clone());
        applied.timeline.push(entry);
        applied.touched = true;
    }
    applied
}

/// Whether `referral` is the conversation's last touch seen again: the same source,
/// channel, ad, campaign, click ids, UTM, page and payload, whenever. Every message a
/// visitor sends from one landing page carries the page's referral; that is one touch,
/// dated when it was first seen, not one per message.
fn repeats_last_touch(attribution: &Attribution, referral: &Referral) -> bool {
    let Some(last) = attribution.last_touch.as_deref() else {
        return false;
    };
    // Every field but the time, named so that a new field is not forgotten here.
    let Referral {
        source,
        channel,
        channel_kind,
        at: _,
        ad_id,
        campaign,
        click_id,
        utm,
        url,
        referrer,
        ref_payload,
        headline,
        body,
        media_url,
    } = referral;
    *source == last.source
        && *channel == last.channel
        && *channel_kind == last.channel_kind
        && *ad_id == last.ad_id
        && *campaign == last.campaign
        && *click_id == last.click_id
        && *utm == last.utm
        && *url == last.url
        && *referrer == last.referrer
        && *ref_payload == last.ref_payload
        && *headline == last.headline
        && *body == last.body
        && *media_url == last.media_url
}

/// Apply a message the business sent at `at`; returns its timeline entry (on the
/// conversation's current channel).
pub fn apply_outbound(
    conversation: &mut Conversation,
    message: &crate::event::HistoryEntry,
) -> TimelineEntry {
    conversation.messages += 1;
    conversation.last_activity_at = conversation.last_activity_at.max(message.at);
    note_direction(conversation, Direction::Outbound, message.at);
    let mut entry = TimelineEntry::new("message", message.at, &conversation.current_channel);
    entry.message = Some(message.clone());
    entry
}

/// The facts the outcome rules read: the customer's first message, and the first one
/// the business has not answered yet (cleared by any business message). Returns whether
/// this is the customer's first message.
fn note_direction(conversation: &mut Conversation, direction: Direction, at: Timestamp) -> bool {
    match direction {
        Direction::Inbound => {
            conversation.awaiting_since.get_or_insert(at);
            let first = conversation.first_inbound_at.is_none();
            conversation.first_inbound_at.get_or_insert(at);
            first
        }
        Direction::Outbound => {
            conversation.awaiting_since = None;
            false
        }
    }
}

/// First touch is the first referral seen in the conversation, last touch the latest.
fn touch(attribution: &mut Attribution, referral: &Arc<Referral>) {
    if attribution.first_touch.is_none() {
        attribution.first_touch = Some(referral.clone());
    }
    attribution.last_touch = Some(referral.clone());
}

/// Record the sender's latest name and every handle it reported on its contact (a
/// handle seen verified stays verified). Returns whether the contact changed.
pub fn add_person(contact: &mut Contact, person: &Person) -> bool {
    in_place(contact, |contact| person_added(contact, person))
}

/// [`add_person`] on a contact copied only if the sender adds something to it (a known
/// sender, the common case, adds nothing).
pub fn person_added(contact: &mut Cow<'_, Contact>, person: &Person) -> bool {
    let mut changed = false;
    if person.name.is_some() && contact.name != person.name {
        contact.to_mut().name.clone_from(&person.name);
        changed = true;
    }
    for handle in std::iter::once(&person.user).chain(&person.handles) {
        changed |= handle_added(contact, handle);
    }
    changed
}

/// Add `handle` to the contact (verified wins; a known handle keeps its place). Returns
/// whether the contact changed.
pub fn add_handle(contact: &mut Contact, handle: &Handle) -> bool {
    in_place(contact, |contact| handle_added(contact, handle))
}

fn handle_added(contact: &mut Cow<'_, Contact>, handle: &Handle) -> bool {
    match contact
        .handles
        .iter()
        .position(|known| known.same_as(handle))
    {
        Some(at) if handle.verified && !contact.handles[at].verified => {
            contact.to_mut().handles[at].verified = true;
            true
        }
        Some(_) => false,
        None => {
            contact.to_mut().handles.push(handle.clone());
            true
        }
    }
}

/// Run a copy-on-change `rule` on `contact` itself.
fn in_place(contact: &mut Contact, rule: impl FnOnce(&mut Cow<'_, Contact>) -> bool) -> bool {
    let mut copy = Cow::Borrowed(&*contact);
    let changed = rule(&mut copy);
    if let Cow::Owned(changed) = copy {
        *contact = changed;
    }
    changed
}

/// Whether a handle identifies its contact (it is indexed: a later event carrying it
/// finds the contact): the channel user id, and phones and e-mails the provider
/// verified. The first contact to claim a handle keeps it.
pub fn identifies(handle: &Handle) -> bool {
    handle.verified || handle.kind == HandleKind::ChannelUser
}

/// Whether `merge` is the live (not undone) merge of contact `absorbed`.
pub fn is_live_merge_of(merge: &Merge, absorbed: &str) -> bool {
    merge.absorbed == absorbed && merge.undone_at.is_none()
}

/// The live merge of contact `absorbed` among a survivor's merges.
pub fn live_merge<'m>(
    merges: impl IntoIterator<Item = &'m Merge>,
    absorbed: &str,
) -> Option<&'m Merge> {
    merges
        .into_iter()
        .find(|merge| is_live_merge_of(merge, absorbed))
}

/// What merging one contact into another does.
#[derive(Debug, PartialEq)]
pub enum Merging<'m> {
    /// They are merged already: the live merge (merging again is a retry).
    Existing(&'m Merge),
    /// A new merge; [`absorb`] adds its handles to the survivor.
    New(Merge),
}

/// One side of a merge as stored: the contact, and the contact it is merged into.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The contact.
    pub contact: &'a Contact,
    /// The contact it is merged into, if any.
    pub merged_into: Option<&'a str>,
}

/// Merge `absorbed` into `survivor` (with `merges`, the survivor's merges), on
/// `evidence` at `at`. A contact merged into another can be neither: the survivor's
/// survivor takes the merge instead.
pub fn merge<'m>(
    survivor: Side<'_>,
    merges: impl IntoIterator<Item = &'m Merge>,
    absorbed: Side<'_>,
    evidence: &str,
    at: Timestamp,
) -> Result<Merging<'m>, StoreError> {
    let (survivor_id, absorbed_id) = (&survivor.contact.id, &absorbed.contact.id);
    if survivor_id == absorbed_id {
        return Err(StoreError::Conflict(
            "a contact cannot be merged into itself".into(),
        ));
    }
    if let Some(merge) = live_merge(merges, absorbed_id) {
        return Ok(Merging::Existing(merge));
    }
    if let Some(into) = absorbed.merged_into {
        return Err(StoreError::Conflict(format!(
            "contact `{absorbed_id}` is merged into `{into}`"
        )));
    }
    if let Some(into) = survivor.merged_into {
        return Err(StoreError::Conflict(format!(
            "contact `{survivor_id}` is merged into `{into}`; merge into that one"
        )));
    }
    Ok(Merging::New(Merge::verified(
        survivor.contact,
        absorbed.contact,
        evidence,
        at,
    )))
}

/// The survivor of `merge` takes the handles that moved. Returns whether it changed.
pub fn absorb(survivor: &mut Contact, merge: &Merge) -> bool {
    let mut changed = false;
    for handle in &merge.handles {
        changed |= add_handle(survivor, handle);
    }
    changed
}

/// The survivor of an undone `merge` gives back the handles that moved. Returns whether
/// it changed.
pub fn separate(survivor: &mut Contact, merge: &Merge) -> bool {
    let before = survivor.handles.len();
    survivor
        .handles
        .retain(|have| !merge.handles.iter().any(|moved| moved.same_as(have)));
    survivor.handles.len() != before
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::HistoryEntry;
    use crate::store::model::Person;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("in range")
    }

    fn handle(kind: HandleKind, value: &str, verified: bool) -> Handle {
        Handle {
            kind,
            value: value.into(),
            verified,
        }
    }

    /// A referral of ad `ad` on web chat (shared with the Redis plan's tests).
    pub(crate) fn referral(ad: &str) -> Arc<Referral> {
        Arc::new(Referral::ad("webchat", at(0), ad))
    }

    /// A text message of user `u1` on `channel`, owing nothing (shared with the Redis
    /// plan's tests).
    pub(crate) fn message(channel: &str, direction: Direction, when: Timestamp) -> Ingest {
        Ingest {
            channel: channel.into(),
            external_id: format!("m-{}", when.as_second()),
            at: when,
            person: Person {
                user: handle(HandleKind::ChannelUser, &format!("{channel}:u1"), false),
                name: None,
                handles: Vec::new(),
            },
            message: Some(HistoryEntry {
                event_id: "ev_1".into(),
                at: when,
                channel: channel.into(),
                direction,
                external_id: None,
                text: Some("hi".into()),
                parts: Vec::new(),
            }),
            referral: None,
            reply_window: None,
            owed: None,
            merged_owed: None,
        }
    }

    fn conversation(channel: &str, when: Timestamp) -> Conversation {
        opened("cv_1".into(), "ct_1", channel, when).0
    }

    #[test]
    fn an_active_conversation_continues_and_an_idle_one_closes_for_a_new_one() {
        let latest = conversation("webchat", at(0));
        assert_eq!(threading(Some(&latest), at(3600), DAY), Threading::Continue);
        assert_eq!(
            threading(Some(&latest), at(24 * 3600), DAY),
            Threading::Start { close_latest: true }
        );
        let mut closed = latest.clone();
        let entry = close(&mut closed, at(10));
        assert_eq!(
            (entry.kind.as_str(), entry.channel.as_str()),
            ("conversation.closed", "webchat")
        );
        assert_eq!(
            threading(Some(&closed), at(20), DAY),
            Threading::Start {
                close_latest: false
            }
        );
        assert_eq!(
            threading(None, at(0), DAY),
            Threading::Start {
                close_latest: false
            }
        );
    }

    #[test]
    fn a_late_provider_time_is_still_activity_when_the_message_was_received_recently() {
        let latest = conversation("webchat", at(0));
        assert!(!is_active(&latest, at(0), at(2 * 24 * 3600), DAY));
        assert!(is_active(
            &latest,
            at(2 * 24 * 3600 - 60),
            at(2 * 24 * 3600),
            DAY
        ));
    }

    #[test]
    fn a_message_on_another_channel_switches_and_keeps_each_channels_window() {
        let mut conversation = conversation("whatsapp", at(0));
        let mut windows = Windows::new();
        let mut first = message("whatsapp", Direction::Inbound, at(0));
        first.reply_window = Some(DAY);
        let applied = apply_inbound(&mut conversation, &mut windows, &first);
        assert!(applied.first_inbound && applied.window_opened);
        assert_eq!(conversation.reply_window_until, Some(at(24 * 3600)));
        assert_eq!(conversation.awaiting_since, Some(at(0)));

        let applied = apply_inbound(
            &mut conversation,
            &mut windows,
            &message("webchat", Direction::Inbound, at(60)),
        );
        assert_eq!(applied.switched_from.as_deref(), Some("whatsapp"));
        assert!(!applied.first_inbound);
        let kinds: Vec<&str> = applied
            .timeline
            .iter()
            .map(|entry| entry.kind.as_str())
            .collect();
        assert_eq!(kinds, ["conversation.channel_switched", "message"]);
        assert_eq!(conversation.channels_used, ["whatsapp", "webchat"]);
        assert_eq!(
            conversation.reply_window_until, None,
            "web chat has no window"
        );
        assert_eq!(conversation.messages, 2);

        apply_inbound(
            &mut conversation,
            &mut windows,
            &message("whatsapp", Direction::Inbound, at(120)),
        );
        assert_eq!(
            conversation.reply_window_until,
            Some(at(24 * 3600)),
            "back on whatsapp: its window"
        );
        assert_eq!(conversation.previous_channel.as_deref(), Some("webchat"));
    }

    #[test]
    fn a_business_message_answers_the_customer_and_an_old_provider_time_does_not_go_back() {
        let mut conversation = conversation("webchat", at(100));
        let mut windows = Windows::new();
        apply_inbound(
            &mut conversation,
            &mut windows,
            &message("webchat", Direction::Inbound, at(100)),
        );
        let reply = message("webchat", Direction::Outbound, at(50));
        let entry = apply_outbound(
            &mut conversation,
            reply.message.as_ref().expect("a message"),
        );
        assert_eq!(entry.channel, "webchat");
        assert_eq!(conversation.awaiting_since, None);
        assert_eq!(conversation.first_inbound_at, Some(at(100)));
        assert_eq!(conversation.last_activity_at, at(100));
        assert_eq!(conversation.messages, 2);
    }

    #[test]
    fn first_touch_stays_and_last_touch_moves() {
        let mut conversation = conversation("webchat", at(0));
        for source in ["ad-1", "ad-2"] {
            let mut event = message("webchat", Direction::Inbound, at(0));
            event.message = None;
            event.referral = Some(referral(source));
            let applied = apply_inbound(&mut conversation, &mut Windows::new(), &event);
            assert_eq!(applied.timeline.len(), 1);
        }
        let touch = |value: &Option<Arc<Referral>>| value.as_ref().and_then(|r| r.ad_id.clone());
        assert_eq!(
            touch(&conversation.attribution.first_touch).as_deref(),
            Some("ad-1")
        );
        assert_eq!(
            touch(&conversation.attribution.last_touch).as_deref(),
            Some("ad-2")
        );
        assert_eq!(conversation.messages, 0, "a referral alone is no message");
    }

    #[test]
    fn a_repeated_touch_is_the_same_touch() {
        let mut conversation = conversation("webchat", at(0));
        let mut referred = |ad: &str, second: i64| {
            let mut event = message("webchat", Direction::Inbound, at(second));
            event.referral = Some(Arc::new(Referral::ad("webchat", at(second), ad)));
            apply_inbound(&mut conversation, &mut Windows::new(), &event)
        };
        assert!(referred("ad-1", 0).touched);
        // The same page, a minute later: the message only, the touch as first seen.
        let again = referred("ad-1", 60);
        assert!(!again.touched);
        assert_eq!(
            again
                .timeline
                .iter()
                .map(|e| e.kind.as_str())
                .collect::<Vec<_>>(),
            ["message"]
        );
        // Another ad is a new touch; then the first one again is too.
        assert!(referred("ad-2", 120).touched);
        let back = referred("ad-1", 180);
        assert!(back.touched);
        assert_eq!(back.timeline.len(), 2);
        let last = conversation
            .attribution
            .last_touch
            .as_deref()
            .expect("touched");
        assert_eq!((last.ad_id.as_deref(), last.at), (Some("ad-1"), at(180)));
        let first = conversation
            .attribution
            .first_touch
            .as_deref()
            .expect("touched");
        assert_eq!(first.at, at(0));
    }

    #[test]
    fn a_verified_handle_upgrades_the_known_one_and_the_latest_name_wins() {
        let mut contact = Contact {
            id: "ct_1".into(),
            name: Some("Ana".into()),
            handles: vec![handle(HandleKind::Phone, "+34600000000", false)],
            created_at: at(0),
        };
        let person = Person {
            user: handle(HandleKind::ChannelUser, "whatsapp:34600000000", false),
            name: Some("Ana García".into()),
            handles: vec![handle(HandleKind::Phone, "+34600000000", true)],
        };
        assert!(add_person(&mut contact, &person));
        assert_eq!(contact.name.as_deref(), Some("Ana García"));
        assert_eq!(contact.handles.len(), 2);
        assert!(contact.handles[0].verified, "upgraded in place");
        assert!(
            !add_person(&mut contact, &person),
            "nothing new the second time"
        );
        assert!(identifies(&person.user) && identifies(&person.handles[0]));
        assert!(!identifies(&handle(HandleKind::Email, "a@b.c", false)));
    }

    #[test]
    fn a_merge_is_made_once_and_refused_for_contacts_merged_elsewhere() {
        let contact = |id: &str, value: &str| Contact {
            id: id.into(),
            name: None,
            handles: vec![handle(HandleKind::Phone, value, true)],
            created_at: at(0),
        };
        let (mut ana, bea) = (
            contact("ct_a", "+34600000001"),
            contact("ct_b", "+34600000002"),
        );
        fn side(contact: &Contact) -> Side<'_> {
            Side {
                contact,
                merged_into: None,
            }
        }
        let Ok(Merging::New(merge)) = merge(side(&ana), [], side(&bea), "same phone", at(5)) else {
            panic!("a new merge");
        };
        assert_eq!(
            merge.handles, bea.handles,
            "the handles the survivor lacks move"
        );
        assert!(absorb(&mut ana, &merge) && ana.handles.len() == 2);
        let merges = [merge.clone()];
        assert_eq!(
            super::merge(side(&ana), &merges, side(&bea), "again", at(6)).expect("a retry"),
            Merging::Existing(&merges[0])
        );
        let elsewhere = Side {
            contact: &bea,
            merged_into: Some("ct_c"),
        };
        assert!(matches!(
            super::merge(side(&ana), [], elsewhere, "x", at(7)),
            Err(StoreError::Conflict(_))
        ));
        assert!(super::merge(side(&ana), [], side(&ana), "x", at(7)).is_err());
        assert!(separate(&mut ana, &merge) && ana.handles.len() == 1);
        assert!(!separate(&mut ana, &merge), "nothing left to give back");
    }
}
