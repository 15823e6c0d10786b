//! End-to-end tests of delivery against real local HTTP receivers (axum on 127.0.0.1:0).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use omnigate_signature::standard_webhooks::signed_content;
use omnigate_signature::{Scheme, verify};
use serde_json::Value;

use super::*;
use crate::event::{
    Attribution, ChannelRef, ContactSnapshot, ConversationSnapshot, ConversationStatus, Direction,
    Event, EventType, HistoryEntry, Message, SCHEMA_VERSION,
};
use crate::secret::Secret;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------------------------------------------------------------------------------------
// Helpers: events, configuration, a verifying receiver.

fn init() {
    // reqwest is built with `rustls-no-provider`; main installs ring, tests do it here.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("valid timestamp")
}

fn event(id: &str, kind: EventType, channel: &str, conversation: &str) -> Event {
    let occurred = at("2026-11-24T10:00:00Z");
    Event {
        id: id.to_owned(),
        kind,
        schema: SCHEMA_VERSION.to_owned(),
        occurred_at: occurred,
        received_at: at("2026-11-24T10:00:01Z"),
        channel: ChannelRef {
            id: channel.to_owned(),
            kind: "webchat".into(),
            account: None,
        },
        external_id: Some(format!("ext-{id}")),
        contact: std::sync::Arc::new(ContactSnapshot {
            id: "ct_1".into(),
            name: Some("Ana".into()),
            handles: vec![],
        }),
        conversation: std::sync::Arc::new(ConversationSnapshot {
            id: conversation.to_owned(),
            status: ConversationStatus::Open,
            started_at: occurred,
            last_activity_at: occurred,
            channels_used: vec![channel.to_owned()],
            current_channel: channel.to_owned(),
            previous_channel: None,
            messages: 1,
            reply_window_until: None,
            attribution: Attribution::default(),
        }),
        message: Some(std::sync::Arc::new(Message {
            direction: Direction::Inbound,
            text: Some("Hola".into()),
            parts: vec![],
            reply_to: None,
            forwarded: false,
            interactive_reply: None,
        })),
        status: None,
        reaction: None,
        target_message_id: None,
        referral: None,
        merge: None,
        first_response: None,
        stage: None,
        lost: None,
        conversion: None,
        history: vec![],
        raw: None,
    }
}

fn message(id: &str, conversation: &str) -> Event {
    event(id, EventType::MessageReceived, "web", conversation)
}

fn settings(retry_ms: &[u64]) -> DeliverySettings {
    DeliverySettings {
        retry_schedule: retry_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        timeout: Duration::from_secs(5),
        max_in_flight: 1000,
        partitions: 4,
        // The receivers listen on loopback.
        allow_networks: crate::netguard::NetworkPolicy::parse(&["127.0.0.0/8".into()])
            .expect("valid network"),
        ..DeliverySettings::default()
    }
}

fn subscription(url: String) -> SubscriptionConfig {
    SubscriptionConfig {
        id: None,
        kind: SubscriptionKind::Http,
        stream: None,
        maxlen: None,
        url,
        secret: Secret::new(SECRET),
        events: vec!["*".into()],
        channels: vec![],
        history: 0,
        include_raw: false,
        mode: CloudEventsMode::Structured,
        previous_secret: None,
        previous_secret_expires: None,
        destination: None,
    }
}

async fn publish(delivery: &Delivery, events: Vec<Event>) {
    let reservation = delivery
        .reserve(events.len(), Duration::from_secs(5))
        .await
        .expect("room");
    reservation
        .publish(events.into_iter().map(Arc::new).collect())
        .await
        .expect("published");
}

/// Polls `check` until it holds; the bound only keeps a broken test from hanging.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the receiver answers.
#[derive(Clone, Copy)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    /// Never answer (backpressure, shutdown).
    stall: bool,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            stall: false,
        }
    }
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    verified: bool,
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

type Respond = Box<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

struct ReceiverState {
    requests: parking_lot::Mutex<Vec<Received>>,
    attempts: parking_lot::Mutex<HashMap<String, usize>>,
    respond: Respond,
}

struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts a receiver; `respond` gets each verified request and its attempt number
    /// (1-based, per `webhook-id`).
    async fn start(respond: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(ReceiverState {
            requests: parking_lot::Mutex::default(),
            attempts: parking_lot::Mutex::default(),
            respond: Box::new(respond),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{address}"),
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().clone()
    }
}

/// Checks the Standard Webhooks signature the way a downstream tool would.
fn signature_valid(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return false;
    };
    let content = signed_content(id, timestamp, body);
    verify(
        Scheme::StandardWebhooks,
        SECRET.as_bytes(),
        &content,
        signature,
    )
    .unwrap_or(false)
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verified = signature_valid(&headers, &body);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let attempt = {
        let mut attempts = state.attempts.lock();
        let count = attempts.entry(id).or_default();
        *count += 1;
        *count
    };
    let mut received = Received {
        path: uri.path().to_owned(),
        headers,
        body,
        verified,
        status: 0,
    };
    // An unverifiable request is refused, as a real receiver would (401 is permanent).
    let reply = if verified {
        (state.respond)(&received, attempt)
    } else {
        Reply::status(401)
    };
    received.status = reply.status;
    state.requests.lock().push(received);
    if reply.stall {
        std::future::pending::<()>().await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.retry_after {
        Some(value) => (status, [("retry-after", value)]).into_response(),
        None => status.into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn delivers_signed_cloudevent() {
    init();
    let receiver = Receiver::start(|_, _| Reply::status(204)).await;
    let delivery =
        Delivery::start(settings(&[]), vec![subscription(receiver.url("/hook"))]).expect("starts");
    let mut sent = message("evt_01", "cv_1");
    sent.channel.id = "wa-main".into();
    publish(&delivery, vec![sent]).await;
    eventually("delivery", || delivery.stats().delivered == 1).await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert!(request.verified, "signature must verify");
    assert_eq!(request.path, "/hook");
    assert_eq!(
        request.header("content-type"),
        "application/cloudevents+json"
    );
    assert_eq!(request.header("webhook-id"), "evt_01");
    assert!(request.header("webhook-signature").starts_with("v1,"));
    assert!(request.header("user-agent").starts_with("omnigate/"));
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    assert!((Timestamp::now().as_second() - timestamp).abs() < 300);

    let body = request.json();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], "evt_01");
    assert_eq!(body["type"], "dev.omnigate.message.received");
    assert_eq!(body["source"], "/channels/wa-main");
    assert_eq!(body["subject"], "cv_1");
    assert_eq!(body["time"], "2026-11-24T10:00:00Z");
    assert_eq!(body["datacontenttype"], "application/json");
    assert_eq!(body["data"]["id"], "evt_01");
    assert_eq!(body["data"]["type"], "message.received");
    assert_eq!(body["data"]["message"]["text"], "Hola");

    // The receiver really checks: a tampered body or a wrong key does not verify.
    assert!(!signature_valid(&request.headers, b"{\"tampered\":true}"));
    eventually("capacity back", || delivery.stats().pending == 0).await;
    assert_eq!(delivery.shutdown(Duration::from_secs(1)).await, 0);
}

#[tokio::test]
async fn filters_by_event_type_and_channel() {
    init();
    let receiver = Receiver::start(|_, _| Reply::status(200)).await;
    let mut messages = subscription(receiver.url("/messages"));
    messages.events = vec!["message.*".into()];
    let mut wa_only = subscription(receiver.url("/wa"));
    wa_only.channels = vec!["wa-main".into()];
    let mut web_conversations = subscription(receiver.url("/web-conversations"));
    web_conversations.events = vec!["conversation.*".into()];
    web_conversations.channels = vec!["web".into()];
    let delivery =
        Delivery::start(settings(&[]), vec![messages, wa_only, web_conversations]).expect("starts");

    publish(
        &delivery,
        vec![
            event("evt_msg_web", EventType::MessageReceived, "web", "cv_1"),
            event(
                "evt_started_wa",
                EventType::ConversationStarted,
                "wa-main",
                "cv_2",
            ),
            event("evt_msg_wa", EventType::MessageReceived, "wa-main", "cv_2"),
        ],
    )
    .await;
    eventually("fan-out", || delivery.stats().pending == 0).await;

    let mut got: Vec<(String, String)> = receiver
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.header("webhook-id").to_owned()))
        .collect();
    got.sort();
    let expected = [
        ("/messages", "evt_msg_wa"),
        ("/messages", "evt_msg_web"),
        ("/wa", "evt_msg_wa"),
        ("/wa", "evt_started_wa"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(p, id)| ((*p).to_owned(), (*id).to_owned()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(delivery.stats().delivered, 4);
}

#[tokio::test]
async fn retries_transient_failures_with_same_webhook_id() {
    init();
    let receiver = Receiver::start(|request, attempt| match request.header("webhook-id") {
        "evt_503" if attempt <= 2 => Reply::status(503),
        "evt_429" if attempt == 1 => Reply {
            status: 429,
            retry_after: Some("0"),
            stall: false,
        },
        "evt_500" => Reply::status(500),
        _ => Reply::status(200),
    })
    .await;
    let delivery = Delivery::start(settings(&[50, 100]), vec![subscription(receiver.url("/"))])
        .expect("starts");
    publish(
        &delivery,
        vec![
            message("evt_503", "cv_1"),
            message("evt_429", "cv_2"),
            message("evt_500", "cv_3"),
        ],
    )
    .await;
    eventually("all finished", || delivery.stats().pending == 0).await;

    let requests = receiver.requests();
    let attempts_of = |id: &str| {
        requests
            .iter()
            .filter(|r| r.header("webhook-id") == id)
            .count()
    };
    assert_eq!(attempts_of("evt_503"), 3);
    assert_eq!(attempts_of("evt_429"), 2);
    assert_eq!(
        attempts_of("evt_500"),
        3,
        "one attempt plus one per schedule entry"
    );
    for request in &requests {
        assert!(request.verified);
        // The id header is the event id on every attempt, and the body never changes.
        assert_eq!(request.json()["id"], request.header("webhook-id"));
    }
    let bodies: Vec<&Bytes> = requests
        .iter()
        .filter(|r| r.header("webhook-id") == "evt_503")
        .map(|r| &r.body)
        .collect();
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));

    let stats = delivery.stats();
    assert_eq!(
        (stats.delivered, stats.failed_attempts, stats.dead_lettered),
        (2, 6, 1)
    );
    let letters = delivery
        .dead_letters(&DeadLetterFilter::default(), 100)
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].event_id.as_str(), letters[0].attempts),
        ("evt_500", 3)
    );
    assert!(
        letters[0].last_error.contains("500"),
        "{}",
        letters[0].last_error
    );
}

#[tokio::test]
async fn permanent_failure_is_dead_lettered_and_releases_capacity() {
    init();
    let receiver = Receiver::start(|_, _| Reply::status(400)).await;
    let limits = DeliverySettings {
        max_in_flight: 3,
        ..settings(&[50, 100])
    };
    let mut crm = subscription(receiver.url("/crm"));
    crm.id = Some("crm".into());
    let delivery = Delivery::start(limits, vec![crm]).expect("starts");
    let sent = event("evt_bad", EventType::ConversationStarted, "web", "cv_9");
    publish(&delivery, vec![sent]).await;
    eventually("dead letter", || delivery.stats().dead_lettered == 1).await;

    let letters = delivery
        .dead_letters(&DeadLetterFilter::default(), 100)
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.subscription, "crm");
    assert_eq!(letter.event_id, "evt_bad");
    assert_eq!(letter.conversation_id, "cv_9");
    assert_eq!(letter.event_type, "conversation.started");
    assert_eq!(letter.attempts, 1);
    assert!(letter.last_error.contains("400"), "{}", letter.last_error);
    let stats = delivery.stats();
    assert_eq!((stats.delivered, stats.failed_attempts), (0, 1));
    assert_eq!(receiver.requests().len(), 1);

    // The whole capacity is free again.
    let reservation = delivery
        .reserve(3, Duration::from_secs(5))
        .await
        .expect("room is back");
    assert_eq!(reservation.len(), 3);
    drop(reservation);
    let json = serde_json::to_value(letter).expect("serializable");
    assert_eq!(json["attempts"], 1);
}

#[tokio::test]
async fn ordered_per_conversation_despite_failures() {
    init();
    // Fails the first attempt of roughly a third of the events, chosen by a hash of the
    // id so a failing run can be reproduced.
    let flaky = |id: &str| outbox::partition_of(id, 3) == 0;
    let receiver = Receiver::start(move |request, attempt| {
        if attempt == 1 && flaky(request.header("webhook-id")) {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let options = DeliverySettings {
        partitions: 2,
        ..settings(&[20, 20, 20])
    };
    let delivery = Delivery::start(options, vec![subscription(receiver.url("/"))]).expect("starts");

    let conversations = ["cv_a", "cv_b", "cv_c", "cv_d", "cv_e"];
    let mut published: HashMap<&str, Vec<String>> = HashMap::new();
    for batch in 0..5 {
        let mut events = Vec::new();
        for n in 0..10 {
            let conversation = conversations[(batch * 10 + n) % conversations.len()];
            let id = format!("evt_{batch}_{n}");
            published.entry(conversation).or_default().push(id.clone());
            events.push(message(&id, conversation));
        }
        publish(&delivery, events).await;
    }
    eventually("all 50 delivered", || delivery.stats().delivered == 50).await;

    let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
    for request in receiver.requests().iter().filter(|r| r.status == 200) {
        let body = request.json();
        let conversation = body["subject"].as_str().expect("subject").to_owned();
        delivered
            .entry(conversation)
            .or_default()
            .push(request.header("webhook-id").to_owned());
    }
    for conversation in conversations {
        assert_eq!(
            delivered.get(conversation),
            published.get(conversation),
            "{conversation}"
        );
    }
    assert!(
        delivery.stats().failed_attempts > 0,
        "some first attempts must fail"
    );
    assert_eq!(delivery.stats().dead_lettered, 0);
}

#[tokio::test]
async fn backpressure_overloaded_when_full() {
    init();
    let receiver = Receiver::start(|_, _| Reply {
        status: 200,
        retry_after: None,
        stall: true,
    })
    .await;
    let limits = DeliverySettings {
        max_in_flight: 2,
        ..settings(&[])
    };
    let delivery = Delivery::start(limits, vec![subscription(receiver.url("/"))]).expect("starts");
    publish(&delivery, vec![message("evt_1", "cv_1")]).await;
    publish(&delivery, vec![message("evt_2", "cv_2")]).await;
    let third = delivery.reserve(1, Duration::from_millis(50)).await;
    assert!(matches!(third, Err(DeliveryError::Overloaded)), "{third:?}");
    // A request larger than the whole capacity can never fit.
    assert!(matches!(
        delivery.reserve(3, Duration::from_secs(5)).await,
        Err(DeliveryError::Overloaded)
    ));
    assert_eq!(delivery.stats().pending, 2);
}

#[tokio::test]
async fn unused_reservation_is_released() {
    init();
    let receiver = Receiver::start(|_, _| Reply::status(200)).await;
    let limits = DeliverySettings {
        max_in_flight: 4,
        ..settings(&[])
    };
    let delivery = Delivery::start(limits, vec![subscription(receiver.url("/"))]).expect("starts");
    let reservation = delivery
        .reserve(4, Duration::from_secs(1))
        .await
        .expect("room");
    reservation
        .publish(vec![Arc::new(message("evt_1", "cv_1"))])
        .await
        .expect("published");
    // Three slots came back at once; the fourth once the event is delivered.
    let three = delivery
        .reserve(3, Duration::from_secs(5))
        .await
        .expect("unused room released");
    drop(three);
    let all = delivery
        .reserve(4, Duration::from_secs(5))
        .await
        .expect("all room released");
    drop(all);
    // An event no subscription wants does not hold room either.
    let mut filtered = subscription(receiver.url("/"));
    filtered.events = vec!["contact.merged".into()];
    let quiet = Delivery::start(
        DeliverySettings {
            max_in_flight: 1,
            ..settings(&[])
        },
        vec![filtered],
    )
    .expect("starts");
    publish(&quiet, vec![message("evt_2", "cv_2")]).await;
    publish(&quiet, vec![message("evt_3", "cv_3")]).await;
    eventually("skipped events released", || quiet.stats().pending == 0).await;
    assert_eq!(quiet.stats(), DeliveryStats::default());
}

#[tokio::test]
async fn history_and_raw_per_subscription() {
    init();
    let receiver = Receiver::start(|_, _| Reply::status(200)).await;
    let mut two_with_raw = subscription(receiver.url("/two"));
    (two_with_raw.history, two_with_raw.include_raw) = (2, true);
    let plain = subscription(receiver.url("/plain"));
    let mut ten = subscription(receiver.url("/ten"));
    ten.history = 10;
    let delivery = Delivery::start(settings(&[]), vec![two_with_raw, plain, ten]).expect("starts");
    assert_eq!(delivery.history_depth(), 10);
    assert!(delivery.wants_raw());

    let mut sent = message("evt_h", "cv_1");
    sent.history = (0..5)
        .map(|n| HistoryEntry {
            event_id: format!("evt_old_{n}"),
            at: at("2026-11-24T09:00:00Z"),
            channel: "web".into(),
            direction: Direction::Inbound,
            external_id: None,
            text: Some(format!("message {n}")),
            parts: vec![],
        })
        .collect();
    sent.raw = Some(serde_json::json!({"provider": "payload"}));
    publish(&delivery, vec![sent]).await;
    eventually("three deliveries", || delivery.stats().delivered == 3).await;

    let data = |path: &str| {
        let requests = receiver.requests();
        let request = requests.iter().find(|r| r.path == path).expect("delivered");
        request.json()["data"].clone()
    };
    let history_ids = |data: &Value| -> Vec<String> {
        data["history"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let two = data("/two");
    assert_eq!(
        history_ids(&two),
        ["evt_old_3", "evt_old_4"],
        "last N, oldest first"
    );
    assert_eq!(two["raw"]["provider"], "payload");
    let plain = data("/plain");
    assert!(
        plain.get("history").is_none() && plain.get("raw").is_none(),
        "{plain}"
    );
    let ten = data("/ten");
    assert_eq!(history_ids(&ten).len(), 5);
    assert!(ten.get("raw").is_none());
}

#[tokio::test]
async fn shutdown_reports_undelivered_events() {
    init();
    let receiver = Receiver::start(|_, _| Reply {
        status: 200,
        retry_after: None,
        stall: true,
    })
    .await;
    let options = DeliverySettings {
        timeout: Duration::from_millis(300),
        partitions: 1,
        ..settings(&[60_000])
    };
    let delivery = Delivery::start(options, vec![subscription(receiver.url("/"))]).expect("starts");
    publish(
        &delivery,
        vec![
            message("evt_1", "cv_1"),
            message("evt_2", "cv_1"),
            message("evt_3", "cv_2"),
        ],
    )
    .await;
    eventually("first attempt", || !receiver.requests().is_empty()).await;

    let undelivered = delivery.shutdown(Duration::from_millis(100)).await;
    assert_eq!(undelivered, 3);
    assert!(!delivery.durable());
    assert!(matches!(
        delivery.reserve(1, Duration::from_millis(10)).await,
        Err(DeliveryError::ShuttingDown)
    ));
    let stats = delivery.stats();
    // The memory outbox still holds them (lost when the process exits).
    assert_eq!((stats.pending, stats.abandoned, stats.delivered), (3, 3, 0));
}

#[tokio::test]
async fn start_rejects_invalid_configuration() {
    init();
    let mut bad = subscription("http://127.0.0.1:9/".into());
    bad.id = Some("helpdesk".into());
    bad.secret = Secret::new("whsec_###");
    let Err(DeliveryError::Config(message)) = Delivery::start(settings(&[]), vec![bad]) else {
        panic!("expected a config error");
    };
    assert!(message.contains("helpdesk"), "{message}");
    let zero = DeliverySettings {
        max_in_flight: 0,
        ..settings(&[])
    };
    assert!(matches!(
        Delivery::start(zero, vec![]),
        Err(DeliveryError::Config(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Destination subscriptions: a scripted destination plugin and an in-memory receipt book.

use super::destination::{
    Accepted, Delivery as Handed, Destination, Receipt, ReceiptBook, ReceiptStatus, Refusal,
};

/// Answers from a script (then `Sent`), and records what it was handed.
#[derive(Debug, Default)]
struct ScriptedDestination {
    script: parking_lot::Mutex<std::collections::VecDeque<Result<Accepted, Refusal>>>,
    handed: parking_lot::Mutex<Vec<(String, String, Value)>>,
}

#[async_trait::async_trait]
impl Destination for ScriptedDestination {
    async fn deliver(&self, delivery: Handed<'_>) -> Result<Accepted, Refusal> {
        let document = serde_json::from_slice(delivery.cloudevent).unwrap_or(Value::Null);
        self.handed.lock().push((
            delivery.event_id.to_owned(),
            delivery.event_type.to_owned(),
            document,
        ));
        self.script.lock().pop_front().unwrap_or_else(|| {
            Ok(Accepted::Sent {
                receipt: "req-default".into(),
            })
        })
    }
}

#[derive(Debug, Default)]
struct Book(parking_lot::Mutex<Vec<(String, Receipt)>>);

#[async_trait::async_trait]
impl ReceiptBook for Book {
    async fn keep(&self, conversion_id: &str, receipt: &Receipt) {
        self.0
            .lock()
            .push((conversion_id.to_owned(), receipt.clone()));
    }
}

fn conversion_event(id: &str, conversion_id: &str) -> Event {
    let mut sent = event(id, EventType::ConversionRecorded, "wa", "cv_1");
    sent.message = None;
    sent.conversion = Some(crate::event::ConversionInfo {
        id: conversion_id.into(),
        name: "purchase".into(),
        value: Some("129.90".into()),
        currency: Some("EUR".into()),
        occurred_at: at("2026-11-24T10:00:00Z"),
        attributed: true,
        reason: None,
        consent: None,
        properties: None,
    });
    sent
}

fn destination(
    id: &str,
    script: Vec<Result<Accepted, Refusal>>,
) -> (SubscriptionConfig, Arc<ScriptedDestination>, Arc<Book>) {
    let plugin = Arc::new(ScriptedDestination {
        script: parking_lot::Mutex::new(script.into()),
        ..ScriptedDestination::default()
    });
    let book = Arc::new(Book::default());
    let mut config = subscription(format!("destination:{id}"));
    config.id = Some(id.into());
    config.kind = SubscriptionKind::Destination;
    config.events = vec!["conversion.recorded".into()];
    config.destination = Some(DestinationTarget {
        plugin: plugin.clone(),
        receipts: book.clone(),
    });
    (config, plugin, book)
}

fn statuses(book: &Book) -> Vec<(String, ReceiptStatus, u32)> {
    book.0
        .lock()
        .iter()
        .map(|(conversion, receipt)| (conversion.clone(), receipt.status, receipt.attempts))
        .collect()
}

#[tokio::test]
async fn destination_retries_and_holds_then_keeps_the_receipt() {
    init();
    let held_until = Timestamp::now() + Duration::from_millis(300);
    let (meta, plugin, book) = destination(
        "meta",
        vec![
            Err(Refusal::Retryable {
                reason: "code 4: throttled".into(),
                retry_after: None,
            }),
            Err(Refusal::NotBefore { at: held_until }),
            Ok(Accepted::Sent {
                receipt: "fbtrace-1".into(),
            }),
        ],
    );
    // One retry only: the hold must not use it up.
    let delivery = Delivery::start(settings(&[50]), vec![meta]).expect("starts");
    publish(
        &delivery,
        vec![
            message("evt_msg", "cv_1"),
            conversion_event("evt_conv", "ord-1"),
        ],
    )
    .await;
    eventually("sent", || delivery.stats().delivered == 1).await;
    assert!(
        Timestamp::now() >= held_until,
        "held until the platform's time"
    );
    assert_eq!(delivery.stats().dead_lettered, 0);
    let handed = plugin.handed.lock().clone();
    assert_eq!(handed.len(), 3, "only the conversion, three times");
    assert!(handed.iter().all(|(id, kind, document)| id == "evt_conv"
        && kind == "conversion.recorded"
        && document["data"]["conversion"]["id"] == "ord-1"));
    assert_eq!(
        statuses(&book),
        [
            ("ord-1".into(), ReceiptStatus::Failed, 1),
            ("ord-1".into(), ReceiptStatus::Scheduled, 2),
            ("ord-1".into(), ReceiptStatus::Sent, 2),
        ]
    );
    let kept = book.0.lock();
    assert_eq!(kept[1].1.not_before, Some(held_until));
    assert_eq!(kept[2].1.receipt.as_deref(), Some("fbtrace-1"));
    assert_eq!(kept[0].1.reason.as_deref(), Some("code 4: throttled"));
}

#[tokio::test]
async fn destination_skip_is_delivered_with_its_reason() {
    init();
    let (google, _, book) = destination(
        "google",
        vec![Ok(Accepted::Skipped {
            reason: "no_click_id".into(),
        })],
    );
    let delivery = Delivery::start(settings(&[50]), vec![google]).expect("starts");
    publish(&delivery, vec![conversion_event("evt_c", "ord-2")]).await;
    eventually("skipped", || delivery.stats().delivered == 1).await;
    let kept = book.0.lock();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1.status, ReceiptStatus::Skipped);
    assert_eq!(kept[0].1.reason.as_deref(), Some("no_click_id"));
    assert_eq!(kept[0].1.destination, "google");
}

#[tokio::test]
async fn destination_refusing_all_is_dead_lettered_and_disabled() {
    init();
    let (meta, plugin, book) = destination(
        "meta",
        vec![Err(Refusal::Disable {
            reason: "code 190: access token expired".into(),
        })],
    );
    let delivery = Delivery::start(settings(&[50, 50, 50]), vec![meta]).expect("starts");
    publish(&delivery, vec![conversion_event("evt_c", "ord-3")]).await;
    eventually("dead letter", || delivery.stats().dead_lettered == 1).await;
    assert_eq!(plugin.handed.lock().len(), 1, "not retried");
    assert_eq!(
        statuses(&book),
        [("ord-3".into(), ReceiptStatus::DeadLettered, 1)]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = delivery.subscription("meta").await.expect("known");
        if !view.enabled {
            let reason = view.disabled_reason.unwrap_or_default();
            assert!(reason.contains("code 190"), "{reason}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never disabled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn destination_needs_its_plugin() {
    let mut config = subscription("destination:x".into());
    config.kind = SubscriptionKind::Destination;
    let error = config
        .validate(0, &crate::netguard::NetworkPolicy::default())
        .expect_err("no plugin");
    assert!(error.to_string().contains("[[destinations]]"), "{error}");
}
