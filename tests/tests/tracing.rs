//! Tracing: the real `omnigate` binary exports its spans over OTLP/HTTP (protobuf) to an
//! in-test collector. One signed web chat message makes one trace: the ingress root, the
//! plugin call, the pipeline stages, the store ingest and the delivery attempts (children
//! of the publish span, through the outbox entry); the receiver's `traceparent` carries
//! that trace and the attempt's span id. The JSON log lines carry the message's channel,
//! conversation and event ids, and no secret.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use omnigate_tests::redis::{RedisServer, free_port};
use omnigate_tests::{
    Receiver, SUBSCRIPTION_SECRET, WAIT, plugin_path, post as http_post, standard_webhooks_headers,
    toml_path,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CHANNEL: &str = "traced-web";

/// A span as the collector decoded it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
    service: String,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// An OTLP/HTTP collector on loopback: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { url, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().clone()
    }

    /// Waits until `done` holds for the spans received.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + WAIT;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not received; spans: {:#?}",
                names(&spans)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn export(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut decoded = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
            })
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                decoded.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| {
                            (
                                kv.key,
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    spans.lock().extend(decoded);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn names(spans: &[Span]) -> Vec<(String, String, String, String)> {
    spans
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.trace_id.clone(),
                s.span_id.clone(),
                s.parent.clone(),
            )
        })
        .collect()
}

/// The gateway process, its JSON log lines going to a file.
struct Gateway {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(dir: &Path, store: &str, receiver: &Receiver, collector: &Collector) -> Gateway {
        let port = free_port().expect("port");
        let config = format!(
            r#"
            [server]
            listen = "127.0.0.1:{port}"
            shutdown_grace = "1s"
            [store]
            url = "{store}"
            [plugins]
            cache_dir = {cache}
            [delivery]
            allow_networks = ["127.0.0.0/8"]
            [[subscriptions]]
            id = "traced-sub"
            url = "{url}"
            secret = "{SUBSCRIPTION_SECRET}"
            [[channels]]
            id = "{CHANNEL}"
            plugin = {plugin}
            config = {{ callback_url = "http://127.0.0.1:9/replies" }}
            secrets = {{ signing_secret = "{SITE_SECRET}" }}
            "#,
            // The test run's shared cache: the plugin compiles once per run.
            cache = toml_path(
                &omnigate_tests::root()
                    .join("target")
                    .join("test-plugin-cache")
            ),
            plugin = toml_path(&plugin_path("webchat")),
            url = receiver.url,
        );
        let path = dir.join("omnigate.toml");
        std::fs::write(&path, config).expect("config file");
        let log = dir.join("omnigate.log");
        let child = Command::new(omnigate_tests::omnigate_bin())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,omnigate=debug")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("omnigate starts");
        Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if omnigate_tests::get(&format!("{}/healthz", self.base), &[])
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("omnigate did not become healthy:\n{}", self.log_text());
    }

    /// SIGTERM, then waits for the exit (spans are flushed on the way out).
    async fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "omnigate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines.
    fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"))
            })
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one signed web chat message; checks the trace it made and the log lines.
async fn one_message_one_trace(store: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    let collector = Collector::start().await;
    let mut gateway = Gateway::start(dir.path(), store, &receiver, &collector);
    gateway.wait_ready().await;

    let body = json!({"type": "message", "id": "site-msg-1", "visitor": {"id": "v-42", "name": "Ana"}, "text": "Hola"})
        .to_string()
        .into_bytes();
    let headers = standard_webhooks_headers(SITE_SECRET, "wh_traced_1", &body).expect("sign");
    let (status, answer) = http_post(
        &format!("{}/webhooks/{CHANNEL}", gateway.base),
        &headers,
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 200, "{answer}");
    // conversation.started and message.received.
    let events = receiver.wait_for(2, WAIT).await.expect("deliveries");
    let spans = collector
        .wait_for("two delivered attempts", |spans| {
            spans
                .iter()
                .filter(|s| s.name == "delivery.attempt" && s.attr("outcome") == "delivered")
                .count()
                >= 2
        })
        .await;

    let roots: Vec<&Span> = spans.iter().filter(|s| s.name == "ingress").collect();
    assert_eq!(roots.len(), 1, "one ingress span: {:#?}", names(&spans));
    let root = roots[0];
    assert!(
        root.parent.is_empty(),
        "the ingress span is a root: {root:?}"
    );
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.attr("channel"), CHANNEL);
    assert_eq!(root.attr("outcome"), "accepted");
    assert_eq!(root.attr("http.response.status_code"), "200");
    assert_eq!(root.service, "omnigate");
    let trace = root.trace_id.clone();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "one `{name}` span in the trace: {:#?}",
            names(&spans)
        );
        found[0]
    };
    for stage in [
        "plugin",
        "normalize",
        "reserve",
        "store.ingest",
        "enrich",
        "publish",
    ] {
        assert_eq!(
            one(stage).parent,
            root.span_id,
            "`{stage}` is a child of the ingress span"
        );
    }
    let plugin = one("plugin");
    assert_eq!(plugin.attr("function"), "handle-webhook");
    assert!(
        plugin.attr("plugin").starts_with("webchat@"),
        "plugin id@version: {plugin:?}"
    );
    let store_span = one("store.ingest");
    assert_eq!(store_span.attr("outcome"), "accepted");
    let conversation = events[0]["subject"].as_str().expect("subject").to_owned();
    assert_eq!(store_span.attr("conversation"), conversation);
    let publish = one("publish");
    let event_ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    for id in &event_ids {
        assert!(
            publish.attr("event_ids").split(',').any(|x| x == id),
            "publish names {id}: {publish:?}"
        );
    }

    // Delivery attempts: children of the publish span, through the outbox entry.
    let attempts: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.name == "delivery.attempt")
        .collect();
    assert_eq!(attempts.len(), 2, "{:#?}", names(&spans));
    for attempt in &attempts {
        assert_eq!(attempt.parent, publish.span_id, "{attempt:?}");
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        assert_eq!(attempt.attr("subscription"), "traced-sub");
        assert_eq!(attempt.attr("outcome"), "delivered");
        assert_eq!(attempt.attr("conversation"), conversation);
    }
    // What the receiver got: this trace, and the span id of the attempt that sent it.
    for request in receiver.requests() {
        let traceparent = request.header("traceparent").expect("traceparent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(
            parts[1], trace,
            "the delivery continues the message's trace"
        );
        let event_id = request.header("webhook-id").expect("webhook-id");
        let attempt = attempts
            .iter()
            .find(|s| s.span_id == parts[2])
            .unwrap_or_else(|| panic!("no attempt span {}: {:#?}", parts[2], names(&spans)));
        assert_eq!(attempt.attr("event_id"), event_id);
    }

    gateway.terminate().await;
    let lines = gateway.log_lines();
    for id in &event_ids {
        let carried = lines.iter().any(|line| {
            line["event_id"] == id.as_str()
                && line["channel"] == CHANNEL
                && line["conversation"] == conversation.as_str()
        });
        assert!(
            carried,
            "a log line carries event {id} with its channel and conversation:\n{}",
            gateway.log_text()
        );
    }
    let log = gateway.log_text();
    for secret in [SITE_SECRET, SUBSCRIPTION_SECRET] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!log.contains(key), "a secret was logged");
    }
}

#[tokio::test]
async fn one_message_makes_one_trace_through_the_memory_outbox() {
    one_message_one_trace("memory://").await;
}

#[tokio::test]
async fn one_message_makes_one_trace_through_the_redis_outbox() {
    let redis = RedisServer::start().expect("redis-server");
    one_message_one_trace(&redis.url()).await;
}
