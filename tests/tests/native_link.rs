//! The web chat plugin linked natively into the gateway (`omnigate_tests::native`, the
//! throughput benchmark's "sandbox cost" comparison) behaves exactly like the sandboxed
//! plugin: the same outcome for every fixture, refusals included, and through the gateway
//! the same events delivered and a bad signature refused with 401. If the native variant
//! answered differently, the benchmark would compare two different workloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use omnigate::runtime::types::{Header, HttpRequest, WebhookError, WebhookOutcome};
use omnigate::runtime::{NativeChannel, WebhookRequest};
use omnigate_tests::native::NativeWebChat;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, api_error, fixture, fixture_names, json_answer, plugin_path, post,
    standard_webhooks_headers, start_channel, webchat_channel_config,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WRONG_SECRET: &str = "whsec_d3JvbmctZ2F0ZXdheS1zZWNyZXQtZm9yLXRlc3Q=";

fn config(site: &FakeApi, receiver: &Receiver) -> String {
    webchat_channel_config(&plugin_path("webchat"), SITE_SECRET, site, receiver)
}

async fn setup() -> (Gateway, Receiver, FakeApi) {
    start_channel(|_| json_answer(200, json!({"id": "r-1"})), config).await
}

/// `body` as the host hands it to the plugin, signed now with `secret`.
fn signed(secret: &str, body: &[u8]) -> HttpRequest {
    let id = format!("wh_{}", ulid::Ulid::generate());
    let headers = standard_webhooks_headers(secret, &id, body).expect("sign");
    HttpRequest {
        method: "POST".into(),
        path: "/webhooks/web".into(),
        query: String::new(),
        headers: std::iter::once(("content-type".to_owned(), "application/json".to_owned()))
            .chain(headers)
            .map(|(name, value)| Header { name, value })
            .collect(),
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn native_outcomes_equal_the_sandboxed_plugins() {
    let (gateway, _receiver, _site) = setup().await;
    let sandboxed = gateway.app.registry.get("web").expect("channel");
    let native = NativeWebChat::for_channel(&sandboxed.env);

    let mut requests: Vec<(String, HttpRequest)> = fixture_names("webchat")
        .into_iter()
        .map(|name| {
            let request = signed(SITE_SECRET, &fixture("webchat", &name));
            (name, request)
        })
        .collect();
    let body = fixture("webchat", "message_utm.json");
    requests.push(("wrong signature".into(), signed(WRONG_SECRET, &body)));
    let mut get = signed(SITE_SECRET, &body);
    get.method = "GET".into();
    requests.push(("GET".into(), get));

    let mut accepted = 0;
    let mut unauthorized = 0;
    for (name, request) in &requests {
        let from_plugin = sandboxed
            .handle_webhook(request)
            .await
            .expect("plugin call");
        let from_native = native.handle_webhook(&request.lend());
        // The bindings have `Debug` but no `PartialEq`; their `Debug` shows every field.
        assert_eq!(
            format!("{from_native:#?}"),
            format!("{from_plugin:#?}"),
            "{name}"
        );
        match from_native {
            Ok(WebhookOutcome { events, .. }) if !events.is_empty() => accepted += 1,
            Err(WebhookError::Unauthorized(_)) => unauthorized += 1,
            _ => {}
        }
    }
    // Two equal answers prove nothing if both refused everything.
    assert_eq!(accepted, 3, "the three message fixtures are accepted");
    assert_eq!(unauthorized, 1, "the wrong signature is refused");
}

/// The adapter, counting its calls: proof that the gateway called it, not the plugin.
struct Counted {
    inner: NativeWebChat,
    calls: AtomicUsize,
}

impl NativeChannel for Counted {
    fn handle_webhook(&self, request: &WebhookRequest<'_>) -> Result<WebhookOutcome, WebhookError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.handle_webhook(request)
    }
}

/// What a delivered `message.received` says about the message, without the ids and times
/// each gateway mints itself.
fn essentials(events: &[Value]) -> Vec<Value> {
    let mut essentials: Vec<Value> = events
        .iter()
        .map(|data| {
            json!({
                "external_id": data["external_id"],
                "occurred_at": data["occurred_at"],
                "channel": data["channel"],
                "message": data["message"],
                "referral": data["referral"],
                "contact_name": data["contact"]["name"],
                "handles": data["contact"]["handles"],
            })
        })
        .collect();
    essentials.sort_by_key(|essential| essential["external_id"].to_string());
    essentials
}

#[tokio::test]
async fn a_natively_linked_gateway_delivers_what_the_sandboxed_one_does() {
    let (sandboxed, sandboxed_receiver, _site) = setup().await;
    let (linked, linked_receiver, _other_site) = setup().await;
    let channel = linked.app.registry.get("web").expect("channel");
    let counted = Arc::new(Counted {
        inner: NativeWebChat::for_channel(&channel.env),
        calls: AtomicUsize::new(0),
    });
    linked
        .app
        .registry
        .install("web", Arc::new(channel.linked_natively(counted.clone())));
    assert!(
        linked
            .app
            .registry
            .get("web")
            .expect("channel")
            .is_linked_natively()
    );
    assert!(
        !sandboxed
            .app
            .registry
            .get("web")
            .expect("channel")
            .is_linked_natively()
    );

    let names = [
        "message_utm.json",
        "message_attachment.json",
        "message_authenticated.json",
    ];
    for name in names {
        let request = signed(SITE_SECRET, &fixture("webchat", name));
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        for gateway in [&sandboxed, &linked] {
            let (status, answer) = post(
                &gateway.url("/webhooks/web"),
                &headers,
                request.body.clone(),
            )
            .await
            .expect("post");
            assert_eq!((status, answer.as_str()), (200, r#"{"ok":true}"#), "{name}");
        }
    }
    let expected = essentials(&sandboxed_receiver.wait_of_type("message.received", 3).await);
    let delivered = essentials(&linked_receiver.wait_of_type("message.received", 3).await);
    assert_eq!(delivered, expected);
    assert_eq!(delivered.len(), 3);
    assert_eq!(counted.calls.load(Ordering::SeqCst), 3);

    let wrong = signed(WRONG_SECRET, &fixture("webchat", "message_utm.json"));
    let headers: Vec<(String, String)> = wrong
        .headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let (status, answer) = post(&linked.url("/webhooks/web"), &headers, wrong.body)
        .await
        .expect("post");
    assert_eq!(
        (status, api_error(&answer).0.as_str()),
        (401, "unauthorized"),
        "{answer}"
    );
    assert_eq!(counted.calls.load(Ordering::SeqCst), 4);
}
