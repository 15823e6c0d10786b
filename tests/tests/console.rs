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
use omnigate_tests::{
    FakeApi, Gateway, Receiver, SUBSCRIPTION_SECRET, common_config, eventually, plugin_path, root,
    send_webchat, site_and_receiver, toml_path,
};
use serde_json::json;

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
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
    assert_eq!(browser.path().await, "/console/funnel");
    let cookie = browser.cookie("omnigate_console").await;

    // A signed web chat message appears in the conversation list.
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
    browser.goto(&gateway.url("/console/conversations")).await;
    browser
        .wait_for_text("#conversations", &conversation, true)
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
    assert!(browser.text("#stage").await.starts_with("lost"));
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
    browser.click("#dead-letters tbody button").await;
    let replayed = failing
        .wait_until("the replayed dead letter", omnigate_tests::WAIT, |seen| {
            !seen.is_empty()
        })
        .await
        .expect("replayed");
    assert_eq!(replayed.len(), 1, "only the replayed letter was delivered");

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
    assert_eq!(browser.path().await, "/console/sign-in");
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
