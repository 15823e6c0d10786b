//! Per-channel limits: webhooks beyond the inbound rate get 429 with `Retry-After` (the
//! provider retries), other channels are not affected, and the limits are listed; a
//! message over `max_text_bytes` or `max_parts` gets 413 and nothing of it is stored; a
//! sender over `sender_rate_per_minute` gets 429 while other senders go on.

use std::time::Instant;

use omnigate_tests::{Gateway, get, plugin_path, standard_webhooks_headers, toml_path};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A web chat channel `id` with `limits` (a TOML line, or empty).
fn channel(id: &str, limits: &str) -> String {
    let plugin = toml_path(&plugin_path("webchat"));
    format!(
        "[[channels]]\nid = \"{id}\"\nplugin = {plugin}\nconfig = {{ callback_url = \"http://127.0.0.1:9/r\" }}\nsecrets = {{ signing_secret = \"{SECRET}\" }}\n{limits}\n"
    )
}

fn config() -> String {
    format!(
        "[admin]\nkeys = [\"limits-admin-key-0123\"]\n{}{}",
        channel("slow", "limits = { rate_per_second = 1, rate_burst = 2 }"),
        channel("free", "")
    )
}

async fn send(gateway: &Gateway, channel: &str, n: usize) -> (u16, Option<String>) {
    let body = json!({"type": "message", "id": format!("{channel}-{n}"), "visitor": {"id": "v"}, "text": "hi"})
        .to_string()
        .into_bytes();
    let headers =
        standard_webhooks_headers(SECRET, &format!("wh-{channel}-{n}"), &body).expect("sign");
    let client = reqwest::Client::new();
    let mut request = client
        .post(gateway.url(&format!("/webhooks/{channel}")))
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("post");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_is_429_with_retry_after_and_other_channels_are_free() {
    omnigate::tls::ensure_crypto_provider();
    let gateway = Gateway::start(&config()).await.expect("gateway");
    let started = Instant::now();
    let mut answers = Vec::new();
    for n in 0..10 {
        answers.push(send(&gateway, "slow", n).await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    // Burst 2, then 1 per second of however long the run took.
    assert!(
        accepted as f64 <= 2.0 + elapsed.ceil(),
        "{answers:?} in {elapsed:.2}s"
    );
    assert_eq!(accepted + limited.len(), answers.len(), "{answers:?}");
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(limited.iter().all(|(_, retry)| {
        retry
            .as_deref()
            .is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s >= 1))
    }));

    for n in 0..10 {
        assert_eq!(send(&gateway, "free", n).await.0, 200);
    }

    let auth = vec![(
        "authorization".to_owned(),
        "Bearer limits-admin-key-0123".to_owned(),
    )];
    let (_, list) = get(&gateway.url("/admin/plugins"), &auth)
        .await
        .expect("list");
    let list: Value = serde_json::from_str(&list).expect("json");
    let slow = list["channels"]
        .as_array()
        .and_then(|channels| channels.iter().find(|c| c["channel"] == "slow"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(slow["limits"]["rate_per_second"], 1, "{list}");
    assert_eq!(slow["limits"]["rate_burst"], 2);
    assert_eq!(slow["limits"]["cpu_deadline"], "1s");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_text_or_parts_limit_is_413_and_not_stored() {
    omnigate::tls::ensure_crypto_provider();
    let config = channel("small", "limits = { max_text_bytes = 10, max_parts = 1 }");
    let gateway = Gateway::start(&config).await.expect("gateway");
    let post = |body: Value| {
        let gateway = &gateway;
        async move {
            let body = body.to_string().into_bytes();
            let headers =
                standard_webhooks_headers(SECRET, &format!("wh-{}", ulid::Ulid::generate()), &body)
                    .expect("sign");
            omnigate_tests::post(&gateway.url("/webhooks/small"), &headers, body)
                .await
                .expect("post")
        }
    };
    let long =
        json!({"type": "message", "id": "big-1", "visitor": {"id": "v"}, "text": "eleven byte"});
    let (status, body) = post(long).await;
    assert_eq!(status, 413, "{body}");
    let error: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(error["error"]["code"], "message_too_large", "{body}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_text_bytes") && message.contains("11 bytes"),
        "{body}"
    );
    let image = |n: usize| json!({"type": "image", "url": format!("https://shop.example/{n}.jpg")});
    let two_parts = json!({"type": "message", "id": "big-2", "visitor": {"id": "v"}, "attachments": [image(1), image(2)]});
    let (status, body) = post(two_parts).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_parts"), "{body}");
    // Nothing was stored: the same id within the limits is a new message, not a duplicate.
    let fits =
        json!({"type": "message", "id": "big-1", "visitor": {"id": "v"}, "text": "ten bytes!"});
    assert_eq!(post(fits).await.0, 200);
    let metrics = get(&gateway.url("/metrics"), &[]).await.expect("metrics").1;
    assert!(
        metrics.contains("omnigate_events_total{channel=\"small\",fate=\"accepted\"} 1"),
        "{metrics}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_its_rate_is_429_and_other_senders_go_on() {
    omnigate::tls::ensure_crypto_provider();
    let config = channel(
        "chatty",
        "limits = { sender_rate_per_minute = 1, sender_burst = 2 }",
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    let send = |visitor: &'static str, n: usize| {
        let gateway = &gateway;
        async move {
            let body = json!({"type": "message", "id": format!("{visitor}-{n}"), "visitor": {"id": visitor}, "text": "hi"})
                .to_string()
                .into_bytes();
            let headers = standard_webhooks_headers(SECRET, &format!("wh-{visitor}-{n}"), &body)
                .expect("sign");
            let client = reqwest::Client::new();
            let mut request = client.post(gateway.url("/webhooks/chatty")).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("post");
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.parse::<u32>().ok());
            (
                response.status().as_u16(),
                retry_after,
                response.text().await.unwrap_or_default(),
            )
        }
    };
    // A burst of two, then one a minute: the third in a row is refused.
    assert_eq!(send("noisy", 0).await.0, 200);
    assert_eq!(send("noisy", 1).await.0, 200);
    let (status, retry_after, body) = send("noisy", 2).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("sender_rate_limited"), "{body}");
    assert!(
        retry_after.is_some_and(|seconds| seconds >= 1),
        "{retry_after:?}"
    );
    // Another sender on the same channel is not held back.
    assert_eq!(send("calm", 0).await.0, 200);
    assert_eq!(send("calm", 1).await.0, 200);
    gateway.stop().await;
}
