//! One conformance suite for every `ContextStore` backend: the memory store, the engine
//! on a backend written here that keeps bytes (what a new backend looks like), a single
//! redis-server and a 3-master Redis Cluster (both started here on free loopback ports).
//! Each case uses its own channel names, so cases share one server without interfering.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use omnigate::event::{Direction, Handle, HandleKind, HistoryEntry, Referral, ReferralSource};
use omnigate::store::engine::{Doc, Versioned, Write};
use omnigate::store::{
    Backend, ContextStore, Engine, Ingest, IngestPolicy, MemoryStore, Outbound, Person, RedisStore,
    RedisTls, RollupWrite, StoreError,
};
use omnigate_tests::eventually;
use omnigate_tests::redis::{RedisCluster, RedisServer};

fn policy() -> IngestPolicy {
    IngestPolicy {
        timeline_cap: 1_000,
        dedupe_ttl: Duration::from_secs(3600),
        inactivity: Duration::from_secs(24 * 3600),
        history_cap: 3,
        history_depth: 10,
    }
}

/// A channel name unique to one case.
fn channel(name: &str) -> String {
    format!("{name}-{}", ulid::Ulid::generate())
}

/// A time with microsecond precision (what every backend keeps).
fn now() -> Timestamp {
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).expect("time")
}

fn later(at: Timestamp, hours: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_hours(hours))
        .expect("time")
}

fn handle(kind: HandleKind, value: &str, verified: bool) -> Handle {
    Handle {
        kind,
        value: value.to_owned(),
        verified,
    }
}

/// A message from `user` on `channel`.
fn message(channel: &str, user: &str, id: &str, at: Timestamp) -> Ingest {
    Ingest {
        channel: channel.to_owned(),
        external_id: id.to_owned(),
        at,
        person: Person {
            user: handle(HandleKind::ChannelUser, &format!("{channel}:{user}"), true),
            name: Some("Ana".into()),
            handles: Vec::new(),
        },
        message: Some(HistoryEntry {
            event_id: format!("evt_{id}"),
            at,
            channel: channel.to_owned(),
            direction: Direction::Inbound,
            external_id: Some(id.to_owned()),
            text: Some(format!("text {id}")),
            parts: Vec::new(),
        }),
        referral: None,
        reply_window: None,
        owed: Some(format!("payload of {id}")),
        merged_owed: None,
    }
}

/// A message the business sends in `conversation_id` (external id `id`), owing `owed`.
fn sent(
    conversation_id: &str,
    id: &str,
    channel: &str,
    at: Timestamp,
    text: &str,
    owed: &str,
) -> Outbound {
    Outbound {
        conversation_id: conversation_id.to_owned(),
        message: HistoryEntry {
            event_id: format!("evt_{id}"),
            at,
            channel: channel.to_owned(),
            direction: Direction::Outbound,
            external_id: Some(id.to_owned()),
            text: Some(text.to_owned()),
            parts: Vec::new(),
        },
        owed: owed.to_owned(),
    }
}

fn with_phone(mut ingest: Ingest, phone: &str, verified: bool) -> Ingest {
    ingest
        .person
        .handles
        .push(handle(HandleKind::Phone, phone, verified));
    if verified {
        ingest.merged_owed = Some(format!("merge payload of {}", ingest.external_id));
    }
    ingest
}

fn referral(channel: &str, campaign: &str, at: Timestamp) -> std::sync::Arc<Referral> {
    std::sync::Arc::new(Referral {
        source: ReferralSource::Ad,
        channel: channel.to_owned(),
        channel_kind: Some("messenger".to_owned()),
        at,
        ad_id: Some(format!("ad-{campaign}")),
        campaign: Some(campaign.to_owned()),
        click_id: [("fbclid".to_owned(), format!("fb-{campaign}"))].into(),
        utm: [("source".to_owned(), "instagram".to_owned())].into(),
        url: Some("https://shop.example/p?utm_source=instagram".into()),
        referrer: None,
        ref_payload: None,
        headline: None,
        body: None,
        media_url: None,
    })
}

/// A unique E.164 number (Spanish mobile range) per case.
fn phone() -> String {
    let random = ulid::Ulid::generate().random() % 100_000_000;
    format!("+346{random:08}")
}

async fn ok(store: &dyn ContextStore, ingest: Ingest) -> omnigate::store::Ingested {
    store
        .ingest(ingest, &policy())
        .await
        .expect("store answers")
        .expect("not a duplicate")
}

async fn dedupe(store: &dyn ContextStore) {
    let web = channel("web");
    let other = channel("other");
    let at = now();
    let first = ok(store, message(&web, "v1", "m1", at)).await;
    assert!(first.started);
    let again = store
        .ingest(message(&web, "v1", "m1", at), &policy())
        .await
        .expect("store answers");
    assert!(
        again.is_none(),
        "same (channel, external id) is a duplicate"
    );
    // The same provider id on another channel is another event.
    ok(store, message(&other, "v1", "m1", at)).await;
    let conversation = store
        .conversation(&first.conversation.id)
        .await
        .expect("store answers")
        .expect("exists");
    assert_eq!(conversation.messages, 1, "the duplicate was not counted");
    // A dedupe key expires after its TTL.
    let short = IngestPolicy {
        dedupe_ttl: Duration::from_millis(200),
        ..policy()
    };
    assert!(
        store
            .ingest(message(&web, "v1", "m2", at), &short)
            .await
            .expect("ok")
            .is_some()
    );
    assert!(
        store
            .ingest(message(&web, "v1", "m2", at), &short)
            .await
            .expect("ok")
            .is_none()
    );
    // Memory rotates generations: a key lives between one and two TTLs.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        store
            .ingest(message(&web, "v1", "m3", at), &short)
            .await
            .expect("ok")
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        store
            .ingest(message(&web, "v1", "m2", at), &short)
            .await
            .expect("ok")
            .is_some(),
        "an expired dedupe key no longer drops the event"
    );
}

async fn identity(store: &dyn ContextStore) {
    let web = channel("web");
    let wa = channel("wa");
    let number = phone();
    let at = now();
    let first = ok(
        store,
        with_phone(message(&web, "visitor", "w1", at), &number, true),
    )
    .await;
    let returning = ok(store, message(&web, "visitor", "w2", at)).await;
    assert_eq!(
        returning.contact.id, first.contact.id,
        "same channel user, same contact"
    );
    // Same verified phone on another channel: one contact, one conversation, a switch.
    let digits = number.trim_start_matches('+');
    let switched = ok(
        store,
        with_phone(message(&wa, digits, "a1", at), &number, true),
    )
    .await;
    assert_eq!(switched.contact.id, first.contact.id);
    assert_eq!(switched.conversation.id, first.conversation.id);
    assert!(!switched.started);
    assert_eq!(switched.switched_from.as_deref(), Some(web.as_str()));
    assert_eq!(
        switched.conversation.previous_channel.as_deref(),
        Some(web.as_str())
    );
    assert_eq!(switched.conversation.current_channel, wa);
    assert_eq!(
        switched.conversation.channels_used,
        vec![web.clone(), wa.clone()]
    );
    assert_eq!(switched.contact.user_on(&wa), Some(digits));
    assert_eq!(switched.contact.user_on(&web), Some("visitor"));
    // Back on the web: another switch; channels_used keeps first-use order.
    let back = ok(store, message(&web, "visitor", "w3", at)).await;
    assert_eq!(back.switched_from.as_deref(), Some(wa.as_str()));
    assert_eq!(
        back.conversation.channels_used,
        vec![web.clone(), wa.clone()]
    );
    // An unverified phone never links.
    let stranger = ok(
        store,
        with_phone(message(&wa, "other", "a2", at), &number, false),
    )
    .await;
    assert_ne!(stranger.contact.id, first.contact.id);
    // The stored contact lists every handle once, verified where any source verified it.
    let contact = store
        .contact(&first.contact.id)
        .await
        .expect("store answers")
        .expect("exists");
    assert_eq!(contact.name.as_deref(), Some("Ana"));
    let phones: Vec<&Handle> = contact
        .handles
        .iter()
        .filter(|h| h.kind == HandleKind::Phone)
        .collect();
    assert_eq!(phones.len(), 1);
    assert!(phones[0].verified);
    assert_eq!(contact.handles.len(), 3, "two channel users and one phone");
    assert!(store.contact("ct_nobody").await.expect("ok").is_none());
    assert!(
        store
            .conversation("cv_nothing")
            .await
            .expect("ok")
            .is_none()
    );
}

async fn threading(store: &dyn ContextStore) {
    let web = channel("web");
    let at = now();
    let first = ok(store, message(&web, "v", "t1", at)).await;
    let second = ok(store, message(&web, "v", "t2", later(at, 1))).await;
    assert_eq!(second.conversation.id, first.conversation.id);
    assert_eq!(second.conversation.messages, 2);
    assert_eq!(second.conversation.started_at, at);
    assert_eq!(second.conversation.last_activity_at, later(at, 1));
    // After the inactivity period the next message opens a new conversation.
    let next = ok(store, message(&web, "v", "t3", later(at, 30))).await;
    assert!(next.started);
    assert_ne!(next.conversation.id, first.conversation.id);
    assert_eq!(next.conversation.messages, 1);
    assert!(next.switched_from.is_none());
    let old = store
        .conversation(&first.conversation.id)
        .await
        .expect("ok")
        .expect("kept");
    assert_eq!(old.status, omnigate::event::ConversationStatus::Closed);
    // Reply windows: an inbound message on a channel with a window sets it.
    let mut windowed = message(&web, "v", "t4", later(at, 31));
    windowed.reply_window = Some(Duration::from_secs(24 * 3600));
    let result = ok(store, windowed).await;
    assert_eq!(result.conversation.reply_window_until, Some(later(at, 55)));
    // Per channel: a channel without a window shows none; switching back shows its own.
    let other = channel("sms");
    let elsewhere = ok(store, message(&other, "v-sms", "t5", later(at, 31))).await;
    assert_ne!(elsewhere.contact.id, result.contact.id, "unlinked sender");
    let mut merged = message(&other, "v-sms", "t6", later(at, 31));
    merged.person.user = handle(HandleKind::ChannelUser, &format!("{web}:v"), true);
    merged.channel = other.clone();
    let moved = ok(store, merged).await;
    assert_eq!(moved.switched_from.as_deref(), Some(web.as_str()));
    assert_eq!(
        moved.conversation.reply_window_until, None,
        "sms has no window"
    );
    let mut back = message(&web, "v", "t7", later(at, 31));
    back.reply_window = None;
    let back = ok(store, back).await;
    assert_eq!(
        back.conversation.reply_window_until,
        Some(later(at, 55)),
        "web's window"
    );
    // Outbound messages count and join the history.
    let sent = store
        .record_outbound(
            sent(
                &next.conversation.id,
                "out-1",
                &web,
                later(at, 32),
                "hello",
                "",
            ),
            &policy(),
        )
        .await
        .expect("recorded");
    assert_eq!(sent.conversation.messages, 5);
    assert_eq!(sent.conversation.last_activity_at, later(at, 32));
    assert_eq!(
        sent.history.last().map(|e| e.direction),
        Some(Direction::Outbound)
    );
    let missing = store
        .record_outbound(
            Outbound {
                conversation_id: "cv_missing".into(),
                message: sent.history[0].clone(),
                owed: String::new(),
            },
            &policy(),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

/// The payload a sweep keeps with each close.
fn closed_payload() -> String {
    "closed payload".to_owned()
}

/// The one owed record kept under `key` (whatever its age).
async fn owed_under(store: &dyn ContextStore, key: &str) -> Vec<omnigate::store::Owed> {
    let owed: Vec<omnigate::store::Owed> = store
        .stale_owed(Timestamp::MAX, 10_000)
        .await
        .expect("owed records")
        .into_iter()
        .filter(|owed| owed.key == key)
        .collect();
    assert_eq!(owed.len(), 1, "{owed:?}");
    owed
}

/// The payload of an erasure's owed record: made from what the store is about to erase.
fn erased_payload(erased: &omnigate::store::Erased) -> String {
    format!("erased {} and {:?}", erased.contact_id, erased.absorbed)
}

/// Every change that owes events keeps an owed record with it, atomically, until settled:
/// a duplicate finds it (a provider retry after a crash), the relay lists it once stale,
/// settling drops it, erasure takes it along (and keeps its own).
async fn owed_records(store: &dyn ContextStore) {
    let web = channel("web");
    let at = now();
    let first = ok(store, message(&web, "o", "o1", at)).await;
    let sender = message(&web, "o", "o1", at).person;
    let owed = store
        .owed_inbound(&sender.user, &web, "o1")
        .await
        .expect("ok")
        .expect("kept with the ingest");
    assert_eq!(owed.contact_id, first.contact.id);
    assert_eq!(owed.key, omnigate::store::owed_inbound_key(&web, "o1"));
    assert_eq!(owed.conversation_id, first.conversation.id);
    assert!(owed.started);
    assert_eq!(owed.payload, "payload of o1");
    // The retry is a duplicate for the store, and the record is still there for it.
    let again = store
        .ingest(message(&web, "o", "o1", at), &policy())
        .await
        .expect("ok");
    assert!(again.is_none(), "a duplicate");
    assert!(
        store
            .owed_inbound(&sender.user, &web, "o1")
            .await
            .expect("ok")
            .is_some()
    );
    // Not stale yet; stale once `before` is past its commit.
    let soon = Timestamp::now()
        .checked_add(SignedDuration::from_secs(1))
        .expect("time");
    let old = Timestamp::now()
        .checked_sub(SignedDuration::from_hours(1))
        .expect("time");
    let ours = |records: Vec<omnigate::store::Owed>| -> Vec<String> {
        records
            .into_iter()
            .filter(|owed| owed.contact_id == first.contact.id)
            .map(|owed| owed.key)
            .collect()
    };
    assert!(ours(store.stale_owed(old, 10_000).await.expect("ok")).is_empty());
    let second = ok(store, message(&web, "o", "o2", at)).await;
    assert!(!second.started);
    let sent = store
        .record_outbound(
            sent(
                &first.conversation.id,
                "out-o",
                &web,
                at,
                "hi",
                "sent payload",
            ),
            &policy(),
        )
        .await
        .expect("recorded");
    assert_eq!(sent.contact.id, first.contact.id);
    let mut stale = ours(store.stale_owed(soon, 10_000).await.expect("ok"));
    stale.sort();
    let mut expected = vec![
        omnigate::store::owed_inbound_key(&web, "o1"),
        omnigate::store::owed_inbound_key(&web, "o2"),
        omnigate::store::owed_outbound_key("evt_out-o"),
    ];
    expected.sort();
    assert_eq!(stale, expected);
    // Settled records are gone, for the retry and for the relay; settling twice is fine.
    let settled: Vec<(String, String)> = expected
        .iter()
        .map(|key| (first.contact.id.clone(), key.clone()))
        .collect();
    store.settle(&settled[..2]).await.expect("settled");
    store.settle(&settled[..2]).await.expect("settled again");
    assert!(
        store
            .owed_inbound(&sender.user, &web, "o1")
            .await
            .expect("ok")
            .is_none()
    );
    assert_eq!(
        ours(store.stale_owed(soon, 10_000).await.expect("ok")),
        vec![expected[2].clone()]
    );
    store.settle(&settled[2..]).await.expect("settled");
    assert!(ours(store.stale_owed(soon, 10_000).await.expect("ok")).is_empty());
    // A close keeps the conversation.closed it owes.
    let closed = store
        .close_idle(
            later(at, 48),
            Duration::from_secs(3600),
            10_000,
            &closed_payload,
        )
        .await
        .expect("ok");
    let close = closed
        .iter()
        .find(|closed| closed.conversation.id == first.conversation.id)
        .expect("closed");
    assert_eq!(
        close.owed.key,
        omnigate::store::owed_closed_key(&first.conversation.id)
    );
    assert_eq!(close.owed.payload, "closed payload");
    let stale = store.stale_owed(soon, 10_000).await.expect("ok");
    let kept = stale
        .iter()
        .find(|owed| owed.contact_id == first.contact.id)
        .expect("kept with the close");
    assert_eq!(kept.key, close.owed.key);
    assert_eq!(kept.payload, "closed payload");
    // Erasure takes what the contact owes along (its events carry its data) and keeps
    // what the erasure owes, until settled.
    let third = ok(store, message(&web, "o", "o3", later(at, 49))).await;
    assert!(third.started);
    store
        .erase(&first.contact.id, Timestamp::now(), &erased_payload)
        .await
        .expect("ok")
        .expect("erased");
    let erasure = omnigate::store::owed_erased_key(&first.contact.id);
    assert_eq!(
        ours(store.stale_owed(soon, 10_000).await.expect("ok")),
        vec![erasure.clone()]
    );
    store
        .settle(&[(first.contact.id.clone(), erasure)])
        .await
        .expect("settled");
    assert!(ours(store.stale_owed(soon, 10_000).await.expect("ok")).is_empty());
}

/// The timeline keeps `timeline_cap` entries per conversation; cursors count from the
/// first entry ever, so a page after the dropped ones starts where it should.
async fn timeline_cap(store: &dyn ContextStore) {
    let web = channel("web");
    let at = now();
    let capped = IngestPolicy {
        timeline_cap: 3,
        ..policy()
    };
    let mut conversation = String::new();
    for n in 0..5 {
        let ingested = store
            .ingest(message(&web, "tc", &format!("tc{n}"), at), &capped)
            .await
            .expect("ok")
            .expect("new");
        conversation = ingested.conversation.id;
    }
    // conversation.started + 5 messages, 3 kept: the last three messages.
    let page = store.timeline(&conversation, 0, 100).await.expect("ok");
    let texts: Vec<String> = page
        .entries
        .iter()
        .filter_map(|entry| entry.message.as_ref()?.text.clone())
        .collect();
    assert_eq!(texts, ["text tc2", "text tc3", "text tc4"], "{page:#?}");
    assert_eq!(page.entries.len(), 3);
    assert_eq!(page.next, None);
    // A message the business sends is capped the same way.
    let sent = store
        .record_outbound(
            sent(&conversation, "tc-out", &web, at, "reply", ""),
            &capped,
        )
        .await
        .expect("recorded");
    assert_eq!(sent.conversation.messages, 6);
    let page = store.timeline(&conversation, 0, 100).await.expect("ok");
    assert_eq!(page.entries.len(), 3, "{page:#?}");
    assert_eq!(
        page.entries
            .last()
            .and_then(|entry| entry.message.as_ref()?.text.clone())
            .as_deref(),
        Some("reply")
    );
    // The cursor of the first kept entry is its position among all entries ever (4).
    let from_four = store.timeline(&conversation, 4, 100).await.expect("ok");
    assert_eq!(from_four.entries, page.entries);
}

/// Contacts without a message since a time are listed for `[store] contact_retention`;
/// a contact merged into another is not (it goes with its survivor); an erased one is not.
async fn idle_contacts(store: &dyn ContextStore) {
    let web = channel("web");
    let a = ok(store, message(&web, "ia", "ia1", now())).await;
    let b = ok(store, message(&web, "ib", "ib1", now())).await;
    let soon = Timestamp::now()
        .checked_add(SignedDuration::from_secs(1))
        .expect("time");
    let earlier = now()
        .checked_sub(SignedDuration::from_hours(1))
        .expect("time");
    let listed = |ids: Vec<String>, id: &str| ids.iter().any(|listed| listed == id);
    let idle = store.idle_contacts(soon, 100_000).await.expect("ok");
    assert!(listed(idle.clone(), &a.contact.id) && listed(idle, &b.contact.id));
    let idle = store.idle_contacts(earlier, 100_000).await.expect("ok");
    assert!(!listed(idle, &a.contact.id), "active since");
    store
        .merge(&a.contact.id, &b.contact.id, "test merge", now())
        .await
        .expect("merged");
    let idle = store.idle_contacts(soon, 100_000).await.expect("ok");
    assert!(listed(idle.clone(), &a.contact.id), "the survivor");
    assert!(!listed(idle, &b.contact.id), "merged away");
    store
        .erase(&a.contact.id, Timestamp::now(), &erased_payload)
        .await
        .expect("ok")
        .expect("erased");
    let idle = store.idle_contacts(soon, 100_000).await.expect("ok");
    assert!(!listed(idle.clone(), &a.contact.id) && !listed(idle, &b.contact.id));
}

async fn history_cap(store: &dyn ContextStore) {
    let web = channel("web");
    let at = now();
    let mut last = None;
    for i in 0..5 {
        last = Some(ok(store, message(&web, "v", &format!("h{i}"), at)).await);
    }
    let last = last.expect("ingested");
    let texts = |entries: &[HistoryEntry]| -> Vec<String> {
        entries.iter().filter_map(|e| e.text.clone()).collect()
    };
    assert_eq!(texts(&last.history), vec!["text h2", "text h3", "text h4"]);
    assert_eq!(last.conversation.messages, 5, "the counter is not capped");
    let stored = store.history(&last.conversation.id, 2).await.expect("ok");
    assert_eq!(texts(&stored), vec!["text h3", "text h4"]);
    let shallow = IngestPolicy {
        history_depth: 1,
        ..policy()
    };
    let one = store
        .ingest(message(&web, "v", "h5", at), &shallow)
        .await
        .expect("ok")
        .expect("new");
    assert_eq!(texts(&one.history), vec!["text h5"]);
    assert!(matches!(
        store.history("cv_missing", 3).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn attribution(store: &dyn ContextStore) {
    let web = channel("web");
    let wa = channel("wa");
    let number = phone();
    let at = now();
    let mut first = with_phone(message(&web, "v", "r1", at), &number, true);
    first.referral = Some(referral(&web, "bf25", at));
    let one = ok(store, first).await;
    assert_eq!(
        one.conversation.attribution.first_touch,
        Some(referral(&web, "bf25", at))
    );
    assert_eq!(
        one.conversation.attribution.last_touch,
        Some(referral(&web, "bf25", at))
    );
    // No referral: both kept.
    let plain = ok(store, message(&web, "v", "r2", at)).await;
    assert_eq!(plain.conversation.attribution, one.conversation.attribution);
    // The same page's referral on a later message is the same touch: kept as first seen,
    // and the timeline gains the message only.
    let mut repeated = message(&web, "v", "r2b", later(at, 1));
    repeated.referral = Some(referral(&web, "bf25", later(at, 1)));
    let before = store
        .timeline(&one.conversation.id, 0, 100)
        .await
        .expect("ok")
        .entries
        .len();
    let again = ok(store, repeated).await;
    assert_eq!(again.conversation.attribution, one.conversation.attribution);
    let entries = store
        .timeline(&one.conversation.id, 0, 100)
        .await
        .expect("ok")
        .entries;
    assert_eq!(entries.len(), before + 1);
    assert_eq!(entries.last().map(|e| e.kind.as_str()), Some("message"));
    // A new referral on another channel: first touch kept across the switch, last moves.
    let digits = number.trim_start_matches('+');
    let mut second = with_phone(message(&wa, digits, "r3", later(at, 1)), &number, true);
    second.referral = Some(referral(&wa, "xmas", later(at, 1)));
    let two = ok(store, second).await;
    assert_eq!(two.conversation.id, one.conversation.id);
    assert_eq!(
        two.conversation.attribution.first_touch,
        Some(referral(&web, "bf25", at))
    );
    assert_eq!(
        two.conversation.attribution.last_touch,
        Some(referral(&wa, "xmas", later(at, 1)))
    );
    let stored = store
        .conversation(&one.conversation.id)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(stored.attribution, two.conversation.attribution);
    // A referral without a message (e.g. an ad click) is attribution, not a message.
    let mut referred = message(&web, "v", "r4", later(at, 2));
    referred.message = None;
    referred.referral = Some(referral(&web, "retarget", later(at, 2)));
    let three = ok(store, referred).await;
    assert_eq!(three.conversation.messages, two.conversation.messages);
    assert_eq!(
        three
            .conversation
            .attribution
            .last_touch
            .and_then(|r| r.campaign.clone()),
        Some("retarget".to_owned())
    );
}

/// Many concurrent events of one new sender (and duplicates of each): one contact, one
/// conversation, every event counted once.
async fn concurrency(store: Arc<dyn ContextStore>) {
    let web = channel("web");
    let at = now();
    let tasks = (0..40).map(|i| {
        let store = store.clone();
        let web = web.clone();
        tokio::spawn(async move {
            // Each event twice, concurrently.
            let id = format!("c{}", i / 2);
            store
                .ingest(message(&web, "burst", &id, at), &policy())
                .await
        })
    });
    let results: Vec<_> = futures_join(tasks).await;
    let accepted: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(
        accepted.len(),
        20,
        "each of 20 events accepted exactly once"
    );
    let contacts: std::collections::HashSet<_> =
        accepted.iter().map(|r| r.contact.id.clone()).collect();
    let conversations: std::collections::HashSet<_> =
        accepted.iter().map(|r| r.conversation.id.clone()).collect();
    assert_eq!(contacts.len(), 1, "one contact");
    assert_eq!(conversations.len(), 1, "one conversation");
    assert_eq!(accepted.iter().filter(|r| r.started).count(), 1);
    let id = conversations.into_iter().next().expect("one");
    let stored = store.conversation(&id).await.expect("ok").expect("exists");
    assert_eq!(stored.messages, 20);
}

async fn futures_join(
    tasks: impl Iterator<
        Item = tokio::task::JoinHandle<Result<Option<omnigate::store::Ingested>, StoreError>>,
    >,
) -> Vec<Option<omnigate::store::Ingested>> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("task").expect("store answers"));
    }
    out
}

fn person(channel: &str, user: &str) -> Person {
    message(channel, user, "unused", now()).person
}

async fn links(store: &dyn ContextStore) {
    let web = channel("web");
    let wa = channel("wa");
    let at = now();
    let a = ok(store, message(&web, "a", "l1", at)).await;
    let b = ok(store, message(&wa, "b", "l2", at)).await;
    assert_ne!(a.contact.id, b.contact.id);
    let (ca, cb) = (a.contact.id.as_str(), b.contact.id.as_str());
    // Link tokens.
    let token = omnigate::store::link::new_token();
    store
        .put_link_token(&token, ca, Duration::from_secs(3600))
        .await
        .expect("ok");
    assert_eq!(
        store.link_token(&token).await.expect("ok").as_deref(),
        Some(ca)
    );
    store.drop_link_token(&token).await.expect("ok");
    assert_eq!(store.link_token(&token).await.expect("ok"), None);
    let short = omnigate::store::link::new_token();
    store
        .put_link_token(&short, ca, Duration::from_secs(1))
        .await
        .expect("ok");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        store.link_token(&short).await.expect("ok"),
        None,
        "tokens expire"
    );
    // Merge: b's handles move to a, its events now continue a's conversation.
    let merge = store
        .merge(ca, cb, "test evidence", at)
        .await
        .expect("merged");
    assert_eq!(merge.survivor, ca);
    assert_eq!(merge.absorbed, cb);
    assert_eq!(merge.strength, omnigate::store::LinkStrength::Verified);
    let user_b = handle(HandleKind::ChannelUser, &format!("{wa}:b"), true);
    assert_eq!(merge.handles, vec![user_b.clone()]);
    let again = store.merge(ca, cb, "again", at).await.expect("idempotent");
    assert_eq!(again.id, merge.id);
    assert!(matches!(
        store.merge(cb, ca, "x", at).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.merge(ca, ca, "x", at).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.merge(ca, "ct_nobody", "x", at).await,
        Err(StoreError::NotFound { .. })
    ));
    // A retry of b's event recorded before the merge is still a duplicate.
    assert!(
        store
            .ingest(message(&wa, "b", "l2", at), &policy())
            .await
            .expect("ok")
            .is_none()
    );
    let from_b = ok(store, message(&wa, "b", "l3", at)).await;
    assert_eq!(from_b.contact.id, ca);
    assert_eq!(from_b.conversation.id, a.conversation.id);
    assert_eq!(from_b.switched_from.as_deref(), Some(web.as_str()));
    let details = store
        .contact_details(ca)
        .await
        .expect("ok")
        .expect("exists");
    assert!(details.contact.handles.contains(&user_b));
    assert_eq!(details.merges.len(), 1);
    assert_eq!(details.merges[0].evidence, "test evidence");
    assert_eq!(
        details.conversations,
        vec![a.conversation.id.clone(), b.conversation.id.clone()]
    );
    assert_eq!(
        details.latest_conversation.as_deref(),
        Some(a.conversation.id.as_str())
    );
    let absorbed = store.contact_details(cb).await.expect("ok").expect("kept");
    assert_eq!(absorbed.merged_into.as_deref(), Some(ca));
    // Unmerge: b is a contact of its own again.
    let undone = store
        .unmerge(ca, cb, later(at, 1), "unmerged payload")
        .await
        .expect("unmerged");
    assert_eq!(undone.id, merge.id);
    assert_eq!(undone.undone_at, Some(later(at, 1)));
    // The contact.unmerged it owes was kept by the same step, on the survivor.
    let owed = owed_under(store, &omnigate::store::owed_unmerged_key(&undone.id)).await;
    assert_eq!(owed[0].contact_id, ca);
    assert_eq!(owed[0].payload, "unmerged payload");
    assert_eq!(owed[0].merged.as_ref(), Some(&undone));
    assert!(matches!(
        store.unmerge(ca, cb, at, "").await,
        Err(StoreError::NotFound { .. })
    ));
    let details = store
        .contact_details(ca)
        .await
        .expect("ok")
        .expect("exists");
    assert!(!details.contact.handles.contains(&user_b));
    assert_eq!(details.merges[0].undone_at, Some(later(at, 1)));
    assert_eq!(details.conversations, vec![a.conversation.id.clone()]);
    let restored = store
        .contact_details(cb)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(restored.merged_into, None);
    let back = ok(store, message(&wa, "b", "l4", at)).await;
    assert_eq!(back.contact.id, cb);
    // link_sender: a new sender is created and merged; the survivor itself is a no-op.
    let newcomer = person(&wa, "c");
    let linked = store
        .link_sender(&newcomer, ca, "link token redeemed", at, "merged payload")
        .await
        .expect("ok")
        .expect("merged");
    assert_eq!(linked.survivor, ca);
    assert_ne!(linked.absorbed, ca);
    // The contact.merged it owes was kept by the same step, on the survivor, until the
    // message that redeemed the token is out.
    let merged_key = omnigate::store::owed_merged_key(&linked.id);
    let owed = owed_under(store, &merged_key).await;
    assert_eq!(owed[0].contact_id, ca);
    assert_eq!(owed[0].payload, "merged payload");
    assert_eq!(owed[0].merged.as_ref(), Some(&linked));
    store
        .settle(&[(ca.to_owned(), merged_key.clone())])
        .await
        .expect("settled");
    let from_c = ok(store, message(&wa, "c", "l5", at)).await;
    assert_eq!(from_c.contact.id, ca);
    assert!(
        store
            .link_sender(&newcomer, ca, "again", at, "merged payload")
            .await
            .expect("ok")
            .is_none()
    );
    // Merged back again after the unmerge: a new merge record.
    let remerged = store
        .merge(ca, cb, "second time", at)
        .await
        .expect("merged");
    assert_ne!(remerged.id, merge.id);
}

async fn erasure(store: &dyn ContextStore) {
    let web = channel("web");
    let wa = channel("wa");
    let at = now();
    let a = ok(store, message(&web, "a", "e1", at)).await;
    ok(store, message(&web, "a", "e2", at)).await;
    let b = ok(store, message(&wa, "b", "e3", at)).await;
    let token = omnigate::store::link::new_token();
    store
        .put_link_token(&token, &a.contact.id, Duration::from_secs(3600))
        .await
        .expect("ok");
    store
        .merge(&a.contact.id, &b.contact.id, "x", at)
        .await
        .expect("merged");
    let erased = store
        .erase(&a.contact.id, Timestamp::now(), &erased_payload)
        .await
        .expect("ok")
        .expect("existed");
    assert_eq!(erased.contact_id, a.contact.id);
    assert_eq!(erased.absorbed, vec![b.contact.id.clone()]);
    assert_eq!(
        erased.conversations,
        vec![a.conversation.id.clone(), b.conversation.id.clone()]
    );
    assert_eq!(erased.latest.map(|c| c.id), Some(a.conversation.id.clone()));
    // What the erasure owes outlives it: one record, on the erased contact, written
    // before anything went (so its payload saw what was erased).
    let owed: Vec<omnigate::store::Owed> = store
        .stale_owed(Timestamp::MAX, 10_000)
        .await
        .expect("owed records")
        .into_iter()
        .filter(|owed| [&a.contact.id, &b.contact.id].contains(&&owed.contact_id))
        .collect();
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert_eq!(owed[0].contact_id, a.contact.id);
    assert_eq!(owed[0].key, omnigate::store::owed_erased_key(&a.contact.id));
    assert_eq!(
        owed[0].payload,
        format!("erased {} and {:?}", a.contact.id, [&b.contact.id])
    );
    // Erasing again (the relay finishing an erasure a crash cut short) finds nothing.
    assert!(
        store
            .erase(&a.contact.id, Timestamp::now(), &erased_payload)
            .await
            .expect("ok")
            .is_none()
    );
    store
        .settle(&[(a.contact.id.clone(), owed[0].key.clone())])
        .await
        .expect("settled");
    for contact in [&a.contact.id, &b.contact.id] {
        assert!(store.contact(contact).await.expect("ok").is_none());
        assert!(store.contact_details(contact).await.expect("ok").is_none());
    }
    for conversation in [&a.conversation.id, &b.conversation.id] {
        assert!(
            store
                .conversation(conversation)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(matches!(
            store.history(conversation, 5).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    assert_eq!(
        store.link_token(&token).await.expect("ok"),
        None,
        "tokens revoked"
    );
    // Its handles resolve to nobody: the next message starts from scratch.
    let fresh = ok(store, message(&web, "a", "e4", at)).await;
    assert!(fresh.started);
    assert_ne!(fresh.contact.id, a.contact.id);
    assert_eq!(fresh.conversation.messages, 1);
    assert!(
        store
            .erase("ct_nobody", Timestamp::now(), &erased_payload)
            .await
            .expect("ok")
            .is_none()
    );
}

/// Idle conversations are closed once, even with several sweepers at once.
async fn sweeping(store: Arc<dyn ContextStore>) {
    let web = channel("web");
    // Sweep "three hours from now": a conversation is idle after an hour without a
    // message, by event time and by the time it was received.
    let at = now();
    let sweep_at = later(at, 3);
    let idle = ok(&*store, message(&web, "s", "s1", at)).await;
    let busy = ok(&*store, message(&web, "t", "s2", sweep_at)).await;
    // Opened at `at`, continued at `sweep_at`: idle is measured from the latest message.
    let chat = channel("chat");
    let continued = ok(&*store, message(&chat, "w", "w1", at)).await;
    let again_on_it = ok(&*store, message(&chat, "w", "w2", sweep_at)).await;
    assert_eq!(again_on_it.conversation.id, continued.conversation.id);
    let hour = Duration::from_secs(3600);
    let sweeps = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .close_idle(sweep_at, hour, 10_000, &closed_payload)
                .await
        })
    });
    let mut closed = Vec::new();
    for sweep in sweeps.collect::<Vec<_>>() {
        closed.extend(sweep.await.expect("task").expect("store answers"));
    }
    let ours: Vec<_> = closed
        .iter()
        .filter(|closed| closed.conversation.current_channel == web)
        .collect();
    assert_eq!(ours.len(), 1, "closed once: {ours:#?}");
    let (contact, conversation) = (&ours[0].contact, &ours[0].conversation);
    assert_eq!(conversation.id, idle.conversation.id);
    assert_eq!(contact.id, idle.contact.id);
    assert_eq!(
        conversation.status,
        omnigate::event::ConversationStatus::Closed
    );
    let stored = store
        .conversation(&idle.conversation.id)
        .await
        .expect("ok")
        .expect("kept");
    assert_eq!(stored.status, omnigate::event::ConversationStatus::Closed);
    let open = store
        .conversation(&busy.conversation.id)
        .await
        .expect("ok")
        .expect("kept");
    assert_eq!(open.status, omnigate::event::ConversationStatus::Open);
    assert!(
        closed
            .iter()
            .all(|closed| closed.conversation.id != continued.conversation.id),
        "continued conversation closed by its first message's time"
    );
    let again = store
        .close_idle(sweep_at, hour, 10_000, &closed_payload)
        .await
        .expect("ok");
    // Received just now with an old event time: not idle.
    let old = now()
        .checked_sub(SignedDuration::from_hours(2))
        .expect("time");
    let late = ok(&*store, message(&web, "u", "s4", old)).await;
    let swept = store
        .close_idle(now(), hour, 10_000, &closed_payload)
        .await
        .expect("ok");
    assert!(
        swept
            .iter()
            .all(|closed| closed.conversation.id != late.conversation.id),
        "received recently"
    );
    assert!(
        again
            .iter()
            .all(|closed| closed.conversation.id != idle.conversation.id)
    );
    // The next message opens a new conversation.
    let next = ok(&*store, message(&web, "s", "s3", now())).await;
    assert!(next.started);
    assert_ne!(next.conversation.id, idle.conversation.id);
    // Conversations a sweep found active are closed once idle since their latest message.
    let swept = store
        .close_idle(later(sweep_at, 2), hour, 10_000, &closed_payload)
        .await
        .expect("ok");
    for conversation in [&busy.conversation.id, &continued.conversation.id] {
        assert!(
            swept
                .iter()
                .any(|closed| &closed.conversation.id == conversation),
            "{conversation} not closed: {swept:#?}"
        );
    }
}

async fn timeline(store: &dyn ContextStore) {
    let web = channel("web");
    let wa = channel("wa");
    let number = phone();
    let at = now();
    let mut first = with_phone(message(&web, "v", "tl1", at), &number, true);
    first.referral = Some(referral(&web, "bf25", at));
    let one = ok(store, first).await;
    let digits = number.trim_start_matches('+');
    ok(
        store,
        with_phone(message(&wa, digits, "tl2", later(at, 1)), &number, true),
    )
    .await;
    let reply = HistoryEntry {
        event_id: "evt_reply".into(),
        at: later(at, 2),
        channel: wa.clone(),
        direction: Direction::Outbound,
        external_id: Some("out".into()),
        text: Some("hola".into()),
        parts: Vec::new(),
    };
    store
        .record_outbound(
            Outbound {
                conversation_id: one.conversation.id.clone(),
                message: reply.clone(),
                owed: String::new(),
            },
            &policy(),
        )
        .await
        .expect("recorded");
    let id = &one.conversation.id;
    let page = store.timeline(id, 0, 100).await.expect("ok");
    let kinds: Vec<&str> = page.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "conversation.started",
            "message",
            "referral",
            "conversation.channel_switched",
            "message",
            "message"
        ]
    );
    assert_eq!(page.next, None);
    assert_eq!(page.entries[0].at, at);
    assert_eq!(page.entries[0].channel, web);
    assert_eq!(page.entries[2].referral, Some(referral(&web, "bf25", at)));
    assert_eq!(
        page.entries[3].previous_channel.as_deref(),
        Some(web.as_str())
    );
    assert_eq!(
        page.entries[4]
            .message
            .as_ref()
            .and_then(|m| m.text.as_deref()),
        Some("text tl2")
    );
    assert_eq!(page.entries[5].message.as_ref(), Some(&reply));
    // Pages.
    let first_page = store.timeline(id, 0, 4).await.expect("ok");
    assert_eq!(first_page.entries, page.entries[..4].to_vec());
    assert_eq!(first_page.next, Some(4));
    let second_page = store.timeline(id, 4, 4).await.expect("ok");
    assert_eq!(second_page.entries, page.entries[4..].to_vec());
    assert_eq!(second_page.next, None);
    assert!(
        store
            .timeline(id, 99, 4)
            .await
            .expect("ok")
            .entries
            .is_empty()
    );
    // Inactivity closes the conversation on its timeline.
    ok(store, message(&web, "v", "tl3", later(at, 40))).await;
    let closed = store.timeline(id, 6, 10).await.expect("ok");
    assert_eq!(closed.entries.len(), 1);
    assert_eq!(closed.entries[0].kind, "conversation.closed");
    assert!(matches!(
        store.timeline("cv_missing", 0, 10).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// A store opened with a one-hour message retention.
async fn retention(store: &dyn ContextStore) -> (String, String) {
    let web = channel("web");
    let old = now()
        .checked_sub(SignedDuration::from_hours(2))
        .expect("time");
    let first = ok(store, message(&web, "v", "k1", old)).await;
    assert!(
        first.history.is_empty(),
        "a message older than the retention is dropped"
    );
    let fresh = ok(store, message(&web, "v", "k2", now())).await;
    assert_eq!(fresh.conversation.id, first.conversation.id);
    assert_eq!(fresh.conversation.messages, 2, "counters are kept");
    let texts: Vec<String> = fresh
        .history
        .iter()
        .filter_map(|e| e.text.clone())
        .collect();
    assert_eq!(texts, vec!["text k2"]);
    let stored = store.history(&fresh.conversation.id, 10).await.expect("ok");
    assert_eq!(stored, fresh.history);
    let page = store
        .timeline(&fresh.conversation.id, 0, 10)
        .await
        .expect("ok");
    let kinds: Vec<&str> = page.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["message"],
        "older timeline entries are dropped too"
    );
    assert_eq!(page.next, None);
    (fresh.contact.id, fresh.conversation.id)
}

/// Same name and e-mail domain: a probable link, shown both ways, never merged.
async fn probable_links(store: &dyn ContextStore) {
    let web = channel("web");
    let domain = format!(
        "{}.example",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let visitor = |user: &str, id: &str, name: &str, email: &str| {
        let mut ingest = message(&web, user, id, now());
        ingest.person.name = Some(name.to_owned());
        ingest.person.handles.push(handle(
            HandleKind::Email,
            &format!("{email}@{domain}"),
            false,
        ));
        ingest
    };
    let a = ok(store, visitor("p1", "pl1", "Ana Pérez", "ana")).await;
    let b = ok(store, visitor("p2", "pl2", "ana   pérez", "a.perez")).await;
    let c = ok(store, visitor("p3", "pl3", "Bea", "bea")).await;
    assert_ne!(a.contact.id, b.contact.id, "never merged automatically");
    let of = |details: &omnigate::store::ContactDetails| -> Vec<String> {
        details
            .probable_links
            .iter()
            .map(|l| l.contact_id.clone())
            .collect()
    };
    let da = store
        .contact_details(&a.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(of(&da), vec![b.contact.id.clone()]);
    assert_eq!(
        da.probable_links[0].strength,
        omnigate::store::LinkStrength::Probable
    );
    assert_eq!(
        da.probable_links[0].evidence,
        format!("same name `ana pérez` and e-mail domain `{domain}`")
    );
    let db = store
        .contact_details(&b.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(of(&db), vec![a.contact.id.clone()]);
    let dc = store
        .contact_details(&c.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert!(dc.probable_links.is_empty());
    // Merged contacts are not "probably" linked any more; erased ones disappear.
    store
        .merge(&a.contact.id, &b.contact.id, "x", now())
        .await
        .expect("merged");
    let da = store
        .contact_details(&a.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert!(da.probable_links.is_empty(), "{:?}", da.probable_links);
    store
        .unmerge(&a.contact.id, &b.contact.id, now(), "")
        .await
        .expect("unmerged");
    store
        .erase(&b.contact.id, Timestamp::now(), &erased_payload)
        .await
        .expect("ok")
        .expect("existed");
    let da = store
        .contact_details(&a.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert!(da.probable_links.is_empty(), "{:?}", da.probable_links);
}

/// A known sender that reports a verified phone another contact owns (e.g. a web visitor
/// who logs in, and whose number a WhatsApp user has) is merged into that contact (the
/// owner survives) before its event is recorded there. Unverified handles never merge; a
/// merge undone by an operator is not redone by the handle they share.
async fn shared_verified_handle(store: &dyn ContextStore) {
    let wa = channel("wa");
    let web = channel("web");
    let number = phone();
    let digits = number.trim_start_matches('+');
    let at = now();
    let a = ok(
        store,
        with_phone(message(&wa, digits, "sv1", at), &number, true),
    )
    .await;
    assert!(a.merged.is_none());
    let b = ok(store, message(&web, "visitor", "sv2", at)).await;
    assert_ne!(b.contact.id, a.contact.id);
    assert!(b.merged.is_none());
    // The same number, unverified: nothing merges.
    let unverified = ok(
        store,
        with_phone(message(&web, "visitor", "sv3", at), &number, false),
    )
    .await;
    assert_eq!(
        unverified.contact.id, b.contact.id,
        "unverified never merges"
    );
    assert!(unverified.merged.is_none());
    // Verified (the visitor logged in): B is merged into A, and the event continues A's
    // conversation.
    let verified = ok(
        store,
        with_phone(message(&web, "visitor", "sv4", later(at, 1)), &number, true),
    )
    .await;
    let merge = verified
        .merged
        .clone()
        .expect("merged on the shared verified phone");
    assert_eq!(
        merge.survivor, a.contact.id,
        "the owner of the handle survives"
    );
    assert_eq!(merge.absorbed, b.contact.id);
    assert_eq!(merge.strength, omnigate::store::LinkStrength::Verified);
    assert_eq!(
        merge.evidence,
        format!("same verified phone {number} reported on channel {web}")
    );
    let user_b = handle(HandleKind::ChannelUser, &format!("{web}:visitor"), true);
    assert_eq!(merge.handles, vec![user_b.clone()]);
    assert_eq!(verified.contact.id, a.contact.id);
    assert!(verified.contact.handles.contains(&user_b));
    assert_eq!(verified.conversation.id, a.conversation.id);
    assert_eq!(verified.switched_from.as_deref(), Some(wa.as_str()));
    assert_eq!(verified.conversation.messages, 2);
    // The merge kept its contact.merged owed, on the survivor, with the merge: on Redis it
    // is a step before the ingest's own.
    let merged_key = omnigate::store::owed_merged_key(&merge.id);
    let owed = owed_under(store, &merged_key).await;
    assert_eq!(owed[0].contact_id, a.contact.id);
    assert_eq!(owed[0].payload, "merge payload of sv4");
    assert_eq!(owed[0].merged.as_ref(), Some(&merge));
    // Retries are duplicates: the merging event, and B's event from before the merge.
    for (id, at) in [("sv4", later(at, 1)), ("sv2", at)] {
        let retry = with_phone(message(&web, "visitor", id, at), &number, true);
        assert!(
            store
                .ingest(retry, &policy())
                .await
                .expect("store answers")
                .is_none(),
            "{id} is a duplicate"
        );
    }
    // B's next event lands on A without another merge.
    let next = ok(
        store,
        with_phone(message(&web, "visitor", "sv5", later(at, 1)), &number, true),
    )
    .await;
    assert_eq!(next.contact.id, a.contact.id);
    assert!(next.merged.is_none());
    let details = store
        .contact_details(&a.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(details.merges, vec![merge.clone()]);
    assert_eq!(
        details.conversations,
        vec![a.conversation.id.clone(), b.conversation.id.clone()]
    );
    // Reversible: after the unmerge B is a contact of its own again, and the phone they
    // share does not merge them again.
    store
        .unmerge(&a.contact.id, &b.contact.id, later(at, 2), "")
        .await
        .expect("unmerged");
    let after = ok(
        store,
        with_phone(message(&web, "visitor", "sv6", later(at, 2)), &number, true),
    )
    .await;
    assert_eq!(after.contact.id, b.contact.id, "the unmerge holds");
    assert!(after.merged.is_none());
    let details = store
        .contact_details(&a.contact.id)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(details.merges.len(), 1);
    assert_eq!(details.merges[0].undone_at, Some(later(at, 2)));
    // A new sender with the verified phone simply joins its owner (no merge needed).
    let c = ok(
        store,
        with_phone(message(&web, "another", "sv7", later(at, 2)), &number, true),
    )
    .await;
    assert_eq!(c.contact.id, a.contact.id);
    assert!(c.merged.is_none());
}

/// Rollups: a batch of debts adds their summed changes once; a bucket that has seen one
/// of the keys takes nothing (the caller then adds the keys one by one), so no debt is
/// counted twice, whichever path added it first.
async fn rollups_once(store: &dyn ContextStore) {
    let outcomes = store.outcomes();
    let write = |bucket: &str, n: i64| RollupWrite {
        bucket: bucket.into(),
        table: "f.channel".into(),
        field: "web\x1fconversations".into(),
        n,
    };
    let keys = |names: &[&str]| {
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()
    };
    let count = |tables: Vec<std::collections::HashMap<String, i64>>| {
        tables
            .iter()
            .map(|table| table.get("web\x1fconversations").copied().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let buckets = ["h900001".to_owned(), "d37500".to_owned()];
    // One debt, added alone (as the relay does).
    let alone = [write("h900001", 1), write("d37500", 1)];
    assert!(
        outcomes
            .add_rollups(&keys(&["a"]), &alone)
            .await
            .expect("add")
    );
    assert!(
        !outcomes
            .add_rollups(&keys(&["a"]), &alone)
            .await
            .expect("again")
    );
    // A batch with `a` again: neither bucket takes it.
    let batch = [write("h900001", 3), write("d37500", 3)];
    let taken = outcomes
        .add_rollups(&keys(&["a", "b", "c"]), &batch)
        .await
        .expect("batch");
    assert!(!taken, "a bucket that has seen `a` must refuse the batch");
    let tables = outcomes.rollups("f.channel", &buckets).await.expect("read");
    assert_eq!(count(tables), [1, 1]);
    // A fresh batch is taken whole; a repeat of it adds nothing.
    let batch = [write("h900001", 2), write("d37500", 2)];
    assert!(
        outcomes
            .add_rollups(&keys(&["b", "c"]), &batch)
            .await
            .expect("batch")
    );
    assert!(
        !outcomes
            .add_rollups(&keys(&["b", "c"]), &batch)
            .await
            .expect("repeat")
    );
    let tables = outcomes.rollups("f.channel", &buckets).await.expect("read");
    assert_eq!(count(tables), [3, 3]);
}

/// Receipts: one per destination, replaced by the destination's next, listed in
/// destination order; none for an unknown conversion.
async fn receipts(store: &dyn ContextStore) {
    let outcomes = store.outcomes();
    assert!(outcomes.receipts("cv-none").await.expect("none").is_empty());
    outcomes
        .keep_receipt("ord-1", "meta", r#"{"status":"failed"}"#)
        .await
        .expect("keep");
    outcomes
        .keep_receipt("ord-1", "google", r#"{"status":"scheduled"}"#)
        .await
        .expect("keep");
    outcomes
        .keep_receipt("ord-1", "meta", r#"{"status":"sent"}"#)
        .await
        .expect("replace");
    assert_eq!(
        outcomes.receipts("ord-1").await.expect("list"),
        vec![r#"{"status":"scheduled"}"#, r#"{"status":"sent"}"#]
    );
}

/// A signed-out console session is refused until it would have expired, then forgotten.
async fn revoked_sessions(store: &dyn ContextStore) {
    let id = format!("session-{}", ulid::Ulid::generate());
    assert!(!store.session_revoked(&id).await.expect("read"));
    store
        .revoke_session(&id, Duration::from_secs(1))
        .await
        .expect("revoke");
    assert!(store.session_revoked(&id).await.expect("read"));
    assert!(
        !store
            .session_revoked("another-session")
            .await
            .expect("read"),
        "only that session"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        !store.session_revoked(&id).await.expect("read"),
        "the record goes when the session would have expired"
    );
}

async fn suite(store: Arc<dyn ContextStore>) {
    store.ping().await.expect("store answers PING");
    dedupe(&*store).await;
    identity(&*store).await;
    threading(&*store).await;
    history_cap(&*store).await;
    attribution(&*store).await;
    concurrency(store.clone()).await;
    links(&*store).await;
    erasure(&*store).await;
    sweeping(store.clone()).await;
    timeline(&*store).await;
    probable_links(&*store).await;
    shared_verified_handle(&*store).await;
    owed_records(&*store).await;
    timeline_cap(&*store).await;
    idle_contacts(&*store).await;
    rollups_once(&*store).await;
    receipts(&*store).await;
    revoked_sessions(&*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_conforms() {
    suite(Arc::new(MemoryStore::new())).await;
    retention(&MemoryStore::with_retention(Some(Duration::from_secs(
        3600,
    ))))
    .await;
}

/// A new backend: the one small trait, over bytes (every record goes through serde as a
/// database would keep it), in one map behind one lock.
#[derive(Default)]
struct BytesBackend {
    records: parking_lot::Mutex<BytesRecords>,
}

#[derive(Default)]
struct BytesRecords {
    clock: u64,
    map: std::collections::BTreeMap<String, (u64, Vec<u8>, Option<Timestamp>)>,
}

impl BytesRecords {
    fn live(&self, key: &str) -> Option<&(u64, Vec<u8>, Option<Timestamp>)> {
        let now = Timestamp::now();
        self.map
            .get(key)
            .filter(|(_, _, expires)| expires.is_none_or(|expires| expires > now))
    }
}

fn versioned(
    (version, bytes, _): &(u64, Vec<u8>, Option<Timestamp>),
) -> Result<Versioned, StoreError> {
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Unavailable(format!("undecodable record: {error}")))?;
    Ok(Versioned {
        version: *version,
        doc: Arc::new(doc),
    })
}

#[async_trait::async_trait]
impl Backend for BytesBackend {
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StoreError> {
        let records = self.records.lock();
        keys.iter()
            .map(|key| records.live(key).map(versioned).transpose())
            .collect()
    }

    async fn commit(
        &self,
        expect: &[(String, Option<u64>)],
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        let mut records = self.records.lock();
        if expect
            .iter()
            .any(|(key, version)| records.live(key).map(|(at, _, _)| *at) != *version)
        {
            return Ok(false);
        }
        records.clock += 1;
        let version = records.clock;
        for write in writes {
            match write.doc {
                Some(doc) => {
                    let bytes = serde_json::to_vec(&*doc)
                        .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                    records
                        .map
                        .insert(write.key, (version, bytes, write.expires));
                }
                None => {
                    records.map.remove(&write.key);
                }
            }
        }
        Ok(true)
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned)>, StoreError> {
        let records = self.records.lock();
        records
            .map
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(key, _)| after.is_none_or(|after| key.as_str() > after))
            .filter(|(key, _)| records.live(key).is_some())
            .take(limit)
            .map(|(key, record)| Ok((key.clone(), versioned(record)?)))
            .collect()
    }

    fn name(&self) -> &'static str {
        "bytes"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_backend_is_one_small_trait() {
    let store = Arc::new(Engine::on(BytesBackend::default(), None));
    assert_eq!(ContextStore::backend(&*store), "bytes");
    suite(store).await;
    retention(&Engine::on(
        BytesBackend::default(),
        Some(Duration::from_secs(3600)),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_conforms() {
    let server = RedisServer::start().expect("redis-server");
    let store = omnigate::store::open(&server.url()).expect("open");
    assert_eq!(store.backend(), "redis");
    suite(store).await;
    let retained =
        RedisStore::open_with(&server.url(), Some(Duration::from_secs(3600))).expect("open");
    let (contact, conversation) = retention(&retained).await;
    // Retention also lets an idle conversation's messages expire in Redis.
    let key = format!("og:{{{contact}}}:h:{conversation}");
    let seconds: i64 = server
        .cli(&["TTL", &key])
        .expect("ttl")
        .parse()
        .expect("number");
    assert!(seconds > 0, "{key} has no TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_backend_conforms() {
    let cluster = RedisCluster::start().expect("redis cluster");
    // Both cluster URL forms: several seed URLs, and the redis+cluster:// scheme.
    let seeds = cluster.urls().join(",");
    suite(omnigate::store::open(&seeds).expect("open")).await;
    let hosts: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    let scheme = format!("redis+cluster://{}", hosts.join(","));
    identity(&*omnigate::store::open(&scheme).expect("open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_in_url() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]).expect("redis-server");
    let port = server.port();
    let good = RedisStore::open(&format!("redis://:s3cret@127.0.0.1:{port}")).expect("open");
    good.ping().await.expect("authenticated");
    assert!(
        !good.display().contains("s3cret"),
        "password kept out of logs"
    );
    let bad = RedisStore::open(&format!("redis://:wrong@127.0.0.1:{port}")).expect("open");
    let error = bad.ping().await.expect_err("refused");
    assert!(!error.to_string().contains("wrong"), "{error}");
}

/// The contact an owed inbound record of `user` on `channel` is kept with.
async fn owed_contact(store: &RedisStore, channel: &str, user: &str, id: &str) -> String {
    let sender = message(channel, user, id, now()).person;
    store
        .owed_inbound(&sender.user, channel, id)
        .await
        .expect("ok")
        .expect("owed")
        .contact_id
}

/// Redis round trips per inbound event (a round trip is one set of concurrent commands;
/// counted by the store where it awaits Redis): one for a known sender, whose handle key
/// and contact share a slot (on one server, every key does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_round_trips_per_inbound_event() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::open(&server.url()).expect("open");
    let web = channel("web");
    let wa = channel("wa");
    let number = phone();
    let at = now();
    let trips = |store: &RedisStore, before: u64| store.round_trips() - before;
    let before = store.round_trips();
    ok(
        &store,
        with_phone(message(&web, "v", "m1", at), &number, true),
    )
    .await;
    // The one-request script finds no contact and may not make one (a verified phone
    // may belong to someone): look up, claim, record.
    assert_eq!(trips(&store, before), 4, "new sender with a verified phone");
    let before = store.round_trips();
    ok(&store, message(&web, "v", "m2", at)).await;
    assert_eq!(trips(&store, before), 1, "known sender, open conversation");
    let before = store.round_trips();
    assert!(
        store
            .ingest(message(&web, "v", "m2", at), &policy())
            .await
            .expect("ok")
            .is_none()
    );
    assert_eq!(trips(&store, before), 1, "duplicate");
    // The publisher settles an event's owed record after the outbox append: one trip; a
    // retry of a published event looks its record up: two trips, only on duplicates.
    let contact = owed_contact(&store, &web, "v", "m2").await;
    let before = store.round_trips();
    store
        .settle(&[(contact, omnigate::store::owed_inbound_key(&web, "m2"))])
        .await
        .expect("settled");
    assert_eq!(trips(&store, before), 1, "settle");
    let before = store.round_trips();
    let sender = message(&web, "v", "m2", at).person;
    assert!(
        store
            .owed_inbound(&sender.user, &web, "m2")
            .await
            .expect("ok")
            .is_none(),
        "settled"
    );
    assert_eq!(trips(&store, before), 2, "owed lookup of a duplicate");
    let before = store.round_trips();
    ok(&store, message(&web, "v", "m3", later(at, 30))).await;
    assert_eq!(
        trips(&store, before),
        2,
        "known sender, new conversation (+ its index)"
    );
    let before = store.round_trips();
    let digits = number.trim_start_matches('+');
    let linked = ok(
        &store,
        with_phone(message(&wa, digits, "a1", later(at, 30)), &number, true),
    )
    .await;
    assert_eq!(
        trips(&store, before),
        4,
        "new channel user with a known verified phone"
    );
    assert!(linked.switched_from.is_some());
    // The phone was found pointing at the contact: its next event needs no lookup.
    let before = store.round_trips();
    ok(
        &store,
        with_phone(message(&wa, digits, "a2", later(at, 30)), &number, true),
    )
    .await;
    assert_eq!(
        trips(&store, before),
        1,
        "known sender reporting its own verified phone"
    );
    let before = store.round_trips();
    ok(&store, message(&web, "w", "m4", later(at, 30))).await;
    assert_eq!(
        trips(&store, before),
        2,
        "new sender without verified handles (+ its indexes)"
    );
    // Rare: a known sender reports a verified phone another contact owns. The script
    // leaves it to the client; one trip reads the merge records and the sender's dedupe
    // entry, the merge takes its six steps (read, copy dedupe entries: 2, record, mark,
    // re-point), then the script, twice: the merge changed the survivor's handles, which
    // this instance's copy of the survivor decided on.
    let before = store.round_trips();
    let merged = ok(
        &store,
        with_phone(message(&web, "w", "m5", later(at, 30)), &number, true),
    )
    .await;
    let merge = merged.merged.expect("merged");
    assert_eq!(
        trips(&store, before),
        11,
        "merge on a shared verified phone"
    );
    store
        .unmerge(&merge.survivor, &merge.absorbed, later(at, 30), "")
        .await
        .expect("unmerged");
    let before = store.round_trips();
    let declined = ok(
        &store,
        with_phone(message(&web, "w", "m6", later(at, 30)), &number, true),
    )
    .await;
    assert!(declined.merged.is_none());
    assert_eq!(
        trips(&store, before),
        4,
        "shared verified phone of an unmerged pair: looked up, no merge"
    );
}

/// An erasure on one instance reaches the others' copies: the erasing instance announces
/// the erased contacts and every instance drops its copies of them (their names,
/// handles and last messages). The sender's next message then makes a new contact with
/// as many requests as a sender never seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_erasure_drops_every_instances_copies() {
    let server = RedisServer::start().expect("redis-server");
    let a = RedisStore::open(&server.url()).expect("open");
    let b = RedisStore::open(&server.url()).expect("open");
    let web = channel("web");
    let at = now();
    let first = ok(&a, message(&web, "v", "e1", at)).await;
    ok(&b, message(&web, "v", "e2", later(at, 1))).await;
    assert_eq!((a.copies(), b.copies()), (1, 1));
    // Both instances listen before the erasure is announced.
    eventually(|| {
        let answer = server
            .cli(&["PUBSUB", "NUMSUB", "og:contacts:erased"])
            .map_err(|error| error.to_string())?;
        match answer.lines().nth(1).map(str::trim) {
            Some("2") => Ok(()),
            _ => Err(format!("both instances subscribed: {answer}")),
        }
    })
    .await;
    a.erase(&first.contact.id, Timestamp::now(), &erased_payload)
        .await
        .expect("ok")
        .expect("erased");
    assert_eq!(a.copies(), 0, "the erasing instance's copy goes at once");
    eventually(|| match b.copies() {
        0 => Ok(()),
        held => Err(format!("b still holds {held} copies")),
    })
    .await;
    let before = b.round_trips();
    let again = ok(&b, message(&web, "v", "e3", later(at, 2))).await;
    let returning = b.round_trips() - before;
    assert_ne!(again.contact.id, first.contact.id);
    assert!(again.started && again.history.len() == 1);
    let before = b.round_trips();
    ok(&b, message(&web, "w", "n1", later(at, 2))).await;
    assert_eq!(
        returning,
        b.round_trips() - before,
        "as a sender never seen (with a stale copy it would be decided twice)"
    );
}

/// Three instances on one Redis record one sender's messages, business answers,
/// provider resends and events asking for another history depth, in a seeded random
/// order. Each answer carries exactly the last messages (whichever instance wrote them and
/// whatever each instance held), the same as the store reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_instances_in_any_order_answer_the_last_messages() {
    use rand::{Rng as _, SeedableRng as _};
    let server = RedisServer::start().expect("redis-server");
    let stores: Vec<RedisStore> = (0..3)
        .map(|_| RedisStore::open(&server.url()).expect("open"))
        .collect();
    let deep = IngestPolicy {
        history_cap: 6,
        history_depth: 4,
        ..policy()
    };
    let shallow = IngestPolicy {
        history_depth: 2,
        ..deep.clone()
    };
    let web = channel("web");
    let at = now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut texts: Vec<String> = Vec::new();
    let mut conversation: Option<String> = None;
    let mut inbound: Vec<i64> = Vec::new();
    for step in 0..160_i64 {
        let store = &stores[rng.random_range(0..stores.len())];
        let policy = if rng.random_range(0..8) == 0 {
            &shallow
        } else {
            &deep
        };
        let choice = rng.random_range(0..10);
        let ingested = match (conversation.as_deref(), choice) {
            (Some(id), 0..=1) => {
                let text = format!("answer {step}");
                let outbound = sent(id, &format!("o{step}"), &web, later(at, step), &text, "");
                texts.push(text);
                store
                    .record_outbound(outbound, policy)
                    .await
                    .expect("recorded")
            }
            (Some(_), 2) => {
                // A provider resends an earlier message: a duplicate, nothing recorded.
                let again = inbound[rng.random_range(0..inbound.len())];
                let resent = message(&web, "v", &format!("m{again}"), later(at, again));
                let answer = store.ingest(resent, policy).await.expect("ok");
                assert!(answer.is_none(), "step {step}: m{again} recorded twice");
                continue;
            }
            _ => {
                inbound.push(step);
                texts.push(format!("text m{step}"));
                let event = message(&web, "v", &format!("m{step}"), later(at, step));
                store.ingest(event, policy).await.expect("ok").expect("new")
            }
        };
        let id = ingested.conversation.id.clone();
        conversation = Some(id.clone());
        let keep = policy.history_depth.min(policy.history_cap);
        let wanted = &texts[texts.len().saturating_sub(keep)..];
        let answered: Vec<String> = ingested
            .history
            .iter()
            .filter_map(|entry| entry.text.clone())
            .collect();
        assert_eq!(answered, wanted, "step {step}");
        let stored: Vec<String> = store
            .history(&id, keep)
            .await
            .expect("ok")
            .into_iter()
            .filter_map(|entry| entry.text)
            .collect();
        assert_eq!(stored, wanted, "step {step}, read back");
    }
    assert!(texts.len() > 100, "the seed gives enough messages");
}

/// Two gateway instances on one Redis take turns with one sender's messages, each
/// deciding with the context rules from its own copy of the contact. Messages that only
/// move counters and facts written relatively leave the other instance's copy good (one
/// request each); a referral (a touch the decision reads) makes it stale, and the next
/// message there costs one request more. Every figure the answer carries is the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_instances_taking_turns_decide_from_their_own_copies() {
    let server = RedisServer::start().expect("redis-server");
    let a = RedisStore::open(&server.url()).expect("open");
    let b = RedisStore::open(&server.url()).expect("open");
    let web = channel("web");
    let at = now();
    let trips = |store: &RedisStore, before: u64| store.round_trips() - before;
    let first = ok(&a, message(&web, "v", "t1", at)).await;
    assert!(first.started && first.first_inbound);

    let before = b.round_trips();
    let second = ok(&b, message(&web, "v", "t2", later(at, 1))).await;
    assert_eq!(
        trips(&b, before),
        2,
        "no copy on b: decided as a new contact, stale, decided again"
    );
    assert_eq!(second.conversation.id, first.conversation.id);
    assert_eq!(second.contact.id, first.contact.id);
    assert_eq!(second.conversation.messages, 2);
    assert!(!second.started && !second.first_inbound);
    // Each answer carries the last messages (the cap, 3), whichever instance wrote them:
    // an instance holds the ones it saw and is sent the others.
    let texts = |ingested: &omnigate::store::Ingested| -> Vec<String> {
        ingested
            .history
            .iter()
            .filter_map(|entry| entry.text.clone())
            .collect()
    };
    assert_eq!(texts(&second), ["text t1", "text t2"]);

    let before = a.round_trips();
    let third = ok(&a, message(&web, "v", "t3", later(at, 2))).await;
    assert_eq!(trips(&a, before), 1, "b's message left a's copy good");
    assert_eq!(third.conversation.messages, 3, "counted where it is stored");
    assert_eq!(third.conversation.last_activity_at, later(at, 2));
    assert_eq!(third.conversation.first_inbound_at, Some(at));
    assert!(!third.first_inbound);
    assert_eq!(texts(&third), ["text t1", "text t2", "text t3"]);

    // The business answers on b: the customer no longer waits. b's copy of the latest
    // conversation decides (its count is behind; the answer carries the stored one).
    let before = b.round_trips();
    let answered = b
        .record_outbound(
            sent(
                &first.conversation.id,
                "turns-out",
                &web,
                later(at, 3),
                "hello",
                "",
            ),
            &policy(),
        )
        .await
        .expect("recorded");
    assert_eq!(
        trips(&b, before),
        2,
        "the conversation's owner, then the change"
    );
    assert_eq!(answered.conversation.messages, 4);
    assert_eq!(answered.conversation.awaiting_since, None);
    assert_eq!(texts(&answered), ["text t2", "text t3", "hello"]);
    let before = a.round_trips();
    let fourth = ok(&a, message(&web, "v", "t4", later(at, 4))).await;
    assert_eq!(trips(&a, before), 1);
    assert_eq!(fourth.conversation.messages, 5);
    assert_eq!(
        fourth.conversation.awaiting_since,
        Some(later(at, 4)),
        "waiting again since this message, though a's copy still had the first one"
    );
    assert_eq!(texts(&fourth), ["text t3", "hello", "text t4"]);

    // A referral on b: a touch, which a's decisions read.
    let mut touched = message(&web, "v", "t5", later(at, 5));
    touched.referral = Some(referral(&web, "spring", later(at, 5)));
    ok(&b, touched).await;
    let before = a.round_trips();
    let sixth = ok(&a, message(&web, "v", "t6", later(at, 6))).await;
    assert_eq!(trips(&a, before), 2, "a's copy is stale: decided again");
    assert_eq!(sixth.conversation.messages, 7);
    assert_eq!(texts(&sixth), ["text t4", "text t5", "text t6"]);
    let campaign = |touch: &Option<std::sync::Arc<Referral>>| {
        touch
            .as_ref()
            .and_then(|referral| referral.campaign.clone())
    };
    assert_eq!(
        campaign(&sixth.conversation.attribution.first_touch).as_deref(),
        Some("spring")
    );
    let before = a.round_trips();
    let seventh = ok(&a, message(&web, "v", "t7", later(at, 7))).await;
    assert_eq!(trips(&a, before), 1, "a's copy is good again");
    assert_eq!(texts(&seventh), ["text t5", "text t6", "text t7"]);
    let stored = b
        .conversation(&first.conversation.id)
        .await
        .expect("ok")
        .expect("stored");
    assert_eq!(stored.messages, 8);

    // An instance with no copy reads the conversation before it decides.
    let c = RedisStore::open(&server.url()).expect("open");
    let before = c.round_trips();
    let answered = c
        .record_outbound(
            sent(
                &first.conversation.id,
                "turns-out-again",
                &web,
                later(at, 8),
                "anything else?",
                "",
            ),
            &policy(),
        )
        .await
        .expect("recorded");
    assert_eq!(trips(&c, before), 3, "owner, read, change");
    assert_eq!(answered.conversation.messages, 9);
    assert_eq!(texts(&answered), ["text t6", "text t7", "anything else?"]);
}

/// On a Redis Cluster a new sender's contact lives in the slot of its handle key (its
/// home slot): its later events cost one round trip. A sender merged into a contact of
/// another slot costs one more (the script names the contact, the client goes there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_home_slot_and_redirect() {
    let cluster = RedisCluster::start().expect("redis cluster");
    let store = RedisStore::open(&cluster.urls().join(",")).expect("open");
    let web = channel("web");
    let at = now();
    let trips = |store: &RedisStore, before: u64| store.round_trips() - before;
    let first = ok(&store, message(&web, "home", "h1", at)).await;
    let before = store.round_trips();
    let second = ok(&store, message(&web, "home", "h2", at)).await;
    assert_eq!(trips(&store, before), 1, "known sender in its home slot");
    assert_eq!(second.contact.id, first.contact.id);
    assert_eq!(second.conversation.id, first.conversation.id);
    assert_eq!(second.conversation.messages, 2);
    // Another sender's contact absorbs this one: its handle now points to a contact
    // whose keys live elsewhere (different senders' home slots differ here).
    // (Two senders share a home slot once in 16384: then take the next one.)
    let mut other = ok(&store, message(&web, "elsewhere-0", "e0", at)).await;
    for n in 1..5 {
        if slot_of(&other.contact.id) != slot_of(&first.contact.id) {
            break;
        }
        other = ok(&store, message(&web, &format!("elsewhere-{n}"), "e", at)).await;
    }
    assert_ne!(slot_of(&other.contact.id), slot_of(&first.contact.id));
    store
        .merge(&other.contact.id, &first.contact.id, "test", at)
        .await
        .expect("merged");
    let before = store.round_trips();
    let moved = ok(&store, message(&web, "home", "h3", at)).await;
    // The merge changed the survivor's handles, which this instance's copy of it
    // decided on: the first event after it is decided again (once).
    assert_eq!(
        trips(&store, before),
        3,
        "merged sender: one redirect, and the survivor decided again"
    );
    assert_eq!(
        moved.contact.id, other.contact.id,
        "recorded on the survivor"
    );
    assert_eq!(moved.conversation.id, other.conversation.id);
    // Duplicates are still found after the redirect (the merge copied the entries).
    let before = store.round_trips();
    assert!(
        store
            .ingest(message(&web, "home", "h2", at), &policy())
            .await
            .expect("ok")
            .is_none(),
        "a retry of an event recorded before the merge is a duplicate"
    );
    assert_eq!(trips(&store, before), 2, "duplicate behind a redirect");
}

/// The Redis Cluster slot of a contact's keys (CRC16 of the id, as Redis hashes tags).
fn slot_of(contact_id: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(contact_id.as_bytes()) % 16384
}

/// `rediss://` with a password in the URL and a private CA (`[store] tls_ca_file`): the
/// whole suite over TLS. Without the CA (webpki roots only) the server's certificate is
/// refused: verification is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_tls_with_password_and_private_ca_conforms() {
    let server =
        RedisServer::start_tls(&["--requirepass", "tls-s3cret"]).expect("redis-server with TLS");
    let ca = &server.tls_files().expect("TLS files").ca;
    let tls = RedisTls::from_ca_file(ca).expect("CA file");
    let url = format!("rediss://:tls-s3cret@127.0.0.1:{}", server.port());
    let store = omnigate::store::open_with_tls(&url, None, &tls).expect("open");
    assert_eq!(store.backend(), "redis");
    suite(store).await;
    let untrusted = RedisStore::open(&url).expect("open");
    let error = untrusted.ping().await.expect_err("unknown CA refused");
    assert!(!error.to_string().contains("tls-s3cret"), "{error}");
    let wrong = RedisStore::connect(
        &format!("rediss://:wrong@127.0.0.1:{}", server.port()),
        None,
        &tls,
    )
    .expect("open");
    let error = wrong.ping().await.expect_err("wrong password refused");
    assert!(!error.to_string().contains("wrong@"), "{error}");
}
