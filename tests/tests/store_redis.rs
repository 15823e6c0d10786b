//! The gateway on the Redis store, end to end: Redis killed and restarted mid-stream, and
//! two gateway instances sharing one Redis.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use omnigate_tests::redis::RedisServer;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, WAIT, api_auth, get, plugin_path, post, site_and_receiver,
    standard_webhooks_headers, toml_path, webchat_channel_config,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(store_url: &str, site: &FakeApi, receiver: &Receiver) -> String {
    let channel = webchat_channel_config(&plugin_path("webchat"), SITE_SECRET, site, receiver);
    format!("[store]\nurl = \"{store_url}\"\n{channel}")
}

fn message(id: &str, visitor: &str) -> Vec<u8> {
    json!({
        "type": "message",
        "id": id,
        "visitor": {"id": visitor, "name": "Ana"},
        "text": format!("text {id}"),
        "sent_at": jiff::Timestamp::now().to_string()
    })
    .to_string()
    .into_bytes()
}

/// POST a signed web chat webhook; returns the status.
async fn send(gateway: &Gateway, body: &[u8]) -> u16 {
    let headers =
        standard_webhooks_headers(SITE_SECRET, &format!("wh_{}", ulid::Ulid::generate()), body)
            .expect("sign");
    match post(&gateway.url("/webhooks/web"), &headers, body.to_vec()).await {
        Ok((status, _)) => status,
        Err(_) => 0,
    }
}

fn received_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .of_type("message.received")
        .iter()
        .filter_map(|event| event["external_id"].as_str().map(str::to_owned))
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(gateway: &Gateway) -> u16 {
    get(&gateway.url("/readyz"), &[])
        .await
        .map_or(0, |(status, _)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_means_503_and_recovery_without_restart_loses_nothing_acknowledged() {
    // Persisted like a production Redis (the outbox lives there too): a restart keeps
    // what was acknowledged.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
        .expect("redis-server");
    let (site, receiver) = site_and_receiver().await;
    let gateway = Gateway::start(&config(&redis.url(), &site, &receiver))
        .await
        .expect("gateway");
    assert_eq!(readyz(&gateway).await, 200);

    let mut acknowledged = Vec::new();
    let mut refused = 0usize;
    for i in 0..60 {
        if i == 20 {
            redis.kill();
        }
        let id = format!("m{i}");
        let status = send(&gateway, &message(&id, "v1")).await;
        match status {
            200..=299 => acknowledged.push(id),
            503 => refused += 1,
            other => panic!("unexpected status {other} for {id}"),
        }
        if i == 40 {
            // While Redis is down the gateway is not ready.
            assert_eq!(readyz(&gateway).await, 503);
            redis.restart().expect("restart");
        }
    }
    assert!(refused > 0, "webhooks are refused while Redis is down");
    // The provider retries what was refused; once Redis is back they are accepted,
    // without restarting the gateway.
    let deadline = Instant::now() + WAIT;
    for i in 0..60 {
        let id = format!("m{i}");
        if acknowledged.contains(&id) {
            continue;
        }
        loop {
            if (200..300).contains(&send(&gateway, &message(&id, "v1")).await) {
                acknowledged.push(id);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never accepted after Redis came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(readyz(&gateway).await, 200, "ready again");
    let deadline = Instant::now() + WAIT;
    loop {
        let delivered: HashSet<String> = received_ids(&receiver).into_iter().collect();
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !delivered.contains(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but never delivered: {missing:?} (refused while down: {refused})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_without_its_data_delivery_resumes_for_new_events() {
    let mut redis = RedisServer::start().expect("redis-server");
    let (site, receiver) = site_and_receiver().await;
    let gateway = Gateway::start(&config(&redis.url(), &site, &receiver))
        .await
        .expect("gateway");
    assert_eq!(send(&gateway, &message("before", "v1")).await, 200);
    wait_until("the first message delivered", || {
        received_ids(&receiver).contains(&"before".to_owned())
    })
    .await;
    // An empty Redis: streams and consumer groups are gone. The outbox recreates its
    // groups and new events are delivered, without a gateway restart.
    redis.restart().expect("restart");
    let mut accepted = Vec::new();
    let deadline = Instant::now() + WAIT;
    for i in 0..5 {
        let id = format!("after-{i}");
        while send(&gateway, &message(&id, "v1")).await != 200 {
            assert!(Instant::now() < deadline, "{id} never accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        accepted.push(id);
    }
    wait_until("every message after the restart delivered", || {
        let delivered: HashSet<String> = received_ids(&receiver).into_iter().collect();
        accepted.iter().all(|id| delivered.contains(id))
    })
    .await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_publish_each_event_once() {
    let redis = RedisServer::start().expect("redis-server");
    let (site, receiver) = site_and_receiver().await;
    let one = Gateway::start(&config(&redis.url(), &site, &receiver))
        .await
        .expect("one");
    let two = Gateway::start(&config(&redis.url(), &site, &receiver))
        .await
        .expect("two");
    const VISITORS: usize = 8;
    const MESSAGES: usize = 12;
    // Every webhook goes to both instances at once (a provider retrying on another
    // instance), visitors interleaved.
    let mut tasks = Vec::new();
    for m in 0..MESSAGES {
        for v in 0..VISITORS {
            let body = message(&format!("v{v}-m{m}"), &format!("visitor-{v}"));
            for gateway in [&one, &two] {
                let url = gateway.url("/webhooks/web");
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    let headers = standard_webhooks_headers(
                        SITE_SECRET,
                        &format!("wh_{}", ulid::Ulid::generate()),
                        &body,
                    )
                    .expect("sign");
                    post(&url, &headers, body).await.expect("post").0
                }));
            }
        }
    }
    for task in tasks {
        let status = task.await.expect("task");
        assert!((200..300).contains(&status), "status {status}");
    }
    let expected = VISITORS * MESSAGES;
    wait_until("every message delivered", || {
        received_ids(&receiver).len() >= expected
    })
    .await;
    // Let any duplicate that would come arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.of_type("message.received");
    assert_eq!(received.len(), expected, "no duplicate events");
    let unique: HashSet<&str> = received
        .iter()
        .filter_map(|event| event["external_id"].as_str())
        .collect();
    assert_eq!(unique.len(), expected);
    let mut conversations: HashMap<String, HashSet<String>> = HashMap::new();
    for event in &received {
        let contact = event["contact"]["id"].as_str().expect("contact").to_owned();
        let conversation = event["conversation"]["id"].as_str().expect("conversation");
        conversations
            .entry(contact)
            .or_default()
            .insert(conversation.to_owned());
    }
    assert_eq!(conversations.len(), VISITORS, "one contact per visitor");
    assert!(
        conversations.values().all(|c| c.len() == 1),
        "one conversation per contact"
    );
    assert_eq!(receiver.of_type("conversation.started").len(), VISITORS);
    // Counters are exact, read through either instance.
    for (contact, ids) in &conversations {
        let id = ids.iter().next().expect("one");
        let (status, body) = get(&two.url(&format!("/v1/conversations/{id}")), &api_auth())
            .await
            .expect("get");
        assert_eq!(status, 200, "{body}");
        let value: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            value["conversation"]["messages"], MESSAGES as u64,
            "{contact}"
        );
        assert_eq!(value["contact"]["id"], contact.as_str());
    }
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_conversations_are_closed_by_the_sweeper_once_across_instances() {
    let redis = RedisServer::start().expect("redis-server");
    let (site, receiver) = site_and_receiver().await;
    let config = format!(
        "{}\n[pipeline]\ninactivity = \"1s\"\n",
        config(&redis.url(), &site, &receiver)
            .replace("[store]\n", "[store]\n        sweep_interval = \"100ms\"\n")
    );
    let one = Gateway::start(&config).await.expect("one");
    let two = Gateway::start(&config).await.expect("two");
    let body = json!({"type": "message", "id": "c1", "visitor": {"id": "v"}, "text": "hola"});
    send(&one, body.to_string().as_bytes()).await;
    wait_until("conversation.closed", || {
        !receiver.of_type("conversation.closed").is_empty()
    })
    .await;
    let started = receiver.of_type("conversation.started");
    let closed = receiver.of_type("conversation.closed");
    assert_eq!(
        closed[0]["conversation"]["id"],
        started[0]["conversation"]["id"]
    );
    assert_eq!(closed[0]["conversation"]["status"], "closed");
    assert_eq!(closed[0]["channel"]["id"], "web");
    // Both instances sweep; give a duplicate the time to show up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.of_type("conversation.closed").len(),
        1,
        "closed once"
    );
    let body = json!({"type": "message", "id": "c2", "visitor": {"id": "v"}, "text": "otra vez"});
    send(&two, body.to_string().as_bytes()).await;
    wait_until("a second conversation", || {
        receiver.of_type("conversation.started").len() == 2
    })
    .await;
    one.stop().await;
    two.stop().await;
}

/// The gateway on a TLS-only Redis with a password in the URL and a private CA
/// (`[store] tls_ca_file`): ready, webhooks recorded and delivered through the Redis
/// Streams outbox, the contact readable through the API, the stream on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_on_rediss_with_a_password_and_a_private_ca() {
    let redis =
        RedisServer::start_tls(&["--requirepass", "tls-s3cret"]).expect("redis-server with TLS");
    let ca = redis.tls_files().expect("TLS files").ca.clone();
    let url = format!("rediss://:tls-s3cret@127.0.0.1:{}", redis.port());
    let (site, receiver) = site_and_receiver().await;
    let config = config(&url, &site, &receiver).replacen(
        "[store]",
        &format!("[store]\ntls_ca_file = {}", toml_path(&ca)),
        1,
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    assert_eq!(readyz(&gateway).await, 200);
    for id in ["t1", "t2"] {
        assert_eq!(send(&gateway, &message(id, "tls-visitor")).await, 200);
    }
    wait_until("both messages delivered", || {
        received_ids(&receiver).len() == 2
    })
    .await;
    assert_eq!(received_ids(&receiver), vec!["t1", "t2"]);
    let event = receiver.of_type("message.received").remove(1);
    assert_eq!(event["conversation"]["messages"], 2);
    let contact = event["contact"]["id"].as_str().expect("contact");
    let (status, body) = get(
        &gateway.url(&format!("/v1/contacts/{contact}")),
        &api_auth(),
    )
    .await
    .expect("get");
    assert_eq!(status, 200, "{body}");
    // The events went through the outbox streams on this server.
    let streams = redis
        .cli(&[
            "-a",
            "tls-s3cret",
            "--no-auth-warning",
            "--scan",
            "--pattern",
            "omnigate:outbox:*",
        ])
        .expect("redis-cli");
    assert!(streams.contains("omnigate:outbox:{outbox-"), "{streams}");
    gateway.stop().await;
}

/// `[store] contact_retention`: a contact with no message for that long is erased by the
/// sweeper, with `contact.erased` (ids only), and is gone from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_contacts_are_erased_after_the_contact_retention() {
    let redis = RedisServer::start().expect("redis-server");
    let (site, receiver) = site_and_receiver().await;
    let config = config(&redis.url(), &site, &receiver).replace(
        "[store]\n",
        "[store]\n        sweep_interval = \"100ms\"\n        contact_retention = \"1s\"\n",
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    let body = json!({"type": "message", "id": "r1", "visitor": {"id": "v-ret", "name": "Ana"}, "text": "hola"});
    assert_eq!(send(&gateway, body.to_string().as_bytes()).await, 200);
    wait_until("message.received", || {
        !receiver.of_type("message.received").is_empty()
    })
    .await;
    let contact = receiver.of_type("message.received")[0]["contact"]["id"]
        .as_str()
        .expect("contact id")
        .to_owned();
    wait_until("contact.erased", || {
        !receiver.of_type("contact.erased").is_empty()
    })
    .await;
    let erased = &receiver.of_type("contact.erased")[0];
    assert_eq!(erased["contact"]["id"], contact.as_str());
    assert!(
        erased["contact"]["name"].is_null(),
        "no personal data: {erased}"
    );
    let (status, _) = omnigate_tests::get(
        &gateway.url(&format!("/v1/contacts/{contact}")),
        &omnigate_tests::api_auth(),
    )
    .await
    .expect("get");
    assert_eq!(status, 404, "erased");
    gateway.stop().await;
}

/// Calls per command since the server started (`INFO commandstats`), e.g. `evalsha`.
fn command_calls(redis: &RedisServer) -> HashMap<String, u64> {
    let info = redis.cli(&["INFO", "commandstats"]).expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// What `n` messages of one known visitor in an open conversation cost in Redis: the
/// store's round trips, and the calls of the message path's commands counted by
/// redis-server (`INFO commandstats` counts a script's own commands too: a command sent
/// by the client as well shows as one call more per message).
async fn cost_of_known_sender(
    gateway: &Gateway,
    redis: &RedisServer,
    n: usize,
) -> (u64, HashMap<String, u64>) {
    let visitor = format!("v-{}", ulid::Ulid::generate());
    assert_eq!(
        send(gateway, &message(&format!("{visitor}-open"), &visitor)).await,
        200
    );
    let store = gateway.app.pipeline.store().clone();
    let trips = store.round_trips().expect("counted by the Redis store");
    let before = command_calls(redis);
    for i in 0..n {
        assert_eq!(
            send(gateway, &message(&format!("{visitor}-{i}"), &visitor)).await,
            200
        );
    }
    // Owed records are settled after the answers, in batches: wait until no contact
    // owes anything (a hash without fields is gone; SCAN is no command of the path).
    wait_until("owed records settled", || {
        redis
            .cli(&["--scan", "--pattern", "og:{ct_*}:owed"])
            .is_ok_and(|keys| keys.is_empty())
    })
    .await;
    let after = command_calls(redis);
    let path = [
        "evalsha", "eval", "get", "zadd", "hset", "hdel", "xadd", "sadd", "lrange",
    ];
    let used = path
        .iter()
        .map(|name| {
            let delta = after.get(*name).unwrap_or(&0) - before.get(*name).unwrap_or(&0);
            ((*name).to_owned(), delta)
        })
        .filter(|(_, delta)| *delta > 0)
        .collect();
    (store.round_trips().expect("counted") - trips, used)
}

/// One Redis request per message of a known sender in an open conversation when nothing
/// is published (no subscription wants it) and no outcome step follows: the script.
/// With a subscription, the outbox append and the owed record's settle follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_requests_per_message_of_a_known_sender() {
    const N: u64 = 20;
    let calls = |pairs: &[(&str, u64)]| -> HashMap<String, u64> {
        pairs
            .iter()
            .map(|(name, calls)| ((*name).to_owned(), *calls))
            .collect()
    };
    let redis = RedisServer::start().expect("redis-server");
    let quiet = format!(
        "[store]\nurl = \"{}\"\n[outcomes]\nenabled = false\n[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"{SITE_SECRET}\" }}\n",
        redis.url(),
        toml_path(&plugin_path("webchat"))
    );
    let gateway = Gateway::start(&quiet).await.expect("gateway");
    let (trips, used) = cost_of_known_sender(&gateway, &redis, N as usize).await;
    assert_eq!(trips, N, "one round trip per message");
    // The script, and in it the handle lookup (GET), the dedupe entry (ZADD) and the
    // conversation's changes (HSET): no hint, no outbox append, no settle.
    assert_eq!(
        used,
        calls(&[("evalsha", N), ("get", N), ("zadd", N), ("hset", N)]),
        "one command per message: the script"
    );
    gateway.stop().await;

    let redis = RedisServer::start().expect("redis-server");
    let (site, receiver) = site_and_receiver().await;
    // Outcomes off here too: their sweep's reads would run beside the messages. The
    // subscription wants the last 10 messages with each event.
    let text = format!(
        "{}\nhistory = 10\n[outcomes]\nenabled = false\n",
        config(&redis.url(), &site, &receiver)
    );
    let gateway = Gateway::start(&text).await.expect("gateway");
    let (trips, used) = cost_of_known_sender(&gateway, &redis, N as usize).await;
    // The script with the owed-record hint beside it (ZADD); the outbox append (XADD)
    // is the delivery outbox's own request; the settles (HDEL) follow the answers, a
    // batch in one round trip (one HDEL per contact), so at most one per message.
    for (command, expected) in [("evalsha", N), ("get", N), ("zadd", 2 * N), ("xadd", N)] {
        assert_eq!(used.get(command), Some(&expected), "{command}: {used:?}");
    }
    let settles = used.get("hdel").copied().unwrap_or(0);
    assert!((1..=N).contains(&settles), "settles: {used:?}");
    assert_eq!(trips, N + settles, "the scripts, then the settle batches");
    // The instance holds the conversation's last messages: the script reads none back.
    assert_eq!(used.get("lrange"), None, "history read back: {used:?}");
    wait_until("every message delivered", || {
        received_ids(&receiver).len() == N as usize + 1
    })
    .await;
    let last = receiver
        .of_type("message.received")
        .into_iter()
        .find(|event| {
            event["external_id"]
                .as_str()
                .is_some_and(|id| id.ends_with(&format!("-{}", N - 1)))
        })
        .expect("the last message delivered");
    let texts: Vec<&str> = last["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|entry| entry["text"].as_str())
        .collect();
    let wanted: Vec<String> = (N - 10..N).map(|i| format!("-{i}")).collect();
    let ends: Vec<bool> = texts
        .iter()
        .zip(&wanted)
        .map(|(text, want)| text.ends_with(want.as_str()))
        .collect();
    assert_eq!((texts.len(), ends), (10, vec![true; 10]), "{texts:?}");
    gateway.stop().await;
}
