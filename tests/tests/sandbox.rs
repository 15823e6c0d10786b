//! Hostile plugins: each misbehaviour fails only its own call, with a clear error, and
//! the gateway keeps serving every channel.

use omnigate::runtime::{LoadError, Runtime, RuntimeSettings};
use omnigate_tests::{
    FakeApi, Gateway, LOOPBACK, Receiver, SUBSCRIPTION_SECRET, api_error, get, guest_path,
    plugin_path, post, standard_webhooks_headers, subscription_config, toml_path,
    wait_for_external_ids,
};
use serde_json::json;

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "tok-SECRET-value-9f8e7d";

struct Setup {
    gateway: Gateway,
    receiver: Receiver,
    echo: FakeApi,
    outsider: FakeApi,
}

/// A gateway with a healthy web chat channel and a hostile one. The hostile channel may
/// fetch only from `echo`, which answers with what it received (secret included), also
/// JSON-escaped, base64 (alone and inside a Basic-auth style value) and hex.
async fn setup(cpu_deadline: &str) -> Setup {
    let echo = FakeApi::start(|request| {
        use base64::Engine as _;
        let received = String::from_utf8_lossy(&request.body).into_owned();
        let body = format!(
            "authorization={} body={received} json={} base64={} basic={} hex={}",
            request.header("authorization").unwrap_or_default(),
            serde_json::to_string(&received).unwrap_or_default(),
            base64::engine::general_purpose::STANDARD.encode(&received),
            base64::engine::general_purpose::STANDARD.encode(format!("user:{received}")),
            hex::encode(&received),
        );
        (
            200,
            vec![(
                "x-echo".into(),
                request
                    .header("authorization")
                    .unwrap_or_default()
                    .to_owned(),
            )],
            body.into_bytes(),
        )
    })
    .await
    .expect("echo");
    let outsider = FakeApi::start(|_| (200, Vec::new(), b"should never be reached".to_vec()))
        .await
        .expect("outsider");
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    let config = format!(
        r#"
        [plugins]
        allow_networks = {LOOPBACK}
        [delivery]
        allow_networks = {LOOPBACK}
        [[channels]]
        id = "web"
        plugin = {webchat}
        config = {{ callback_url = "http://127.0.0.1:9/unused" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        [[channels]]
        id = "evil"
        plugin = {hostile}
        allowed_hosts = ["http://{echo}"]
        secrets = {{ token = "{TOKEN}" }}
        limits = {{ cpu_deadline = "{cpu_deadline}", memory_bytes = 33554432 }}
        {subscription}"#,
        webchat = toml_path(&plugin_path("webchat")),
        hostile = toml_path(&guest_path("hostile")),
        echo = echo.authority,
        subscription = subscription_config(&receiver),
    );
    let gateway = Gateway::start(&config).await.expect("gateway");
    Setup {
        gateway,
        receiver,
        echo,
        outsider,
    }
}

async fn evil(gateway: &Gateway, query: &str) -> (u16, String) {
    post(
        &gateway.url(&format!("/webhooks/evil?{query}")),
        &[],
        Vec::new(),
    )
    .await
    .expect("post")
}

/// The healthy channel still accepts a message and delivers its event.
async fn web_chat_still_serves(setup: &Setup, id: &str) {
    let body =
        json!({"type": "message", "id": id, "visitor": {"id": "v-1"}, "text": "still there?"})
            .to_string();
    let headers =
        standard_webhooks_headers(SITE_SECRET, &format!("wh_{id}"), body.as_bytes()).expect("sign");
    let (status, text) = post(&setup.gateway.url("/webhooks/web"), &headers, body)
        .await
        .expect("post");
    assert_eq!(status, 200, "{text}");
    // Wait for this message's own event: `conversation.started` may arrive first.
    wait_for_external_ids(&setup.receiver, &[id.to_owned()], |delivered, id| {
        delivered == id
    })
    .await;
}

// Multi-threaded like the real gateway: the spinning guest occupies at most one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_hits_the_deadline_while_other_channels_keep_serving() {
    let setup = setup("3s").await;
    let url = setup.gateway.url("/webhooks/evil?mode=loop");
    let looping = tokio::spawn(async move { post(&url, &[], Vec::new()).await });
    // While the hostile call spins, the web chat channel answers (the guest yields to the
    // executor every epoch tick, so it never holds a worker thread).
    web_chat_still_serves(&setup, "during-loop").await;
    assert!(
        !looping.is_finished(),
        "the web chat answer came while the loop was still running"
    );
    let (status, text) = looping.await.expect("join").expect("post");
    let (code, message) = api_error(&text);
    assert_eq!((status, code.as_str()), (502, "plugin_failed"), "{text}");
    assert!(message.contains("CPU deadline"), "{message}");
    // The channel works again with a fresh instance.
    let (status, text) = evil(&setup.gateway, "mode=ok&id=after-loop").await;
    assert_eq!((status, text.as_str()), (200, "ok"));
}

#[tokio::test]
async fn memory_bomb_hits_the_limit() {
    let setup = setup("2s").await;
    let (status, text) = evil(&setup.gateway, "mode=alloc").await;
    let (code, message) = api_error(&text);
    assert_eq!((status, code.as_str()), (502, "plugin_failed"), "{text}");
    assert!(
        message.contains("memory limit of 33554432 bytes"),
        "{message}"
    );
    web_chat_still_serves(&setup, "after-alloc").await;
}

#[tokio::test]
async fn panic_is_a_trap_with_a_clear_error() {
    let setup = setup("1s").await;
    let (status, text) = evil(&setup.gateway, "mode=panic").await;
    let (code, message) = api_error(&text);
    assert_eq!((status, code.as_str()), (502, "plugin_failed"), "{text}");
    assert!(
        message.contains("hostile@") && message.contains("trapped"),
        "{message}"
    );
    // wasmtime's detail (backtrace, offsets, panic text) goes to the log, not the caller.
    assert!(
        !message.contains("backtrace") && !message.contains("wasm") && !message.contains("0x"),
        "{message}"
    );
    web_chat_still_serves(&setup, "after-panic").await;
}

#[tokio::test]
async fn fetch_to_a_host_not_allowed_is_an_error_value_and_sends_nothing() {
    let setup = setup("1s").await;
    let (status, text) = evil(&setup.gateway, "mode=fetch-denied").await;
    assert_eq!(
        status, 200,
        "a denial is an error value, not a trap: {text}"
    );
    assert!(
        text.contains("Denied") && text.contains("not-allowed.example"),
        "{text}"
    );
    let target = format!("{}/steal", setup.outsider.url);
    let (status, text) = evil(
        &setup.gateway,
        &format!("mode=secret-fetch&target={target}"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Denied"), "{text}");
    assert!(
        setup.outsider.requests().is_empty(),
        "nothing may reach a host not allowed"
    );
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn secrets_are_filled_in_by_the_host_and_never_reach_the_plugin() {
    let setup = setup("1s").await;
    let target = format!("{}/echo", setup.echo.url);
    let (status, text) = evil(
        &setup.gateway,
        &format!("mode=secret-fetch&target={target}"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // The allowed host got the real secret (that is what placeholders are for)…
    let requests = setup.echo.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(requests[0].body, TOKEN.as_bytes());
    // …but what came back to the plugin had it redacted, even though the server echoed it,
    // as is and encoded.
    use base64::Engine as _;
    let encoded = [
        TOKEN.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(TOKEN),
        base64::engine::general_purpose::STANDARD.encode(format!("user:{TOKEN}")),
        hex::encode(TOKEN),
        "SECRET-value".to_owned(),
    ];
    for form in encoded {
        assert!(
            !text.contains(&form),
            "the secret leaked back to the plugin as {form}: {text}"
        );
    }
    assert!(text.contains("[redacted]"), "{text}");
    // config() does not expose secrets either.
    let (status, text) = evil(&setup.gateway, "mode=secret-read").await;
    assert_eq!((status, text.as_str()), (200, "None"));
}

#[tokio::test]
async fn components_of_another_world_and_garbage_are_refused_at_load() {
    let runtime = Runtime::new(&RuntimeSettings::default()).expect("runtime");
    let error = runtime
        .load_file(&guest_path("other-world"))
        .await
        .expect_err("other world");
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    assert!(error.to_string().contains("exports [run]"), "{error}");

    let error = runtime
        .load_bytes(b"definitely not wasm".to_vec())
        .await
        .expect_err("garbage");
    assert!(matches!(error, LoadError::NotWasm), "{error}");
    // A core module (not a component): the 8-byte header of an empty core module.
    let error = runtime
        .load_bytes(b"\0asm\x01\0\0\0".to_vec())
        .await
        .expect_err("core module");
    assert!(matches!(error, LoadError::CoreModule), "{error}");
    let mut truncated = std::fs::read(plugin_path("webchat")).expect("read");
    truncated.truncate(truncated.len() / 2);
    let error = runtime.load_bytes(truncated).await.expect_err("truncated");
    assert!(matches!(error, LoadError::Compile(_)), "{error}");

    // A gateway configured with such a plugin refuses to start, naming channel and reason.
    let config = format!(
        "[[channels]]\nid = \"odd\"\nplugin = {}\n",
        toml_path(&guest_path("other-world"))
    );
    let error = Gateway::start(&config).await.err().expect("refused");
    let text = format!("{error:#}");
    assert!(
        text.contains("channel `odd`") && text.contains("not an omnigate channel plugin"),
        "{text}"
    );

    // And a running gateway is unaffected by a plugin that misbehaved earlier.
    let setup = setup("1s").await;
    let (status, _) = get(&setup.gateway.url("/healthz"), &[])
        .await
        .expect("healthz");
    assert_eq!(status, 200);
}
