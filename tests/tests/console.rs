//! The web console in a real headless Chromium: sign in; a signed web chat message shows
//! in the conversation list and, live, in its open timeline; a reply from the console
//! reaches the receiver as `message.sent`; "mark lost" changes the funnel table; a dead
//! letter is replayed; sign-out closes the console. Outside the browser: an action
//! without the CSRF token and a session cookie of another key are refused, the cookie's
//! attributes and the Content-Security-Policy are checked, and every page stays under
//! 300 KB; on a phone-sized window no page is wider than the screen. Screenshots of the
//! funnel and a conversation go to `target/console/`.

use omnigate_tests::browser::Browser;
use omnigate_tests::downstream::{Downstream, Mode};
use omnigate_tests::redis::RedisServer;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, SUBSCRIPTION_SECRET, api_auth, common_config, eventually,
    plugin_path, post, root, send_webchat, site_and_receiver, standard_webhooks_headers, toml_path,
};
use serde_json::json;

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Not the site's secret: the plugin refuses what it signs.
const WRONG_SITE_SECRET: &str = "whsec_AfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CONSOLE_KEY: &str = "console-key-0123456789";
const OTHER_CONSOLE_KEY: &str = "another-console-key-0123456789";
const ADMIN_KEY: &str = "admin-key-0123456789";
/// Pages must stay below this (docs/console.md).
const MAX_PAGE_BYTES: usize = 300 * 1024;

fn config(console_key: &str, site: &FakeApi, receiver: &Receiver, failing: &Downstream) -> String {
    format!(
        r#"
        [console]
        keys = ["{console_key}"]
        [admin]
        keys = ["{ADMIN_KEY}"]
        [[channels]]
        id = "web"
        plugin = {webchat}
        allowed_hosts = ["http://{site}"]
        config = {{ callback_url = "{site_url}/omnigate/replies" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        {common}
        [[subscriptions]]
        id = "flaky"
        url = "{failing}"
        secret = "{SUBSCRIPTION_SECRET}"
        events = ["message.received"]
        "#,
        webchat = toml_path(&plugin_path("webchat")),
        site = site.authority,
        site_url = site.url,
        common = common_config(receiver),
        failing = failing.url(),
    )
}

fn visitor_message(id: &str, text: &str) -> serde_json::Value {
    json!({
        "type": "message", "id": id, "sent_at": jiff::Timestamp::now().to_string(),
        "visitor": {"id": "visitor-console", "name": "Ada"},
        "text": text,
        "page": {"url": "https://shop.example/p?utm_source=google&utm_campaign=spring"},
    })
}

/// A plain HTTP client that neither follows redirects nor keeps cookies: each request
/// says exactly which cookie it carries.
fn http() -> reqwest::Client {
    omnigate::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let (site, receiver) = site_and_receiver().await;
    let failing = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Fail(500, None))
        .await
        .expect("downstream");
    let gateway = Gateway::start(&config(CONSOLE_KEY, &site, &receiver, &failing))
        .await
        .expect("gateway");
    let browser = Browser::start(1280, 1000).await.expect("browser");
    let shots = root().join("target").join("console");

    // Sign in: the console sends an anonymous visitor to the sign-in form first.
    browser.goto(&gateway.url("/console/conversations")).await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.fill("#key", "not-a-console-key-0000").await;
    browser.click("#sign-in button").await;
    let problem = browser.text("#problem").await;
    assert!(problem.contains("not a console key"), "{problem}");
    browser.fill("#key", CONSOLE_KEY).await;
    browser.click("#sign-in button").await;
    browser.wait_for_path("/console/funnel").await;
    let cookie = browser.cookie("omnigate_console").await;

    // A signed web chat message appears in the conversation list, open before it came:
    // the new conversation shows up without a reload.
    browser.goto(&gateway.url("/console/conversations")).await;
    let caption = browser.text("#conversations caption").await;
    assert!(caption.starts_with("0 conversations"), "{caption}");
    send_webchat(
        &gateway,
        "web",
        SITE_SECRET,
        &visitor_message("m1", "Hello, is the blue one in stock?"),
    )
    .await;
    let received = receiver.wait_of_type("message.received", 1).await.remove(0);
    let conversation = received["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    browser
        .wait_for_text("#conversations", &conversation, false)
        .await;

    // Its timeline, open in the browser, shows the next message without a reload.
    browser
        .click(&format!("a[href='/console/conversations/{conversation}']"))
        .await;
    browser
        .wait_for_text("#timeline", "blue one in stock", false)
        .await;
    send_webchat(
        &gateway,
        "web",
        SITE_SECRET,
        &visitor_message("m2", "And in size M?"),
    )
    .await;
    browser
        .wait_for_text("#timeline", "And in size M?", false)
        .await;

    // A reply from the console goes out on the channel and is published as message.sent.
    browser.fill("#reply-text", "Yes, both are in stock.").await;
    browser.click("#reply button").await;
    let sent = receiver.wait_of_type("message.sent", 1).await.remove(0);
    assert_eq!(sent["conversation"]["id"], conversation.as_str());
    assert_eq!(sent["message"]["text"], "Yes, both are in stock.");
    browser
        .wait_for_text("#timeline", "Yes, both are in stock.", false)
        .await;

    // A conversion and a stage change, recorded through the API, appear live among the
    // messages as timeline entries.
    let (status, body) = post(
        &gateway.url("/v1/conversions"),
        &api_auth(),
        json!({"id": "order-7", "name": "lead", "conversation_id": conversation}).to_string(),
    )
    .await
    .expect("conversion");
    assert_eq!(status, 201, "{body}");
    browser
        .wait_for_text("#timeline", "conversion.recorded", false)
        .await;
    browser
        .wait_for_text("#timeline", "lead order-7", false)
        .await;
    let (status, body) = post(
        &gateway.url(&format!("/v1/conversations/{conversation}/stage")),
        &api_auth(),
        json!({"stage": "qualified", "by": "crm"}).to_string(),
    )
    .await
    .expect("stage");
    assert_eq!(status, 200, "{body}");
    browser
        .wait_for_text("#timeline", "lead → qualified, by crm", false)
        .await;
    browser.screenshot(&shots.join("conversation.png")).await;

    // Mark it lost: the funnel table's lost column counts the reason.
    let funnel = "/console/funnel?by=campaign";
    browser.goto(&gateway.url(funnel)).await;
    assert!(!browser.text("#lost-total").await.contains("price"));
    browser
        .goto(&gateway.url(&format!("/console/conversations/{conversation}")))
        .await;
    browser.fill("#lost-reason", "price").await;
    browser.click("#lost-form button").await;
    // The click returns before the browser has followed the form's answer: wait for the
    // new page instead of reading the old one (or an element it has just dropped).
    browser.wait_for_text("#stage", "lost", false).await;
    // The page shows the change among the entries, after the messages, in time order.
    let timeline = browser.text("#timeline").await;
    let (qualified, lost, reply) = (
        timeline.find("lead → qualified").expect("qualified entry"),
        timeline
            .find("qualified → lost: price, by console")
            .expect("lost entry"),
        timeline.find("Yes, both are in stock.").expect("the reply"),
    );
    assert!(reply < qualified && qualified < lost, "{timeline}");
    browser.goto(&gateway.url(funnel)).await;
    browser.wait_for_text("#lost-total", "price: 1", true).await;
    browser
        .wait_for_text("#funnel-table tbody", "spring", false)
        .await;
    browser.screenshot(&shots.join("funnel.png")).await;

    // On a phone-sized screen the pages reflow: nothing is wider than the window (wide
    // tables scroll inside their own box).
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("resize");
    for path in [
        funnel.to_owned(),
        format!("/console/conversations/{conversation}"),
    ] {
        browser.goto(&gateway.url(&path)).await;
        let overflow = browser
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .expect("measure");
        assert_eq!(
            overflow.as_i64(),
            Some(0),
            "{path} overflows a phone screen"
        );
    }
    browser
        .screenshot(&shots.join("conversation-phone.png"))
        .await;
    browser
        .client
        .set_window_size(1280, 1000)
        .await
        .expect("resize");

    // The failing subscription gave both messages up: replay one once it accepts again.
    eventually(|| {
        let letters = gateway.app.delivery.stats();
        (letters.dead_lettered >= 2)
            .then_some(())
            .ok_or_else(|| format!("nothing dead-lettered yet: {letters:?}"))
    })
    .await;
    failing.set(Mode::Accept);
    browser.goto(&gateway.url("/console/delivery")).await;
    browser
        .wait_for_text("#dead-letters tbody", "message.received", true)
        .await;
    // The failed attempts are listed one by one, with the receiver's answer.
    let attempts = browser.text("#attempts tbody").await;
    assert!(
        attempts.contains("flaky")
            && attempts.contains("failed")
            && attempts.contains("status 500"),
        "{attempts}"
    );
    browser.click("#dead-letters tbody button").await;
    let replayed = failing
        .wait_until("the replayed dead letter", omnigate_tests::WAIT, |seen| {
            !seen.is_empty()
        })
        .await
        .expect("replayed");
    assert_eq!(replayed.len(), 1, "only the replayed letter was delivered");
    browser
        .wait_for_text("#attempts tbody", "delivered", true)
        .await;

    // Plugins: a webhook the plugin refuses (a wrong signature) is among its channel's
    // recent errors.
    let body = visitor_message("m-forged", "forged")
        .to_string()
        .into_bytes();
    let forged = standard_webhooks_headers(WRONG_SITE_SECRET, "wh_forged", &body).expect("sign");
    let (status, answer) = post(&gateway.url("/webhooks/web"), &forged, body)
        .await
        .expect("webhook");
    assert_eq!(status, 401, "{answer}");
    browser.goto(&gateway.url("/console/plugins")).await;
    let errors = browser.text("#plugin-errors tbody").await;
    assert!(
        errors.contains("web")
            && errors.contains("handle-webhook")
            && errors.contains("unauthorized"),
        "{errors}"
    );

    // Plugins: validate a version from the console (an [admin] key is required).
    browser.goto(&gateway.url("/console/plugins")).await;
    let wasm = plugin_path("webchat");
    browser.choose_file("#plugin-file", &wasm).await;
    browser
        .fill("#upload-admin-key", "not-the-admin-key-0000")
        .await;
    browser.click("#validate-button").await;
    assert!(browser.text("#problem").await.contains("[admin] key"));
    browser.goto(&gateway.url("/console/plugins")).await;
    browser.choose_file("#plugin-file", &wasm).await;
    browser.fill("#upload-admin-key", ADMIN_KEY).await;
    browser.click("#validate-button").await;
    let notice = browser.text("#notice").await;
    assert!(notice.starts_with("Valid: webchat"), "{notice}");

    refusals(&gateway, &site, &receiver, &failing, &cookie, &conversation).await;
    page_sizes(&gateway, &cookie, &conversation).await;

    // Sign out: the console refuses the browser, and the old cookie, from now on.
    browser.goto(&gateway.url("/console/funnel")).await;
    browser.click(".sign-out button").await;
    browser.wait_for_path("/console/sign-in").await;
    browser.goto(&gateway.url("/console/funnel")).await;
    assert_eq!(browser.path().await, "/console/sign-in");
    let (status, _) = get(&gateway, "/console/funnel", &cookie).await;
    assert_eq!(status, 303, "a signed-out session still opened the console");

    // A live timeline left open does not hold shutdown: its stream ends with the gateway.
    let (_, cookie) = {
        let response = http()
            .post(gateway.url("/console/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("key", CONSOLE_KEY)]))
            .send()
            .await
            .expect("sign in");
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let value = set_cookie
            .split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, value)| value.to_owned())
            .expect("cookie value");
        (response, value)
    };
    let (status, stream) = get(
        &gateway,
        &format!("/console/conversations/{conversation}/events"),
        &cookie,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    browser.stop().await;
    gateway.stop().await;
    drop(stream);
}

/// `pairs` as an `application/x-www-form-urlencoded` body, as a browser's form posts.
fn form_body(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("form")
}

async fn get(gateway: &Gateway, path: &str, cookie: &str) -> (u16, reqwest::Response) {
    let response = http()
        .get(gateway.url(path))
        .header("cookie", format!("omnigate_console={cookie}"))
        .send()
        .await
        .expect("get");
    (response.status().as_u16(), response)
}

async fn post_form(
    gateway: &Gateway,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let response = http()
        .post(gateway.url(path))
        .header("cookie", format!("omnigate_console={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// CSRF, another key's cookie, cross-site posts; the cookie's attributes and the CSP.
async fn refusals(
    gateway: &Gateway,
    site: &FakeApi,
    receiver: &Receiver,
    failing: &Downstream,
    cookie: &str,
    conversation: &str,
) {
    let stage = format!("/console/conversations/{conversation}/stage");
    let (status, body) = post_form(gateway, &stage, cookie, &[("stage", "won")]).await;
    assert_eq!(status, 403, "an action without the CSRF token: {body}");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _) = post_form(
        gateway,
        &stage,
        cookie,
        &[("stage", "won"), ("csrf", "forged")],
    )
    .await;
    assert_eq!(status, 403, "an action with a forged CSRF token");

    // A second gateway with another console key refuses this session's cookie.
    let other = Gateway::start(&config(OTHER_CONSOLE_KEY, site, receiver, failing))
        .await
        .expect("second gateway");
    let (status, response) = get(&other, "/console/funnel", cookie).await;
    assert_eq!(status, 303, "another key's cookie opened a page");
    assert_eq!(response.headers()["location"], "/console/sign-in");
    let (status, _) = post_form(&other, "/console/sign-out", cookie, &[("csrf", "x")]).await;
    assert_eq!(status, 401, "another key's cookie was allowed an action");
    other.stop().await;

    // Sign-in sets an HttpOnly, SameSite=Strict cookie with an expiry (no Secure over
    // plain http); every answer carries the CSP; the key never appears in a URL.
    let response = http()
        .post(gateway.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("key", CONSOLE_KEY)]))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status().as_u16(), 303);
    let set_cookie = response.headers()["set-cookie"].to_str().expect("ascii");
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/console"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(
        !response.headers()["location"]
            .to_str()
            .expect("ascii")
            .contains(CONSOLE_KEY)
    );
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    // A cross-site form post is refused even with a valid session.
    let response = http()
        .post(gateway.url("/console/sign-out"))
        .header("cookie", format!("omnigate_console={cookie}"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("csrf", "whatever")]))
        .send()
        .await
        .expect("cross-site");
    assert_eq!(response.status().as_u16(), 403);
}

/// Every page answers 200 under 300 KB.
async fn page_sizes(gateway: &Gateway, cookie: &str, conversation: &str) {
    for path in [
        "/console/funnel".to_owned(),
        "/console/conversations".to_owned(),
        format!("/console/conversations/{conversation}"),
        "/console/contacts".to_owned(),
        "/console/plugins".to_owned(),
        "/console/delivery".to_owned(),
        "/console/assets/console.css".to_owned(),
        "/console/assets/console.js".to_owned(),
    ] {
        let (status, response) = get(gateway, &path, cookie).await;
        assert_eq!(status, 200, "{path}");
        let size = response.bytes().await.expect("body").len();
        println!("console page {path}: {size} bytes");
        assert!(size <= MAX_PAGE_BYTES, "{path} is {size} bytes");
    }
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let gateway =
        Gateway::start("[console]\nenabled = false\nkeys = [\"console-key-0123456789\"]\n")
            .await
            .expect("gateway");
    let response = http()
        .get(gateway.url("/console/sign-in"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 404);
    gateway.stop().await;
}

/// The cookie value a sign-in answer sets, or `None` when it sets none.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    let set_cookie = response.headers().get("set-cookie")?.to_str().ok()?;
    let (_, value) = set_cookie.split(';').next()?.split_once('=')?;
    Some(value.to_owned())
}

/// Sign in to `gateway` with `key` from `client`: the answer's status and cookie.
async fn sign_in(
    gateway: &Gateway,
    client: &reqwest::Client,
    key: &str,
) -> (u16, Option<String>, String) {
    let response = client
        .post(gateway.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("key", key)]))
        .send()
        .await
        .expect("sign in");
    let status = response.status().as_u16();
    let cookie = session_cookie(&response);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.unwrap_or_default();
    (
        status,
        cookie,
        format!("retry-after: {retry_after}\n{body}"),
    )
}

/// The CSRF token a page of `gateway` carries for the session of `cookie`.
async fn csrf_token(gateway: &Gateway, cookie: &str) -> String {
    let (status, response) = get(gateway, "/console/funnel", cookie).await;
    assert_eq!(status, 200);
    let page = response.text().await.expect("page");
    let (_, rest) = page
        .split_once(r#"name="csrf" value=""#)
        .expect("a form with the CSRF token");
    rest.split('"').next().expect("token").to_owned()
}

/// Sign-out on one instance ends the session on every instance sharing the Redis store:
/// a second gateway that accepted the cookie refuses it after the first signed it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_on_one_instance_ends_the_session_on_every_instance() {
    let redis = RedisServer::start().expect("redis-server");
    let config = format!(
        "[store]\nurl = \"{}\"\n[console]\nkeys = [\"{CONSOLE_KEY}\"]\n",
        redis.url()
    );
    let one = Gateway::start(&config).await.expect("first gateway");
    let two = Gateway::start(&config).await.expect("second gateway");
    let (status, cookie, body) = sign_in(&one, &http(), CONSOLE_KEY).await;
    assert_eq!(status, 303, "{body}");
    let cookie = cookie.expect("a session cookie");
    let (status, _) = get(&two, "/console/funnel", &cookie).await;
    assert_eq!(status, 200, "the other instance accepts the session");

    let csrf = csrf_token(&one, &cookie).await;
    let (status, body) = post_form(&one, "/console/sign-out", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(status, 303, "{body}");
    for (name, gateway) in [("first", &one), ("second", &two)] {
        let (status, response) = get(gateway, "/console/funnel", &cookie).await;
        assert_eq!(
            status, 303,
            "the {name} instance still accepts a signed-out session"
        );
        assert_eq!(response.headers()["location"], "/console/sign-in");
        let (status, _) =
            post_form(gateway, "/console/sign-out", &cookie, &[("csrf", &csrf)]).await;
        assert_eq!(status, 401, "the {name} instance allowed an action");
    }
    // A new session on the second instance is not affected.
    let (status, cookie, body) = sign_in(&two, &http(), CONSOLE_KEY).await;
    assert_eq!(status, 303, "{body}");
    let (status, _) = get(&one, "/console/funnel", &cookie.expect("cookie")).await;
    assert_eq!(status, 200);
    one.stop().await;
    two.stop().await;
}

/// Sign-in attempts are limited per client address: once its attempts are spent, even
/// the right key answers 429 with a clear message and `Retry-After`, while another
/// address still signs in.
#[tokio::test]
async fn sign_in_attempts_are_limited_per_client_address() {
    // Three attempts an hour: none comes back while the test runs.
    let gateway = Gateway::start(&format!(
        "[console]\nkeys = [\"{CONSOLE_KEY}\"]\nsign_in_attempts = 3\nsign_in_window = \"1h\"\n"
    ))
    .await
    .expect("gateway");
    let client = http();
    for attempt in 1..=3 {
        let (status, cookie, body) = sign_in(&gateway, &client, "not-a-console-key-0000").await;
        assert_eq!(status, 401, "wrong key, attempt {attempt}: {body}");
        assert!(cookie.is_none());
    }
    let (status, cookie, body) = sign_in(&gateway, &client, CONSOLE_KEY).await;
    assert_eq!(status, 429, "{body}");
    assert!(cookie.is_none(), "no session once the attempts are spent");
    assert!(body.contains("Too many sign-in attempts"), "{body}");
    let retry_after: u64 = body
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("retry-after: "))
        .and_then(|seconds| seconds.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry_after > 0);

    // Another loopback address has its own allowance.
    let elsewhere = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let (status, cookie, body) = sign_in(&gateway, &elsewhere, CONSOLE_KEY).await;
    assert_eq!(status, 303, "{body}");
    assert!(cookie.is_some());
    gateway.stop().await;
}
