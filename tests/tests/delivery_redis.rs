//! Reliable delivery end to end with the Redis Streams outbox: a real `redis-server`, the
//! real gateway (in process, or the `omnigate` binary killed with SIGKILL), the web chat
//! plugin as the source of events and real local receivers verifying every delivery with
//! the stock `standardwebhooks` crate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omnigate_tests::downstream::{Downstream, Mode, Seen};
use omnigate_tests::process::Process;
use omnigate_tests::redis::{RedisServer, free_port};
use omnigate_tests::{
    API_KEY, Gateway, LOOPBACK, SUBSCRIPTION_SECRET, api_auth, get, plugin_path, post,
    standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Bound of every wait for deliveries (lease takeover included).
const WAIT: Duration = Duration::from_secs(30);

/// The web chat channel on the Redis store (context and outbox) with short timings, and
/// `subscriptions` (TOML `[[subscriptions]]` tables).
fn config(redis: &RedisServer, subscriptions: &str) -> String {
    format!(
        r#"
        [api]
        keys = ["{API_KEY}"]
        [store]
        url = "{redis}"
        [delivery]
        partitions = 4
        lease_ttl = "1500ms"
        poll_interval = "20ms"
        timeout = "2s"
        allow_networks = {LOOPBACK}
        retry_schedule = ["100ms", "200ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]
        [[channels]]
        id = "web"
        plugin = {plugin}
        allowed_hosts = ["http://127.0.0.1:9"]
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        {subscriptions}
        "#,
        redis = redis.url(),
        plugin = toml_path(&plugin_path("webchat")),
    )
}

fn subscription(id: &str, url: &str) -> String {
    format!(
        r#"
        [[subscriptions]]
        id = "{id}"
        url = "{url}"
        secret = "{SUBSCRIPTION_SECRET}"
        events = ["message.*"]
        "#
    )
}

/// A web chat message from `visitor`, with provider id `id`.
fn message(id: &str, visitor: &str) -> Vec<u8> {
    message_saying(id, visitor, &format!("text of {id}"))
}

/// A web chat message saying `text`.
fn message_saying(id: &str, visitor: &str, text: &str) -> Vec<u8> {
    json!({
        "type": "message",
        "id": id,
        "visitor": {"id": visitor, "name": visitor},
        "text": text,
        "sent_at": jiff::Timestamp::now().to_string()
    })
    .to_string()
    .into_bytes()
}

/// POSTs a message to the gateway at `base`; the HTTP status, or `None` when the
/// gateway could not be reached.
async fn send(base: &str, id: &str, visitor: &str) -> Option<u16> {
    send_body(base, message(id, visitor)).await
}

/// POSTs a web chat webhook body, signed; the HTTP status, or `None` when the gateway
/// could not be reached.
async fn send_body(base: &str, body: Vec<u8>) -> Option<u16> {
    let headers = standard_webhooks_headers(
        SITE_SECRET,
        &format!("wh_{}", ulid::Ulid::generate()),
        &body,
    )
    .ok()?;
    post(&format!("{base}/webhooks/web"), &headers, body)
        .await
        .ok()
        .map(|(status, _)| status)
}

/// Message ids `m-<visitor>-<n>`: sent in this order, so each visitor's must arrive in it.
fn id(visitor: usize, n: usize) -> String {
    format!("m-{visitor}-{n:03}")
}

/// Per conversation, the provider ids of accepted `message.received` deliveries, first
/// acceptance only; and the number of repeated deliveries.
fn received_per_conversation(downstream: &Downstream) -> (BTreeMap<String, Vec<String>>, usize) {
    let (by_conversation, duplicates) = downstream.accepted_by_conversation();
    let ids = by_conversation
        .into_iter()
        .map(|(conversation, seen)| {
            let ids = seen
                .into_iter()
                .filter(|s| s.kind == "message.received")
                .filter_map(|s| s.external_id)
                .collect();
            (conversation, ids)
        })
        .collect();
    (ids, duplicates)
}

/// Every conversation's ids are in send order (ids sort in send order per visitor).
fn assert_in_order(per_conversation: &BTreeMap<String, Vec<String>>) {
    for (conversation, ids) in per_conversation {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, &sorted, "conversation {conversation} out of order");
    }
}

fn accepted_ids(accepted: &[Seen]) -> Vec<String> {
    accepted
        .iter()
        .filter_map(|s| s.external_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_down_then_429_then_503_then_recovery_delivers_all_in_order() {
    let redis = RedisServer::start().expect("redis");
    let downstream = Downstream::new(&[SUBSCRIPTION_SECRET]).expect("receiver");
    let gateway = Gateway::start(&config(&redis, &subscription("crm", &downstream.url())))
        .await
        .expect("gateway");
    assert!(gateway.app.delivery.durable());

    let visitors = 3;
    let per_visitor = 6;
    let mut sent = Vec::new();
    // Phase 1: nothing listens on the receiver's port (connection refused).
    for n in 0..per_visitor {
        if n == 2 {
            // Phase 2: up, but throttling with Retry-After; wait until it is seen.
            downstream.set(Mode::Fail(429, Some("1".into())));
            downstream.up().await.expect("receiver up");
            wait_for_status(&downstream, 429).await;
        }
        if n == 4 {
            // Phase 3: failing with 503.
            downstream.set(Mode::Fail(503, None));
            wait_for_status(&downstream, 503).await;
        }
        for visitor in 0..visitors {
            let message_id = id(visitor, n);
            assert_eq!(
                send(&gateway.base, &message_id, &format!("v{visitor}")).await,
                Some(200)
            );
            sent.push(message_id);
        }
    }
    // Recovery.
    downstream.set(Mode::Accept);
    downstream
        .wait_until("every message", WAIT, |accepted| {
            let ids = accepted_ids(accepted);
            sent.iter().all(|id| ids.contains(id))
        })
        .await
        .expect("all delivered after recovery");

    let (per_conversation, duplicates) = received_per_conversation(&downstream);
    assert_eq!(per_conversation.len(), visitors);
    assert_in_order(&per_conversation);
    assert_eq!(
        duplicates, 0,
        "no crash, so no redelivery of an accepted event"
    );
    assert!(
        downstream.accepted().iter().all(|s| s.verified_by == [0]),
        "every delivery verified by the stock library"
    );
    let backlog = gateway.app.delivery.backlog("crm").await.expect("backlog");
    assert_eq!(backlog, 0);
    // The numbers the metrics endpoint exports.
    let metrics = gateway.app.delivery.metrics().await;
    assert_eq!(metrics.outbox, "redis");
    let crm = &metrics.subscriptions[0];
    assert_eq!(crm.delivered, sent.len() as u64);
    assert_eq!(crm.backlog, Some(0));
    for class in ["connect", "http_429", "http_5xx"] {
        assert!(
            crm.failures.get(class).is_some_and(|n| *n > 0),
            "{class}: {:?}",
            crm.failures
        );
    }
    let failures: u64 = crm.failures.values().sum();
    assert_eq!(crm.attempts, crm.delivered + failures);
    assert_eq!(crm.end_to_end_latency.count, crm.delivered);
    gateway.stop().await;
}

/// Waits until the receiver has answered `status` at least once.
async fn wait_for_status(downstream: &Downstream, status: u16) {
    downstream
        .wait_until(&format!("a {status} answer"), WAIT, |_| {
            downstream.seen().iter().any(|s| s.status == status)
        })
        .await
        .expect("the phase reached the receiver");
}

/// A TCP listener that accepts connections and never answers: a subscription that is
/// slow (every attempt times out).
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{address}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_outbox_and_a_slow_subscription_delays_no_other() {
    let redis = RedisServer::start().expect("redis");
    let fast = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Accept)
        .await
        .expect("receiver");
    let slow = black_hole().await;
    let subscriptions = format!(
        "{}{}",
        subscription("fast", &fast.url()),
        subscription("slow", &slow)
    );
    let text = config(&redis, &subscriptions);
    let first = Gateway::start(&text).await.expect("gateway 1");
    let second = Gateway::start(&text).await.expect("gateway 2");

    let mut sent = Vec::new();
    for n in 0..8 {
        for visitor in 0..4 {
            // Alternate instances: both publish into the shared outbox.
            let gateway = if (n + visitor) % 2 == 0 {
                &first
            } else {
                &second
            };
            let message_id = id(visitor, n);
            assert_eq!(
                send(&gateway.base, &message_id, &format!("v{visitor}")).await,
                Some(200)
            );
            sent.push(message_id);
        }
    }
    fast.wait_until("every message at the fast subscription", WAIT, |accepted| {
        let ids = accepted_ids(accepted);
        sent.iter().all(|id| ids.contains(id))
    })
    .await
    .expect("the slow subscription does not hold the fast one");
    let (per_conversation, duplicates) = received_per_conversation(&fast);
    // One Redis store behind both instances: one conversation per visitor.
    assert_eq!(per_conversation.len(), 4);
    assert_in_order(&per_conversation);
    assert_eq!(
        duplicates, 0,
        "shared outbox, yet every event delivered once"
    );
    let slow_backlog = first.app.delivery.backlog("slow").await.expect("backlog");
    assert!(slow_backlog > 0, "the slow subscription is still behind");
    first.stop().await;
    second.stop().await;
}

/// What the tests of the `omnigate` binary share: a Redis, a receiver answering `mode`, a
/// directory for the config and plugin cache, and the config with subscription `crm`.
async fn process_set_up(mode: Mode) -> (RedisServer, Downstream, tempfile::TempDir, String) {
    let redis = RedisServer::start().expect("redis");
    let downstream = Downstream::start(&[SUBSCRIPTION_SECRET], mode)
        .await
        .expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config(&redis, &subscription("crm", &downstream.url()));
    (redis, downstream, dir, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_then_restart_delivers_every_acknowledged_event() {
    let (_redis, downstream, dir, text) = process_set_up(Mode::Fail(503, None)).await;
    let port = free_port().expect("port");
    let mut gateway = Process::start(&text, dir.path(), port);
    gateway.wait_ready().await;

    // A stream of messages from 4 visitors, killed in the middle of it.
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        let base = gateway.base.clone();
        tokio::spawn(async move {
            for n in 0..1000 {
                for visitor in 0..4 {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let message_id = id(visitor, n);
                    if send(&base, &message_id, &format!("v{visitor}")).await == Some(200) {
                        acknowledged.lock().push(message_id);
                    }
                }
            }
        })
    };
    // Kill once a good number are acknowledged and the receiver has been failing them.
    let deadline = std::time::Instant::now() + WAIT;
    while acknowledged.lock().len() < 40 || downstream.seen().len() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.kill_9();
    stop.store(true, Ordering::Release);
    sender.await.expect("sender");
    let acknowledged = acknowledged.lock().clone();
    assert!(
        downstream.accepted().is_empty(),
        "nothing accepted before the kill"
    );

    // The receiver recovers; a new gateway process takes over the outbox.
    downstream.set(Mode::Accept);
    let restarted = Process::start(&text, dir.path(), free_port().expect("port"));
    restarted.wait_ready().await;
    downstream
        .wait_until("every acknowledged message", WAIT, |accepted| {
            let ids = accepted_ids(accepted);
            acknowledged.iter().all(|id| ids.contains(id))
        })
        .await
        .expect("every acknowledged event delivered after the restart");
    let (per_conversation, duplicates) = received_per_conversation(&downstream);
    assert_in_order(&per_conversation);
    eprintln!(
        "kill -9: {} acknowledged, all delivered after restart; {duplicates} duplicate deliveries",
        acknowledged.len()
    );
    drop(restarted);
}

/// Visitors and messages per visitor of the crash-window tests.
const VISITORS: usize = 30;
const PER_VISITOR: usize = 10;

/// Sends each visitor's messages in order, each until a 200, like a provider that resends
/// what was not acknowledged (also while the gateway is down). Ends when every message is
/// acknowledged, or at `deadline`.
fn provider(base: String, deadline: std::time::Instant) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..VISITORS)
        .map(|visitor| {
            let base = base.clone();
            tokio::spawn(async move {
                let mut resends = 0;
                for n in 0..PER_VISITOR {
                    let message_id = id(visitor, n);
                    while send(&base, &message_id, &format!("cv{visitor}")).await != Some(200) {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "{message_id} never acknowledged"
                        );
                        resends += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                resends
            })
        })
        .collect()
}

/// Every message of every visitor, delivered, each conversation in send order.
async fn assert_all_delivered_in_order(downstream: &Downstream) -> usize {
    let expected: Vec<String> = (0..VISITORS)
        .flat_map(|visitor| (0..PER_VISITOR).map(move |n| id(visitor, n)))
        .collect();
    downstream
        .wait_until("every message", Duration::from_secs(60), |accepted| {
            let ids = accepted_ids(accepted);
            expected.iter().all(|id| ids.contains(id))
        })
        .await
        .expect("every accepted message delivered");
    let (per_conversation, duplicates) = received_per_conversation(downstream);
    assert_in_order(&per_conversation);
    assert_eq!(
        per_conversation.len(),
        VISITORS,
        "one conversation per visitor"
    );
    duplicates
}

/// The crash window between the store and the outbox: the gateway aborts exactly after a
/// store commit (before the outbox append) or after the outbox append (before the owed
/// record is settled), four times while 300 messages from 30 visitors arrive, with the
/// receiver failing at first. The provider resends what got no answer; the retry of a
/// committed event finds its owed record and publishes its events. Every message arrives,
/// each conversation in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborts_between_store_commit_and_outbox_lose_nothing() {
    let (_redis, downstream, dir, text) = process_set_up(Mode::Fail(503, None)).await;
    // A resend waits until its first attempt's record is abandoned (older than this).
    let text = format!("{text}\n[pipeline]\nrelay_after = \"1s\"\n");
    let port = free_port().expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let senders = provider(base, std::time::Instant::now() + Duration::from_secs(180));
    // Each process aborts at its n-th pass of the point (counted from its start).
    let faults = [
        "after_commit:37",
        "after_publish:23",
        "after_commit:61",
        "after_commit:2",
    ];
    for (round, fault) in faults.into_iter().enumerate() {
        let mut gateway =
            Process::start_with_env(&text, dir.path(), port, &[("OMNIGATE_FAULT", fault)]);
        let status = gateway.wait_exit(Duration::from_secs(60)).await;
        assert!(!status.success(), "{fault}: aborted, not exited cleanly");
        if round == 1 {
            downstream.set(Mode::Accept);
        }
    }
    let gateway = Process::start(&text, dir.path(), port);
    gateway.wait_ready().await;
    let mut resends = 0;
    for sender in senders {
        resends += sender.await.expect("provider");
    }
    let duplicates = assert_all_delivered_in_order(&downstream).await;
    // Each abort cut at least the request it aborted in: the provider resent them.
    assert!(resends >= faults.len(), "{resends} resends");
    let metrics = omnigate_tests::get(&format!("{}/metrics", gateway.base), &[])
        .await
        .expect("metrics")
        .1;
    eprintln!(
        "4 aborts between commit and outbox: {} messages delivered, {resends} resends, {duplicates} duplicate deliveries; {}",
        VISITORS * PER_VISITOR,
        metrics
            .lines()
            .filter(|line| line.starts_with("omnigate_owed_republished_total"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// A provider that never resends: the event committed before the abort is published by
/// the relay of the next process, once its owed record is older than `relay_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_publishes_what_an_aborted_gateway_committed() {
    let (_redis, downstream, dir, text) = process_set_up(Mode::Accept).await;
    let text = format!("{text}\n[pipeline]\nrelay_after = \"1s\"\n")
        .replace("[store]\n", "[store]\n        sweep_interval = \"200ms\"\n");
    let port = free_port().expect("port");
    let mut gateway = Process::start_with_env(
        &text,
        dir.path(),
        port,
        &[("OMNIGATE_FAULT", "after_commit:2")],
    );
    gateway.wait_ready().await;
    assert_eq!(
        send(&gateway.base, "relay-1", "rv").await,
        Some(200),
        "first message"
    );
    assert_eq!(send(&gateway.base, "relay-2", "rv").await, None, "aborted");
    gateway.wait_exit(WAIT).await;
    let next = Process::start(&text, dir.path(), port);
    next.wait_ready().await;
    downstream
        .wait_until("the committed message", WAIT, |accepted| {
            accepted_ids(accepted).contains(&"relay-2".to_owned())
        })
        .await
        .expect("relayed after the restart, with no resend");
    let ids = accepted_ids(&downstream.accepted());
    assert_eq!(ids, ["relay-1", "relay-2"], "once each, in order");
}

/// The relay's settings for the crash tests of contact events: records are abandoned
/// after 1 s, swept every 200 ms; the subscription takes contact events too.
fn relayed_soon_with_contacts(text: &str) -> String {
    format!("{text}\n[pipeline]\nrelay_after = \"1s\"\n")
        .replace("[store]\n", "[store]\n        sweep_interval = \"200ms\"\n")
        .replace(
            r#"events = ["message.*"]"#,
            r#"events = ["message.*", "contact.*"]"#,
        )
}

/// The contact of the accepted delivery with provider id `external_id`.
fn contact_of(downstream: &Downstream, external_id: &str) -> Option<String> {
    downstream
        .accepted()
        .iter()
        .find(|seen| seen.external_id.as_deref() == Some(external_id))
        .and_then(|seen| {
            seen.body["data"]["contact"]["id"]
                .as_str()
                .map(str::to_owned)
        })
}

/// A link token for `contact`, from the gateway at `base`.
async fn link_token(base: &str, contact: &str) -> String {
    let (status, token) = post(
        &format!("{base}/v1/contacts/{contact}/link-tokens"),
        &api_auth(),
        "{}".to_owned(),
    )
    .await
    .expect("post");
    assert_eq!(status, 201, "{token}");
    let token: Value = serde_json::from_str(&token).expect("JSON");
    token["token"].as_str().expect("token").to_owned()
}

/// A gateway process armed to abort at a fault point (`OMNIGATE_FAULT`), relaying soon,
/// with what its restart needs.
struct Armed {
    _redis: RedisServer,
    downstream: Downstream,
    dir: tempfile::TempDir,
    text: String,
    port: u16,
    gateway: Process,
}

/// A gateway on its own Redis, aborting at `fault` (`<point>:<n>`), ready.
async fn armed(fault: &str) -> Armed {
    let (redis, downstream, dir, text) = process_set_up(Mode::Accept).await;
    let text = relayed_soon_with_contacts(&text);
    let port = free_port().expect("port");
    let gateway = Process::start_with_env(&text, dir.path(), port, &[("OMNIGATE_FAULT", fault)]);
    gateway.wait_ready().await;
    Armed {
        _redis: redis,
        downstream,
        dir,
        text,
        port,
        gateway,
    }
}

/// Send message `id` from `visitor` and wait for its delivery; its contact.
async fn first_message(
    gateway: &Process,
    downstream: &Downstream,
    id: &str,
    visitor: &str,
) -> String {
    assert_eq!(send(&gateway.base, id, visitor).await, Some(200));
    downstream
        .wait_until("the first message", WAIT, |accepted| {
            accepted_ids(accepted).iter().any(|seen| seen == id)
        })
        .await
        .expect("delivered");
    contact_of(downstream, id).expect("its contact")
}

/// After the aborted gateway of `armed` exits, start the next process on its port and wait until
/// the relay delivers a `kind` event (nothing resends); the sweeps after it must not
/// deliver it again (settled). The next process (kept running) and the event.
async fn restart_and_relay_once(armed: &mut Armed, kind: &str) -> (Process, Seen) {
    armed.gateway.wait_exit(WAIT).await;
    let next = Process::start(&armed.text, armed.dir.path(), armed.port);
    next.wait_ready().await;
    let downstream = &armed.downstream;
    downstream
        .wait_until(kind, WAIT, |accepted| {
            accepted.iter().any(|seen| seen.kind == kind)
        })
        .await
        .expect("relayed after the restart, with no resend");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut relayed: Vec<Seen> = downstream
        .accepted()
        .into_iter()
        .filter(|seen| seen.kind == kind)
        .collect();
    assert_eq!(relayed.len(), 1, "{kind} published once");
    (next, relayed.remove(0))
}

/// A link token's merge cut off by a crash from the message that redeemed it
/// (`after_link`: the merge committed, the message not recorded), from a sender that
/// never resends: the next process's relay publishes the `contact.merged` the merge kept
/// owed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_publishes_a_link_merge_a_crash_cut_off_from_its_message() {
    let mut armed = armed("after_link:1").await;
    let (gateway, downstream) = (&armed.gateway, &armed.downstream);
    let contact = first_message(gateway, downstream, "link-1", "lv-a").await;
    let code = link_token(&gateway.base, &contact).await;
    let body = message_saying("link-2", "lv-b", &format!("it is me: {code}"));
    assert_eq!(send_body(&gateway.base, body).await, None, "aborted");
    let (_next, merged) = restart_and_relay_once(&mut armed, "contact.merged").await;
    let data = &merged.body["data"];
    assert_eq!(
        data["contact"]["id"],
        contact.as_str(),
        "about the survivor"
    );
    assert_eq!(data["merge"]["survivor"], contact.as_str());
    assert!(
        data["merge"]["evidence"]
            .as_str()
            .is_some_and(|evidence| evidence.starts_with("link token redeemed")),
        "{data}"
    );
}

/// The same crash (`after_link`), then the provider resends the webhook to the next
/// process: the resent message lands on the survivor, its sender already merged (the
/// merge is not made again), and `contact.merged` is published once: the merge's owed
/// record is settled once, whether the relay or the resend gets there first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_webhook_resent_after_a_crash_publishes_its_merge_once() {
    let mut armed = armed("after_link:1").await;
    let (gateway, downstream) = (&armed.gateway, &armed.downstream);
    let contact = first_message(gateway, downstream, "relink-1", "rv-a").await;
    let code = link_token(&gateway.base, &contact).await;
    let body = message_saying("relink-2", "rv-b", &format!("it is me: {code}"));
    assert_eq!(
        send_body(&gateway.base, body.clone()).await,
        None,
        "aborted"
    );
    armed.gateway.wait_exit(WAIT).await;
    let next = Process::start(&armed.text, armed.dir.path(), armed.port);
    next.wait_ready().await;
    assert_eq!(send_body(&next.base, body).await, Some(200), "the resend");
    downstream
        .wait_until("the resent message and the merge", WAIT, |accepted| {
            accepted_ids(accepted).contains(&"relink-2".to_owned())
                && accepted.iter().any(|seen| seen.kind == "contact.merged")
        })
        .await
        .expect("delivered");
    // The relay's sweeps after it must find nothing left to publish.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let accepted = downstream.accepted();
    let merged: Vec<&Seen> = accepted
        .iter()
        .filter(|seen| seen.kind == "contact.merged")
        .collect();
    assert_eq!(merged.len(), 1, "contact.merged published once");
    assert_eq!(
        merged[0].body["data"]["merge"]["survivor"],
        contact.as_str()
    );
    let resent = accepted
        .iter()
        .filter(|seen| seen.external_id.as_deref() == Some("relink-2"))
        .count();
    assert_eq!(resent, 1, "the resent message published once");
    assert_eq!(
        contact_of(downstream, "relink-2").as_deref(),
        Some(contact.as_str()),
        "on the survivor"
    );
    let (status, survivor) = get(&format!("{}/v1/contacts/{contact}", next.base), &api_auth())
        .await
        .expect("get");
    assert_eq!(status, 200, "{survivor}");
    let survivor: Value = serde_json::from_str(&survivor).expect("JSON");
    let merges = survivor["merges"].as_array().expect("merges");
    assert_eq!(merges.len(), 1, "merged once: {survivor}");
}

/// A merge on a verified phone another contact owns, cut off by a crash from the event
/// that reported the phone (`after_shared_merge`: on Redis the merge is a step before the
/// event's), from a sender that never resends: the next process's relay publishes the
/// `contact.merged` the merge kept owed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_publishes_a_shared_handle_merge_a_crash_cut_off_from_its_event() {
    let mut armed = armed("after_shared_merge:1").await;
    let (gateway, downstream) = (&armed.gateway, &armed.downstream);
    let signed_in = |id: &str, visitor: &str, authenticated: bool| -> Vec<u8> {
        json!({
            "type": "message",
            "id": id,
            "visitor": {"id": visitor, "phone": "+1 650 555 1234", "authenticated": authenticated},
            "text": format!("text of {id}"),
        })
        .to_string()
        .into_bytes()
    };
    // A owns the phone (verified); B is anonymous, then signs in with the same phone.
    let owner = signed_in("shared-1", "sv-a", true);
    assert_eq!(send_body(&gateway.base, owner).await, Some(200));
    let anonymous = signed_in("shared-2", "sv-b", false);
    assert_eq!(send_body(&gateway.base, anonymous).await, Some(200));
    downstream
        .wait_until("both first messages", WAIT, |accepted| {
            let ids = accepted_ids(accepted);
            ids.contains(&"shared-1".to_owned()) && ids.contains(&"shared-2".to_owned())
        })
        .await
        .expect("delivered");
    let survivor = contact_of(downstream, "shared-1").expect("A");
    let absorbed = contact_of(downstream, "shared-2").expect("B");
    assert_ne!(survivor, absorbed, "an unverified phone links nothing");
    let merging = signed_in("shared-3", "sv-b", true);
    assert_eq!(send_body(&gateway.base, merging).await, None, "aborted");
    let (_next, merged) = restart_and_relay_once(&mut armed, "contact.merged").await;
    let merge = &merged.body["data"]["merge"];
    assert_eq!(merge["survivor"], survivor.as_str());
    assert_eq!(merge["absorbed"], absorbed.as_str());
}

/// An erasure cut short by a crash between its writes (`mid_erase`: the contact merged
/// into the erased one is gone, the erased one not yet) is finished by the next process's
/// relay, which then publishes the `contact.erased` the erasure owed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_finishes_an_erasure_a_crash_cut_short() {
    let mut armed = armed("mid_erase:1").await;
    let (gateway, downstream) = (&armed.gateway, &armed.downstream);
    let contact = first_message(gateway, downstream, "erase-1", "ev-a").await;
    // A second visitor redeems the contact's link token: merged into it.
    let code = link_token(&gateway.base, &contact).await;
    let body = message_saying("erase-2", "ev-b", &format!("it is me: {code}"));
    assert_eq!(send_body(&gateway.base, body).await, Some(200));
    let (status, merged) = get(
        &format!("{}/v1/contacts/{contact}", gateway.base),
        &api_auth(),
    )
    .await
    .expect("get");
    assert_eq!(status, 200, "{merged}");
    let merged: Value = serde_json::from_str(&merged).expect("JSON");
    let absorbed = merged["merges"][0]["absorbed"]
        .as_str()
        .expect("merged by the token")
        .to_owned();
    let erased = reqwest::Client::new()
        .delete(format!("{}/v1/contacts/{contact}", gateway.base))
        .bearer_auth(API_KEY)
        .send()
        .await;
    assert!(erased.is_err(), "aborted mid-erasure: {erased:?}");
    let (next, erasure) = restart_and_relay_once(&mut armed, "contact.erased").await;
    let downstream = &armed.downstream;
    assert_eq!(erasure.body["data"]["contact"]["id"], contact.as_str());
    // The relay finished the erasure before publishing it.
    for id in [&contact, &absorbed] {
        let (status, body) = get(&format!("{}/v1/contacts/{id}", next.base), &api_auth())
            .await
            .expect("get");
        assert_eq!(status, 404, "{id} erased: {body}");
    }
    assert_eq!(send(&next.base, "erase-3", "ev-b").await, Some(200));
    downstream
        .wait_until("a message after the erasure", WAIT, |accepted| {
            accepted_ids(accepted).contains(&"erase-3".to_owned())
        })
        .await
        .expect("delivered");
    let fresh = contact_of(downstream, "erase-3").expect("its contact");
    assert!(
        fresh != contact && fresh != absorbed,
        "the merged-in visitor's handle resolves to nobody after the erasure"
    );
    let erasures = downstream
        .accepted()
        .into_iter()
        .filter(|seen| seen.kind == "contact.erased")
        .count();
    assert_eq!(erasures, 1, "published once");
}

/// `GET` a `/v1` URL with the API key; the JSON answer.
async fn api_get(gateway: &Gateway, path: &str) -> Value {
    let (status, body) = get(&gateway.url(path), &api_auth()).await.expect("get");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

async fn api_post(gateway: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = post(&gateway.url(path), &api_auth(), body.to_string())
        .await
        .expect("post");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_400_dead_letters_then_replay_after_fix_delivers_once_in_order() {
    let redis = RedisServer::start().expect("redis");
    let downstream = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Fail(400, None))
        .await
        .expect("receiver");
    let gateway = Gateway::start(&config(&redis, &subscription("crm", &downstream.url())))
        .await
        .expect("gateway");
    let mut sent = Vec::new();
    for (visitor, count) in [(0, 3), (1, 2)] {
        for n in 0..count {
            let message_id = id(visitor, n);
            assert_eq!(
                send(&gateway.base, &message_id, &format!("v{visitor}")).await,
                Some(200)
            );
            sent.push(message_id);
        }
    }
    // Each is refused once (400 is permanent: no retry) and dead-lettered.
    let deadline = std::time::Instant::now() + WAIT;
    let letters = loop {
        let listed = api_get(&gateway, "/v1/dead-letters?subscription=crm").await;
        let letters = listed["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if letters.len() == sent.len() {
            break letters;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dead letters: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(downstream.seen().len(), sent.len(), "no retry of a 400");
    assert!(letters.iter().all(
        |l| l["attempts"] == 1 && l["last_error"].as_str().unwrap_or_default().contains("400")
    ));
    // Filters: by conversation, and a time window that ends before they were given up.
    let conversation = letters[0]["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_owned();
    let one = api_get(
        &gateway,
        &format!("/v1/dead-letters?conversation={conversation}"),
    )
    .await;
    let in_conversation = one["dead_letters"].as_array().map_or(0, Vec::len);
    assert!(in_conversation == 3 || in_conversation == 2, "{one}");
    let none = api_get(&gateway, "/v1/dead-letters?until=2020-01-01T00:00:00Z").await;
    assert_eq!(none["dead_letters"].as_array().map(Vec::len), Some(0));
    let (status, body) = api_post(&gateway, "/v1/dead-letters/0-1/replay", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_dead_letter"))
    );

    // The receiver is fixed: replay one by id, then the rest in bulk.
    downstream.set(Mode::Accept);
    let first_id = letters[0]["id"].as_str().expect("id");
    let (status, body) = api_post(
        &gateway,
        &format!("/v1/dead-letters/{first_id}/replay"),
        json!({}),
    )
    .await;
    assert_eq!((status, &body["replayed"]), (202, &json!(1)));
    let (status, body) = api_post(
        &gateway,
        "/v1/dead-letters/replay",
        json!({"subscription": "crm"}),
    )
    .await;
    assert_eq!((status, &body["replayed"]), (202, &json!(sent.len() - 1)));
    downstream
        .wait_until("every replayed message", WAIT, |accepted| {
            let ids = accepted_ids(accepted);
            sent.iter().all(|id| ids.contains(id))
        })
        .await
        .expect("replayed after the fix");
    let (per_conversation, duplicates) = received_per_conversation(&downstream);
    assert_in_order(&per_conversation);
    assert_eq!(duplicates, 0, "each replayed exactly once");
    assert_eq!(downstream.accepted().len(), sent.len());
    let listed = api_get(&gateway, "/v1/dead-letters").await;
    assert_eq!(listed["dead_letters"].as_array().map(Vec::len), Some(0));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_returns_in_flight_deliveries_to_the_outbox() {
    let redis = RedisServer::start().expect("redis");
    let downstream = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Fail(503, None))
        .await
        .expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config(&redis, &subscription("crm", &downstream.url()));
    let mut gateway = Process::start(&text, dir.path(), free_port().expect("port"));
    gateway.wait_ready().await;
    let mut sent = Vec::new();
    for n in 0..5 {
        for visitor in 0..3 {
            let message_id = id(visitor, n);
            assert_eq!(
                send(&gateway.base, &message_id, &format!("v{visitor}")).await,
                Some(200)
            );
            sent.push(message_id);
        }
    }
    downstream
        .wait_until("failing attempts", WAIT, |_| downstream.seen().len() >= 6)
        .await
        .expect("deliveries in flight");
    // Graceful stop while every delivery is failing: it exits cleanly, and intake is closed.
    let status = gateway.terminate().await;
    assert!(status.success(), "{status}");
    assert_eq!(
        send(&gateway.base, "m-late", "v0").await,
        None,
        "no intake after SIGTERM"
    );
    assert!(downstream.accepted().is_empty());

    // What it held went back to the outbox: another instance delivers all of it, in order.
    downstream.set(Mode::Accept);
    let next = Process::start(&text, dir.path(), free_port().expect("port"));
    next.wait_ready().await;
    downstream
        .wait_until("every message", WAIT, |accepted| {
            let ids = accepted_ids(accepted);
            sent.iter().all(|id| ids.contains(id))
        })
        .await
        .expect("returned deliveries delivered by the next instance");
    let (per_conversation, _) = received_per_conversation(&downstream);
    assert_in_order(&per_conversation);
    drop(next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_streams_sink_appends_events_for_consumer_groups() {
    let redis = RedisServer::start().expect("redis");
    let sink = format!(
        r#"
        [[subscriptions]]
        id = "analytics"
        kind = "redis-stream"
        url = "{url}"
        stream = "analytics:events"
        maxlen = 1000
        events = ["message.*"]
        "#,
        url = redis.url()
    );
    let gateway = Gateway::start(&config(&redis, &sink))
        .await
        .expect("gateway");
    // A downstream consumer group, created before the events arrive.
    let created = redis
        .cli(&[
            "XGROUP",
            "CREATE",
            "analytics:events",
            "bi",
            "$",
            "MKSTREAM",
        ])
        .expect("redis-cli");
    assert_eq!(created, "OK");
    for n in 0..3 {
        assert_eq!(send(&gateway.base, &id(0, n), "v0").await, Some(200));
    }
    let deadline = std::time::Instant::now() + WAIT;
    while redis.cli(&["XLEN", "analytics:events"]).expect("xlen") != "3" {
        assert!(std::time::Instant::now() < deadline, "3 entries appended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = redis
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "bi",
            "worker-1",
            "COUNT",
            "10",
            "STREAMS",
            "analytics:events",
            ">",
        ])
        .expect("xreadgroup");
    let lines: Vec<&str> = read.lines().collect();
    let field = |name: &str| -> Vec<String> {
        lines
            .windows(2)
            .filter(|pair| pair[0] == name)
            .map(|pair| pair[1].to_owned())
            .collect()
    };
    assert_eq!(field("type"), vec!["dev.omnigate.message.received"; 3]);
    assert_eq!(field("source"), vec!["/channels/web"; 3]);
    let ids = field("id");
    let external: Vec<String> = field("data")
        .iter()
        .zip(&ids)
        .map(|(data, entry_id)| {
            let event: Value = serde_json::from_str(data).expect("event JSON");
            assert_eq!(event["id"].as_str(), Some(entry_id.as_str()));
            event["external_id"]
                .as_str()
                .expect("external id")
                .to_owned()
        })
        .collect();
    assert_eq!(external, [id(0, 0), id(0, 1), id(0, 2)], "in order");
    let subjects = field("subject");
    assert!(
        subjects
            .iter()
            .all(|s| s == &subjects[0] && s.starts_with("cv_"))
    );
    let metrics = gateway.app.delivery.metrics().await;
    assert_eq!(metrics.subscriptions[0].delivered, 3);
    // A test send appends a ping to the stream too (the same sink, not an HTTP POST).
    let (status, body) = post(
        &gateway.url("/v1/subscriptions/analytics/test"),
        &api_auth(),
        Vec::new(),
    )
    .await
    .expect("test send");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["delivered"], true, "{answer}");
    let last = redis
        .cli(&["XREVRANGE", "analytics:events", "+", "-", "COUNT", "1"])
        .expect("xrevrange");
    assert!(
        last.lines().any(|line| line == "dev.omnigate.ping"),
        "{last}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_outbox_delivers_in_order() {
    let cluster = omnigate_tests::redis::RedisCluster::start().expect("cluster");
    let downstream = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Fail(503, None))
        .await
        .expect("receiver");
    // The standalone config, with the cluster as store and outbox, in the
    // `redis+cluster://h1:p1,h2:p2,…` form (comma-separated `redis://` seeds are
    // covered by the store conformance suite).
    let standalone = RedisServer::start().expect("redis");
    let hosts: Vec<String> = cluster
        .urls()
        .iter()
        .map(|url| url.trim_start_matches("redis://").to_owned())
        .collect();
    let text = config(&standalone, &subscription("crm", &downstream.url())).replace(
        &standalone.url(),
        &format!("redis+cluster://{}", hosts.join(",")),
    );
    let gateway = Gateway::start(&text).await.expect("gateway");
    let mut sent = Vec::new();
    for n in 0..4 {
        for visitor in 0..3 {
            let message_id = id(visitor, n);
            assert_eq!(
                send(&gateway.base, &message_id, &format!("v{visitor}")).await,
                Some(200)
            );
            sent.push(message_id);
        }
    }
    downstream.set(Mode::Accept);
    downstream
        .wait_until("every message", WAIT, |accepted| {
            let ids = accepted_ids(accepted);
            sent.iter().all(|id| ids.contains(id))
        })
        .await
        .expect("delivered through the cluster outbox");
    let (per_conversation, duplicates) = received_per_conversation(&downstream);
    assert_eq!(per_conversation.len(), 3);
    assert_in_order(&per_conversation);
    assert_eq!(duplicates, 0);
    gateway.stop().await;
}

/// Entries in the outbox streams of `partitions` partitions.
fn outbox_len(redis: &RedisServer, partitions: u32) -> u64 {
    (0..partitions)
        .map(|p| {
            let key = format!("omnigate:outbox:{{outbox-{p}}}");
            let answer = redis.cli(&["XLEN", &key]).expect("XLEN");
            answer.trim().parse::<u64>().expect("a count")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_keeps_what_a_subscription_needs_and_nothing_nobody_reads() {
    let redis = RedisServer::start().expect("redis");
    // No subscription: nothing is appended (a subscription made later starts at the end
    // of the stream, so it could never be delivered), and the messages are recorded.
    let gateway = Gateway::start(&config(&redis, "")).await.expect("gateway");
    for n in 0..8 {
        assert_eq!(
            send(&gateway.base, &id(n % 4, n), &format!("v-{}", n % 4)).await,
            Some(200)
        );
    }
    assert_eq!(outbox_len(&redis, 4), 0, "nobody wants them: not appended");
    let contacts = redis
        .cli(&["--scan", "--pattern", "og:{ct_*}:c"])
        .expect("scan");
    assert_eq!(
        contacts.lines().count(),
        4,
        "four visitors recorded: {contacts}"
    );
    gateway.stop().await;

    // A subscription whose receiver is down: its events stay until it takes them.
    let downstream = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Fail(503, None))
        .await
        .expect("receiver");
    let text = config(&redis, &subscription("crm", &downstream.url()));
    let gateway = Gateway::start(&text).await.expect("gateway");
    for n in 8..12 {
        assert_eq!(
            send(&gateway.base, &id(n % 4, n), &format!("v-{}", n % 4)).await,
            Some(200)
        );
    }
    wait_for_status(&downstream, 503).await;
    let kept = outbox_len(&redis, 4);
    assert!(kept >= 4, "the events are appended: {kept}");
    gateway.app.delivery.trim_outbox().await.expect("trim");
    assert_eq!(
        outbox_len(&redis, 4),
        kept,
        "the subscription still needs them"
    );
    gateway.stop().await;
}
