//! Plugin lifecycle through `/admin`: a version swapped under a steady stream of webhooks
//! loses no request and serves every request after the swap; refused uploads leave the
//! active version serving; rollback returns to the version before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use omnigate_tests::{
    Gateway, get, guest_path, plugin_path, post, standard_webhooks_headers, toml_path,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_KEY: &str = "admin-test-key-0123456";
/// What each version answers a webhook with: tells which one served a request.
const WEBCHAT_ANSWER: &str = r#"{"ok":true}"#;
const HOSTILE_ANSWER: &str = "ok";

fn config() -> String {
    format!(
        r#"
        [admin]
        keys = ["{ADMIN_KEY}"]
        [[channels]]
        id = "web"
        plugin = {plugin}
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SECRET}" }}
        "#,
        plugin = toml_path(&plugin_path("webchat")),
    )
}

fn admin() -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {ADMIN_KEY}"))]
}

/// One distinct signed web chat message, routed so the hostile guest (mode `ok`) accepts
/// it too.
async fn send_message(gateway: &Gateway, n: usize) -> (u16, String) {
    let id = format!("swap-{n}");
    let body = json!({"type": "message", "id": id, "visitor": {"id": format!("v-{}", n % 50)}, "text": "hola"})
        .to_string()
        .into_bytes();
    let headers = standard_webhooks_headers(SECRET, &format!("wh_{id}"), &body).expect("sign");
    post(
        &gateway.url(&format!("/webhooks/web?mode=ok&id={id}")),
        &headers,
        body,
    )
    .await
    .unwrap_or((0, String::new()))
}

async fn upload(gateway: &Gateway, path: &str, bytes: Vec<u8>) -> (u16, Value) {
    let (status, body) = post(&gateway.url(path), &admin(), bytes)
        .await
        .expect("upload");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// What a request saw: when it started and ended, and which version answered.
struct Seen {
    started: Instant,
    ended: Instant,
    status: u16,
    body: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_steady_traffic_loses_nothing_and_rollback_restores() {
    let gateway = Arc::new(Gateway::start(&config()).await.expect("gateway"));
    let running = Arc::new(AtomicBool::new(true));
    let next = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (gateway, running, next, seen) =
                (gateway.clone(), running.clone(), next.clone(), seen.clone());
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let (status, body) = send_message(&gateway, n).await;
                    seen.lock().push(Seen {
                        started,
                        ended: Instant::now(),
                        status,
                        body,
                    });
                }
            })
        })
        .collect();

    // Steady traffic on the first version, then the swap.
    wait_for_requests(&seen, 50).await;
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile guest built");
    let (status, answer) = upload(&gateway, "/admin/plugins?activate=web", hostile).await;
    assert_eq!(status, 201, "{answer}");
    let swapped_at = Instant::now();
    let new_digest = answer["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(answer["activated"]["digest"], new_digest.as_str());
    assert_eq!(answer["activated"]["plugin"], "hostile@0.1.0");

    let before_rollback = seen.lock().len();
    wait_for_requests(&seen, before_rollback + 50).await;
    let rollback_sent_at = Instant::now();
    let (status, answer) = upload(&gateway, "/admin/channels/web/rollback", Vec::new()).await;
    assert_eq!(status, 200, "{answer}");
    let rolled_back_at = Instant::now();
    assert!(
        answer["activated"]["plugin"]
            .as_str()
            .unwrap_or_default()
            .starts_with("webchat@")
    );
    let after_rollback = seen.lock().len();
    wait_for_requests(&seen, after_rollback + 50).await;
    running.store(false, Ordering::Relaxed);
    for sender in senders {
        sender.await.expect("sender");
    }

    let seen = std::mem::take(&mut *seen.lock());
    let failed: Vec<_> = seen
        .iter()
        .filter(|s| s.status != 200)
        .map(|s| s.status)
        .collect();
    assert!(
        failed.is_empty(),
        "failed requests during the swaps: {failed:?}"
    );
    // Requests started after the activation answered and done before the rollback was
    // asked for are served by the new version; those started after the rollback answered,
    // by the old one again. Requests overlapping a swap may see either.
    for request in seen.iter() {
        let expected = if request.started > rolled_back_at {
            WEBCHAT_ANSWER
        } else if request.started > swapped_at && request.ended < rollback_sent_at {
            HOSTILE_ANSWER
        } else {
            continue;
        };
        assert_eq!(request.body, expected);
    }
    let served_by_new = seen.iter().filter(|s| s.body == HOSTILE_ANSWER).count();
    assert!(
        served_by_new >= 50,
        "only {served_by_new} served by the new version"
    );

    let (status, list) = get(&gateway.url("/admin/plugins"), &admin())
        .await
        .expect("list");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).expect("json");
    let channels = &list["channels"][0];
    assert_eq!(channels["channel"], "web");
    assert!(
        channels["plugin"]
            .as_str()
            .unwrap_or_default()
            .starts_with("webchat@")
    );
    let versions = list["plugins"].as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 2, "{list}");
    assert!(versions.iter().any(|v| v["digest"] == new_digest.as_str()
        && v["channels"].as_array().is_some_and(Vec::is_empty)
        && v["world"] == "omnigate:channel/channel@0.2.0"));
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.stop().await;
    }
}

async fn wait_for_requests(seen: &Mutex<Vec<Seen>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().len() < count {
        assert!(
            Instant::now() < deadline,
            "traffic stalled below {count} requests"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn refused_versions_leave_the_active_one_serving() {
    let gateway = Gateway::start(&config()).await.expect("gateway");
    let still_serving = |n| {
        let gateway = &gateway;
        async move {
            let (status, body) = send_message(gateway, n).await;
            assert_eq!((status, body.as_str()), (200, WEBCHAT_ANSWER));
        }
    };
    still_serving(1).await;

    // No admin key, or the /v1 kind of key: refused.
    let (status, _) = post(&gateway.url("/admin/plugins"), &[], b"x".to_vec())
        .await
        .expect("post");
    assert_eq!(status, 401);

    // Garbage.
    let (status, answer) = upload(
        &gateway,
        "/admin/plugins?activate=web",
        b"not wasm at all".to_vec(),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "plugin_refused");
    still_serving(2).await;

    // A component of another world: refused with the reason.
    let other = std::fs::read(guest_path("other-world")).expect("other-world guest built");
    let (status, answer) = upload(&gateway, "/admin/plugins/validate", other.clone()).await;
    assert_eq!(status, 422, "{answer}");
    let reason = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("omnigate:channel"), "{reason}");
    let (status, _) = upload(&gateway, "/admin/plugins?activate=web", other).await;
    assert_eq!(status, 422);
    still_serving(3).await;

    // A valid plugin validates without being kept or activated.
    let webchat = std::fs::read(plugin_path("webchat")).expect("webchat built");
    let (status, answer) = upload(&gateway, "/admin/plugins/validate", webchat).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["name"], "webchat");

    // Unknown digest, unknown channel, nothing to roll back.
    let activate = |channel: &str, digest: &str| {
        let url = gateway.url(&format!("/admin/channels/{channel}/activate"));
        let body = json!({ "digest": digest }).to_string().into_bytes();
        let mut headers = admin();
        headers.push(("content-type".into(), "application/json".into()));
        async move { post(&url, &headers, body).await.expect("activate").0 }
    };
    assert_eq!(activate("web", "0000").await, 404);
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile guest built");
    let (status, answer) = upload(&gateway, "/admin/plugins", hostile).await;
    assert_eq!(status, 201, "{answer}");
    assert!(answer["activated"].is_null());
    let digest = answer["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(activate("nope", &digest).await, 404);
    let (status, answer) = upload(&gateway, "/admin/channels/web/rollback", Vec::new()).await;
    assert_eq!(status, 409, "{answer}");
    still_serving(4).await;
    gateway.stop().await;
}

/// A `multipart/form-data` body with one part per `(field, file name, bytes)`.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "omnigate-test-boundary-7d1";
    let mut body = Vec::new();
    for (field, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some(file) => format!("form-data; name=\"{field}\"; filename=\"{file}\""),
            None => format!("form-data; name=\"{field}\""),
        };
        body.extend_from_slice(
            format!("content-disposition: {disposition}\r\ncontent-type: application/wasm\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn multipart_uploads_are_accepted_and_a_body_without_a_file_is_refused() {
    let gateway = Gateway::start(&config()).await.expect("gateway");
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile guest built");
    let send = |content_type: String, body: Vec<u8>| {
        let url = gateway.url("/admin/plugins?activate=web");
        let mut headers = admin();
        headers.push(("content-type".into(), content_type));
        async move { post(&url, &headers, body).await.expect("upload") }
    };
    let (content_type, body) = multipart(&[
        ("note", None, b"release 2"),
        ("plugin", Some("hostile.wasm"), &hostile),
    ]);
    let (status, answer) = send(content_type, body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        send_message(&gateway, 1).await,
        (200, HOSTILE_ANSWER.to_owned())
    );
    let (content_type, body) = multipart(&[("note", None, b"no file here")]);
    let (status, answer) = send(content_type, body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("bad_multipart"), "{answer}");
    assert_eq!(
        send_message(&gateway, 2).await,
        (200, HOSTILE_ANSWER.to_owned())
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_file_is_reloaded_and_a_bad_one_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("site.wasm");
    let webchat = std::fs::read(plugin_path("webchat")).expect("webchat built");
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile built");
    std::fs::write(&file, &webchat).expect("write");
    let config = format!(
        r#"
        [plugins]
        dir = {dir}
        watch = true
        watch_debounce = "100ms"
        [[channels]]
        id = "web"
        plugin = "site"
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SECRET}" }}
        "#,
        dir = toml_path(dir.path()),
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    let mut n = 0;
    let mut answer_becomes = async |expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            n += 1;
            let (status, body) = send_message(&gateway, n).await;
            assert_eq!(status, 200, "{body}");
            if body == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still answering {body}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    answer_becomes(WEBCHAT_ANSWER).await;
    // Replace the file (write to a temporary name, then rename, as deploy tools do).
    let staged = dir.path().join("site.wasm.tmp");
    std::fs::write(&staged, &hostile).expect("write");
    std::fs::rename(&staged, &file).expect("rename");
    answer_becomes(HOSTILE_ANSWER).await;
    // A broken file is refused; the active version keeps answering until a good one lands.
    std::fs::write(&file, b"\0asm broken").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    answer_becomes(HOSTILE_ANSWER).await;
    std::fs::write(&file, &webchat).expect("write");
    answer_becomes(WEBCHAT_ANSWER).await;
    gateway.stop().await;
}
