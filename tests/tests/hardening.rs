//! What an API key holder, a careless operator or a hostile client cannot do: reach
//! internal addresses through subscriptions, the test call or plugin fetches (SSRF);
//! authenticate with an empty or short key; stop ingest with an absurd number; hold
//! connections open forever or starve `/healthz`.

use omnigate_tests::api_call as call;
use omnigate_tests::{
    API_KEY, FakeApi, Gateway, LOOPBACK, Receiver, SUBSCRIPTION_SECRET, WAIT, api_auth, api_error,
    json_answer, plugin_path, standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A gateway with an API key, the web chat channel (replies to `callback`, which
/// `allowed_hosts` lets through) and `extra` TOML.
async fn gateway(callback: &str, allowed: &str, extra: &str) -> Gateway {
    let config = format!(
        r#"
        [api]
        keys = ["{API_KEY}"]
        {extra}
        [[channels]]
        id = "web"
        plugin = {plugin}
        allowed_hosts = ["{allowed}"]
        config = {{ callback_url = "{callback}" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        "#,
        plugin = toml_path(&plugin_path("webchat")),
    );
    Gateway::start(&config).await.expect("gateway")
}

/// An internal service: answers everything `404` with a body that must never leak.
async fn internal_service() -> FakeApi {
    FakeApi::start(|_| (404, Vec::new(), b"INTERNAL-ONLY admin panel".to_vec()))
        .await
        .expect("internal service")
}

fn port_of(api: &FakeApi) -> u16 {
    api.authority
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("port")
}

#[tokio::test]
async fn subscriptions_to_internal_literals_are_refused_at_creation() {
    let internal = internal_service().await;
    let port = port_of(&internal);
    let gateway = gateway("http://127.0.0.1:9/r", "http://127.0.0.1:9", "").await;
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
    ] {
        let (status, body) = call(
            &gateway,
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "secret": SUBSCRIPTION_SECRET})),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("target_not_allowed")),
            "{url}: {body}"
        );
    }
    // Moving an existing subscription there is refused the same way.
    let (status, body) = call(
        &gateway,
        "POST",
        "/v1/subscriptions",
        Some(
            json!({"id": "crm", "url": "https://crm.example/hook", "secret": SUBSCRIPTION_SECRET}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &gateway,
        "PATCH",
        "/v1/subscriptions/crm",
        Some(json!({"url": format!("http://127.0.0.1:{port}/")})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("target_not_allowed")),
        "{body}"
    );
    assert!(internal.requests().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
    let internal = internal_service().await;
    let port = port_of(&internal);
    let gateway = gateway("http://127.0.0.1:9/r", "http://127.0.0.1:9", "").await;
    let (status, body) = call(
        &gateway,
        "POST",
        "/v1/subscriptions",
        Some(json!({"id": "sneaky", "url": format!("http://localhost:{port}/"), "secret": SUBSCRIPTION_SECRET})),
    )
    .await;
    assert_eq!(status, 201, "a name is checked when it is resolved: {body}");
    let (status, result) = call(&gateway, "POST", "/v1/subscriptions/sneaky/test", None).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["delivered"], false);
    assert_eq!(result["error"], "refused", "{result}");
    assert!(
        internal.requests().is_empty(),
        "the internal service was reached"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_test_call_reports_a_class_never_the_reply_or_the_system_error() {
    let internal = internal_service().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let extra = format!("[delivery]\nallow_networks = {LOOPBACK}\n");
    let gateway = gateway("http://127.0.0.1:9/r", "http://127.0.0.1:9", &extra).await;
    for (id, url, expected) in [
        ("open", format!("{}/", internal.url), "status 404"),
        ("closed", format!("http://127.0.0.1:{closed}/"), "refused"),
    ] {
        let (status, body) = call(
            &gateway,
            "POST",
            "/v1/subscriptions",
            Some(json!({"id": id, "url": url, "secret": SUBSCRIPTION_SECRET})),
        )
        .await;
        assert_eq!(status, 201, "allowed network: {body}");
        let (_, result) = call(
            &gateway,
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            None,
        )
        .await;
        assert_eq!(result["error"], expected, "{id}: {result}");
        assert!(!result.to_string().contains("INTERNAL-ONLY"), "{result}");
    }
    assert_eq!(
        internal.requests().len(),
        1,
        "the allowed target was reached"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_configured_subscription_to_loopback_needs_allow_networks() {
    let config = format!(
        r#"
        [[subscriptions]]
        url = "http://127.0.0.1:9000/hook"
        secret = "{SUBSCRIPTION_SECRET}"
        "#
    );
    let error = Gateway::start(&config)
        .await
        .err()
        .expect("loopback target refused")
        .to_string();
    assert!(error.contains("allow_networks"), "{error}");
    let allowed = format!("[delivery]\nallow_networks = {LOOPBACK}\n{config}");
    Gateway::start(&allowed)
        .await
        .expect("allowed")
        .stop()
        .await;
}

/// Sends web chat message `id` and returns its conversation id (read from its delivery).
async fn conversation(gateway: &Gateway, receiver: &Receiver, id: &str) -> String {
    let body = json!({"type": "message", "id": id, "visitor": {"id": id}, "text": "hola"})
        .to_string()
        .into_bytes();
    let headers = standard_webhooks_headers(SITE_SECRET, &format!("wh_{id}"), &body).expect("sign");
    let (status, text) = omnigate_tests::post(&gateway.url("/webhooks/web"), &headers, body)
        .await
        .expect("post");
    assert_eq!(status, 200, "{text}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = receiver
            .of_type("message.received")
            .into_iter()
            .find(|event| event["external_id"] == id);
        if let Some(event) = found {
            return event["conversation"]["id"]
                .as_str()
                .expect("conversation")
                .to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{id} never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn plugin_fetches_to_internal_addresses_are_refused() {
    let site = FakeApi::start(|_| json_answer(200, json!({"id": "r"})))
        .await
        .expect("site");
    let port = port_of(&site);
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    // Deliveries may reach the loopback receiver; plugins may not reach loopback.
    let delivery = format!(
        "[delivery]\nallow_networks = {LOOPBACK}\n[[subscriptions]]\nurl = \"{}\"\nsecret = \"{SUBSCRIPTION_SECRET}\"\n",
        receiver.url
    );
    for host in ["127.0.0.1", "localhost"] {
        let gateway = gateway(
            &format!("http://{host}:{port}/replies"),
            &format!("http://{host}:{port}"),
            &delivery,
        )
        .await;
        let conversation = conversation(&gateway, &receiver, host).await;
        let (status, body) = call(
            &gateway,
            "POST",
            &format!("/v1/conversations/{conversation}/messages"),
            Some(json!({"text": "reply"})),
        )
        .await;
        assert_ne!(status, 201, "{host}: {body}");
        gateway.stop().await;
    }
    assert!(site.requests().is_empty(), "the plugin reached loopback");
    // Allowed, the same reply goes through.
    let gateway = gateway(
        &format!("http://localhost:{port}/replies"),
        &format!("http://localhost:{port}"),
        &format!("[plugins]\nallow_networks = {LOOPBACK}\n{delivery}"),
    )
    .await;
    let conversation = conversation(&gateway, &receiver, "allowed").await;
    let (status, body) = call(
        &gateway,
        "POST",
        &format!("/v1/conversations/{conversation}/messages"),
        Some(json!({"text": "reply"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(site.requests().len(), 1);
    gateway.stop().await;
}

/// `omnigate <args> <config file>` with `OMNIGATE_ADMIN_KEY` set to `value`: exit
/// success and stderr.
fn run_with_admin_key(args: &[&str], value: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("omnigate.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nkeys = [\"env:OMNIGATE_ADMIN_KEY\"]\n",
    )
    .expect("config");
    let output = std::process::Command::new(omnigate_tests::omnigate_bin())
        .args(args)
        .arg(&file)
        .env("OMNIGATE_ADMIN_KEY", value)
        .current_dir(dir.path())
        .output()
        .expect("run");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_empty_or_short_admin_key_stops_config_check_and_serve() {
    for (value, problem) in [
        ("", "is empty"),
        ("   ", "is empty"),
        ("short-key", "is too short"),
    ] {
        for args in [&["config", "check"][..], &["serve", "--config"][..]] {
            let (ok, stderr) = run_with_admin_key(args, value);
            assert!(!ok, "{args:?} with {value:?} succeeded");
            assert!(
                stderr.contains("`[admin] keys` entry 1 (env:OMNIGATE_ADMIN_KEY)")
                    && stderr.contains(problem),
                "{args:?} {value:?}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn an_empty_bearer_over_http2_is_refused() {
    const ADMIN_KEY: &str = "hardening-admin-key-0123";
    let config = format!("[admin]\nkeys = [\"{ADMIN_KEY}\"]\n");
    // The key a compose file with an unset variable would produce cannot be configured.
    let empty = Gateway::start("[admin]\nkeys = [\"\"]\n").await;
    assert!(empty.is_err(), "an empty admin key was accepted");
    let gateway = Gateway::start(&config).await.expect("gateway");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    for (bearer, expected) in [
        ("Bearer ".to_owned(), 401),
        ("Bearer  ".to_owned(), 401),
        (format!("Bearer {ADMIN_KEY}"), 200),
    ] {
        let response = client
            .get(gateway.url("/admin/plugins"))
            .header("authorization", &bearer)
            .send()
            .await
            .expect("request");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status().as_u16(), expected, "{bearer:?}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn short_subscription_secrets_are_refused() {
    let gateway = gateway("http://127.0.0.1:9/r", "http://127.0.0.1:9", "").await;
    // "short" in base64: a valid Standard Webhooks key of 5 bytes.
    let (status, body) = call(
        &gateway,
        "POST",
        "/v1/subscriptions",
        Some(json!({"url": "https://crm.example/h", "secret": "whsec_c2hvcnQ="})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`secret`") && !message.contains("c2hvcnQ"),
        "{body}"
    );
    gateway.stop().await;
}

/// A webhook on the web chat channel; its status.
async fn webhook(gateway: &Gateway, id: &str) -> u16 {
    let body = json!({"type": "message", "id": id, "visitor": {"id": "v"}, "text": "hola"})
        .to_string()
        .into_bytes();
    let headers = standard_webhooks_headers(SITE_SECRET, &format!("wh_{id}"), &body).expect("sign");
    omnigate_tests::post(&gateway.url("/webhooks/web"), &headers, body)
        .await
        .expect("post")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused_with_the_field_name() {
    let redis = omnigate_tests::redis::RedisServer::start().expect("redis-server");
    let store = format!("[store]\nurl = \"{}\"\n", redis.url());
    let gateway = gateway("http://127.0.0.1:9/r", "http://127.0.0.1:9", &store).await;
    assert_eq!(webhook(&gateway, "before").await, 200);
    // Any conversation id does: the range checks come before the lookup.
    let conversation = "cv_unknown";
    let huge = 100_000_000_000_000_000_u64;
    let create = |fields: Value| {
        let mut body = json!({"url": "https://crm.example/h", "secret": SUBSCRIPTION_SECRET});
        for (key, value) in fields.as_object().expect("object") {
            body[key] = value.clone();
        }
        body
    };
    let (status, body) = call(
        &gateway,
        "POST",
        "/v1/subscriptions",
        Some(
            json!({"id": "patched", "url": "https://crm.example/h", "secret": SUBSCRIPTION_SECRET}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let subscriptions = "/v1/subscriptions".to_owned();
    let patched = "/v1/subscriptions/patched".to_owned();
    let bodies: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            subscriptions.clone(),
            create(json!({"history": huge})),
            "history",
        ),
        (
            "POST",
            subscriptions.clone(),
            create(json!({"history": 51})),
            "history",
        ),
        (
            "POST",
            subscriptions,
            create(json!({"history": -1})),
            "history",
        ),
        (
            "PATCH",
            patched.clone(),
            json!({"history": huge}),
            "history",
        ),
        ("PATCH", patched.clone(), json!({"history": 51}), "history"),
        (
            "PATCH",
            patched.clone(),
            json!({"secret": "whsec_cm90YXRlZC1zdWJzY3JpcHRpb24tc2VjcmV0LWtleSEh", "rotation_grace": "31days"}),
            "rotation_grace",
        ),
        (
            "PATCH",
            patched,
            json!({"secret": "whsec_cm90YXRlZC1zdWJzY3JpcHRpb24tc2VjcmV0LWtleSEh", "rotation_grace": "100000000years"}),
            "rotation_grace",
        ),
        (
            "POST",
            format!("/v1/conversations/{conversation}/messages"),
            json!({"text": "x".repeat(64 * 1024 + 1)}),
            "text",
        ),
    ];
    for (method, path, body, field) in bodies {
        let (status, answer) = call(&gateway, method, &path, Some(body)).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == 400 && message.contains(field),
            "{method} {path} {field}: {status} {answer}"
        );
    }
    for (path, field) in [
        (
            format!("/v1/conversations/{conversation}/timeline?limit=0"),
            "limit",
        ),
        (
            format!("/v1/conversations/{conversation}/timeline?limit=501"),
            "limit",
        ),
        (
            format!("/v1/conversations/{conversation}/timeline?limit=-1"),
            "limit",
        ),
        (
            format!("/v1/conversations/{conversation}/timeline?from=18446744073709551615"),
            "from",
        ),
        ("/v1/dead-letters?limit=0".to_owned(), "limit"),
        ("/v1/dead-letters?limit=1001".to_owned(), "limit"),
        (format!("/v1/dead-letters?limit={huge}0000"), "limit"),
    ] {
        let (status, answer) = call(&gateway, "GET", &path, None).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == 400 && message.contains(field),
            "GET {path}: {status} {answer}"
        );
    }
    // Nothing above reached the store: webhooks still go through on Redis.
    assert_eq!(webhook(&gateway, "after").await, 200);
    gateway.stop().await;
}

/// Whether the server closed `stream` (EOF or reset) within [`WAIT`]; whatever it
/// wrote before closing (e.g. a `408`) is returned.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut seen)).await {
        Ok(_) => Some(String::from_utf8_lossy(&seen).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_disconnected() {
    use tokio::io::AsyncWriteExt;
    let gateway = Gateway::start(&format!(
        "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"300ms\"\nrequest_timeout = \"300ms\"\n[api]\nkeys = [\"{API_KEY}\"]\n"
    ))
    .await
    .expect("gateway");
    let addr = gateway.addr;
    // Slowloris: a request head that never ends.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: 1\r\n")
        .await
        .expect("write");
    // A socket that never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    // A body that never arrives in full.
    let mut trickle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    trickle
        .write_all(
            format!(
                "POST /v1/subscriptions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"url\":"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    assert!(
        closed_by_server(&mut slow).await.is_some(),
        "slowloris kept"
    );
    assert!(
        closed_by_server(&mut silent).await.is_some(),
        "silent socket kept"
    );
    let answer = closed_by_server(&mut trickle).await.expect("trickle kept");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, _) = omnigate_tests::get(&gateway.url("/healthz"), &[])
        .await
        .expect("healthz");
    assert_eq!(status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn healthz_answers_when_idle_sockets_exceed_the_connection_cap() {
    const CAP: usize = 8;
    const IDLE: usize = 24;
    let gateway = Gateway::start(&format!("[server]\nmax_connections = {CAP}\n"))
        .await
        .expect("gateway");
    let addr = gateway.addr;
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let (status, _) = omnigate_tests::get(&gateway.url("/healthz"), &[])
        .await
        .expect("healthz");
    assert_eq!(status, 200);
    // The gateway holds at most CAP connections: the longest-idle ones were closed.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut closed = 0;
        for stream in &idle {
            let mut byte = [0u8; 1];
            match stream.try_read(&mut byte) {
                Ok(0) => closed += 1,
                Err(error) if error.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
                _ => {}
            }
        }
        if closed >= IDLE - CAP {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {closed} of {IDLE} idle sockets closed with a cap of {CAP}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn metrics_can_require_their_own_key() {
    const METRICS_KEY: &str = "metrics-scrape-key-0123";
    let gateway = Gateway::start(&format!("[metrics]\nkeys = [\"{METRICS_KEY}\"]\n"))
        .await
        .expect("gateway");
    let url = gateway.url("/metrics");
    let (status, _) = omnigate_tests::get(&url, &[]).await.expect("get");
    assert_eq!(status, 401);
    let (status, _) = omnigate_tests::get(&url, &api_auth()).await.expect("get");
    assert_eq!(status, 401, "the API key is not a metrics key");
    let bearer = vec![("authorization".to_owned(), format!("Bearer {METRICS_KEY}"))];
    let (status, text) = omnigate_tests::get(&url, &bearer).await.expect("get");
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE"), "{text}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_webhook_answer_has_one_content_type() {
    let gateway = gateway("http://127.0.0.1:9/r", "http://127.0.0.1:9", "").await;
    let body = json!({"type": "message", "id": "ct", "visitor": {"id": "v"}, "text": "hola"})
        .to_string()
        .into_bytes();
    let mut request = reqwest::Client::new()
        .post(gateway.url("/webhooks/web"))
        .body(body.clone());
    for (name, value) in standard_webhooks_headers(SITE_SECRET, "wh_ct", &body).expect("sign") {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("post");
    assert_eq!(response.status().as_u16(), 200);
    let types: Vec<_> = response.headers().get_all("content-type").iter().collect();
    assert_eq!(types.len(), 1, "{types:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_in_parallel_stay_within_the_plugin_memory_budget() {
    // A server that accepts and never answers: a fetch to it holds its instance (without
    // spinning a CPU) until `fetch_timeout`.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    // Room for two 32 MiB instances; a third caller waits 20 ms, then is told to retry.
    let config = format!(
        r#"
        [plugins]
        max_memory_bytes = 67108864
        instance_wait = "20ms"
        allow_networks = {LOOPBACK}
        [[channels]]
        id = "evil"
        plugin = {hostile}
        allowed_hosts = ["http://{silent_addr}"]
        secrets = {{ token = "hardening-token-0123" }}
        limits = {{ memory_bytes = 33554432, fetch_timeout = "3s" }}
        "#,
        hostile = toml_path(&omnigate_tests::guest_path("hostile")),
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    let url = gateway.url(&format!(
        "/webhooks/evil?mode=secret-fetch&target=http://{silent_addr}/never"
    ));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(&url)
                    .send()
                    .await
                    .expect("post");
                let retry_after = response.headers().contains_key("retry-after");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (status, api_error(&text).0, retry_after, text)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("join"));
    }
    // Two held an instance until their fetch timed out; four found no room.
    let ran = answers.iter().filter(|answer| answer.0 == 200).count();
    let busy = answers
        .iter()
        .filter(|answer| answer.0 == 503 && answer.1 == "plugins_busy" && answer.2)
        .count();
    assert_eq!((ran, busy), (2, 4), "{answers:?}");
    // A guest allocating without end is stopped by its own limit, and every reservation
    // came back: the next call gets an instance.
    let (status, text) = omnigate_tests::post(&gateway.url("/webhooks/evil?mode=alloc"), &[], "")
        .await
        .expect("post");
    assert_eq!(status, 502, "the memory limit, not the budget: {text}");
    assert!(text.contains("memory limit"), "{text}");
    gateway.stop().await;
}

#[tokio::test]
async fn api_subscriptions_are_capped() {
    let gateway = gateway(
        "http://127.0.0.1:9/r",
        "http://127.0.0.1:9",
        "[delivery]\nmax_api_subscriptions = 2\n",
    )
    .await;
    for id in ["one", "two", "three"] {
        let (status, body) = call(
            &gateway,
            "POST",
            "/v1/subscriptions",
            Some(json!({"id": id, "url": "https://crm.example/h", "secret": SUBSCRIPTION_SECRET})),
        )
        .await;
        let expected = if id == "three" { 409 } else { 201 };
        assert_eq!(status, expected, "{id}: {body}");
        if id == "three" {
            assert_eq!(body["error"]["code"], "subscription_limit", "{body}");
        }
    }
    gateway.stop().await;
}

/// A gateway whose only channel runs the hostile guest with secret `token`, `allowed` as
/// its allow-list and `extra` channel keys, loopback allowed for fetches.
async fn hostile_gateway(allowed: &str, extra: &str) -> Gateway {
    let config = format!(
        r#"
        [plugins]
        allow_networks = {LOOPBACK}
        [[channels]]
        id = "evil"
        plugin = {hostile}
        allowed_hosts = [{allowed}]
        secrets = {{ token = "scoped-secret-token-0123" }}
        {extra}
        "#,
        hostile = toml_path(&omnigate_tests::guest_path("hostile")),
    );
    Gateway::start(&config).await.expect("gateway")
}

async fn secret_fetch(gateway: &Gateway, target: &str) -> String {
    let (status, text) = omnigate_tests::post(
        &gateway.url(&format!("/webhooks/evil?mode=secret-fetch&target={target}")),
        &[],
        "",
    )
    .await
    .expect("post");
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test]
async fn an_allowed_host_entry_is_one_origin_and_secrets_go_only_where_scoped() {
    let echo = FakeApi::start(|request| (200, Vec::new(), request.body.clone()))
        .await
        .expect("echo");
    let target = format!("{}/echo", echo.url);
    // A bare host means https on 443: the plain-http port of the same host is not allowed.
    let gateway = hostile_gateway("\"127.0.0.1\"", "").await;
    let text = secret_fetch(&gateway, &target).await;
    assert!(text.contains("Denied"), "{text}");
    gateway.stop().await;
    // The origin is allowed, but the secret is scoped to another one: nothing is sent.
    let allowed = format!("\"http://{}\"", echo.authority);
    let scoped = "secrets_hosts = { token = [\"https://api.provider.example\"] }";
    let gateway = hostile_gateway(&allowed, scoped).await;
    let text = secret_fetch(&gateway, &target).await;
    assert!(
        text.contains("Denied") && text.contains("secrets_hosts"),
        "{text}"
    );
    gateway.stop().await;
    assert!(
        echo.requests().is_empty(),
        "a request went out: {:?}",
        echo.requests()
    );
    // Scoped to this origin, it goes (and the echo comes back redacted).
    let scoped = format!("secrets_hosts = {{ token = [{allowed}] }}");
    let gateway = hostile_gateway(&allowed, &scoped).await;
    let text = secret_fetch(&gateway, &target).await;
    assert!(text.contains("[redacted]"), "{text}");
    assert_eq!(echo.requests().len(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn activation_can_be_limited_to_the_channels_kind() {
    const ADMIN_KEY: &str = "hardening-admin-key-0123";
    let config = format!(
        r#"
        [admin]
        keys = ["{ADMIN_KEY}"]
        require_same_kind = true
        [[channels]]
        id = "web"
        plugin = {plugin}
        config = {{ callback_url = "http://127.0.0.1:9/r" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        "#,
        plugin = toml_path(&plugin_path("webchat")),
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    let admin = vec![("authorization".to_owned(), format!("Bearer {ADMIN_KEY}"))];
    let hostile = std::fs::read(omnigate_tests::guest_path("hostile")).expect("hostile");
    let (status, text) =
        omnigate_tests::post(&gateway.url("/admin/plugins?activate=web"), &admin, hostile)
            .await
            .expect("upload");
    assert_eq!(status, 422, "{text}");
    assert_eq!(api_error(&text).0, "kind_mismatch", "{text}");
    // The web chat plugin itself is still accepted.
    let webchat = std::fs::read(plugin_path("webchat")).expect("webchat");
    let (status, text) =
        omnigate_tests::post(&gateway.url("/admin/plugins?activate=web"), &admin, webchat)
            .await
            .expect("upload");
    assert_eq!(status, 201, "{text}");
    gateway.stop().await;
}

/// `[admin] signing_keys`: an uploaded version serves only when signed by a configured
/// key; unsigned and wrongly signed uploads are refused with their own codes.
#[tokio::test]
async fn activation_can_be_limited_to_signed_plugins() {
    use omnigate::lifecycle::signing::{private_key, public_key_text, sign_wasm};
    const ADMIN_KEY: &str = "hardening-admin-key-0123";
    let signer = private_key(&"11".repeat(32)).expect("signer");
    let stranger = private_key(&"22".repeat(32)).expect("stranger");
    // The channel starts on the hostile guest, so the web chat bytes are an upload (the
    // operator's configured files are not subject to signing).
    let config = format!(
        r#"
        [admin]
        keys = ["{ADMIN_KEY}"]
        signing_keys = ["{public}"]
        [[channels]]
        id = "web"
        plugin = {hostile}
        config = {{ callback_url = "http://127.0.0.1:9/r" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        "#,
        public = public_key_text(&signer),
        hostile = toml_path(&omnigate_tests::guest_path("hostile")),
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    let webchat = std::fs::read(plugin_path("webchat")).expect("webchat");
    let upload = |signature: Option<String>| {
        let mut headers = vec![("authorization".to_owned(), format!("Bearer {ADMIN_KEY}"))];
        headers.extend(signature.map(|sig| ("x-omnigate-signature".to_owned(), sig)));
        let url = gateway.url("/admin/plugins?activate=web");
        let body = webchat.clone();
        async move {
            omnigate_tests::post(&url, &headers, body)
                .await
                .expect("upload")
        }
    };
    let (status, text) = upload(None).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(api_error(&text).0, "signature_required", "{text}");
    let (status, text) = upload(Some(sign_wasm(&webchat, &stranger))).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(api_error(&text).0, "bad_signature", "{text}");
    let (status, text) = upload(Some(sign_wasm(&webchat, &signer))).await;
    assert_eq!(status, 201, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["activated"]["channel"], "web", "{text}");
    assert_eq!(answer["plugin"]["signed"], true, "{text}");
    gateway.stop().await;
}
