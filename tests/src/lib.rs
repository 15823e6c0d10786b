//! End-to-end test harness: the real gateway (router over real HTTP on loopback), real
//! plugins built for `wasm32-wasip2`, and local fake providers and downstream receivers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

pub use omnigate;

pub mod bench;
pub mod browser;
pub mod channels;
pub mod downstream;
pub mod load;
pub mod native;
pub mod process;
pub mod redis;

pub use channels::{
    API_KEY, LOOPBACK, SUBSCRIPTION_SECRET, WAIT, api_auth, api_error, common_config, deliver_meta,
    eventually, eventually_async, external_ids, first_received, fixture, fixture_names,
    fixture_names_ending, meta_handshake_url, meta_signature_header, meta_signed_headers,
    reply_url, send_reply, send_webchat, start_channel, subscription_config, wait_for_external_ids,
    webchat_channel_config,
};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `cargo` in the workspace root, without the variables Cargo sets for the test process.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    // Cargo sets these for the test process; passed on, they make build scripts that
    // watch them (ring watches CARGO_MANIFEST_DIR) rebuild, and everything above them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_test = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if set_for_test {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Build all plugins and test guests once per test process, the same way as
/// `cargo xtask plugins` (it is that command).
fn build_components() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = cargo()
            .args(["xtask", "plugins"])
            .output()
            .map_err(|error| format!("cannot run cargo xtask plugins: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo xtask plugins failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    })
}

fn component(dir: &str, name: &str) -> PathBuf {
    if let Err(error) = build_components() {
        panic!("{error}");
    }
    let path = root().join("target").join(dir).join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The built plugin `name` (`target/plugins/<name>.wasm`).
pub fn plugin_path(name: &str) -> PathBuf {
    component("plugins", name)
}

/// The built example plugin `name` in another language (`target/examples/<name>.wasm`,
/// from `plugins/examples/<name>`).
/// Its compiled form is put in the tests' compile cache first, once per process, with
/// `omnigate plugin check`: an interpreter component (CPython, SpiderMonkey) takes long
/// to compile, and tests starting at once would each compile it.
pub fn example_path(name: &str) -> PathBuf {
    static WARMED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let path = component("examples", name);
    let mut warmed = WARMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !warmed.iter().any(|done| done == name) {
        let output = Command::new(omnigate_bin())
            .args(["plugin", "check", "--cache-dir"])
            .arg(root().join("target").join("test-plugin-cache"))
            .arg(&path)
            .output()
            .expect("run omnigate plugin check");
        assert!(
            output.status.success(),
            "omnigate plugin check {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        warmed.push(name.to_owned());
    }
    path
}

/// A committed test fixture (`tests/fixtures/<name>`).
pub fn fixture_path(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

/// The built test guest `name` (`target/test-guests/<name>.wasm`).
pub fn guest_path(name: &str) -> PathBuf {
    component("test-guests", name)
}

/// The `omnigate` binary (debug), built once.
pub fn omnigate_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_bin(&BUILT, "debug")
}

/// The `xtask` binary (debug; built with the workspace's binaries, like `omnigate`).
pub fn xtask_bin() -> PathBuf {
    let omnigate = omnigate_bin();
    omnigate.with_file_name("xtask")
}

/// The `omnigate` binary built in release mode, once (for benchmarks).
pub fn omnigate_release_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_bin(&BUILT, "release")
}

fn built_bin(once: &OnceLock<Result<PathBuf, String>>, profile: &str) -> PathBuf {
    let built = once.get_or_init(|| {
        let mut command = cargo();
        // The whole workspace, like `cargo test --workspace`: the same feature set, so
        // the artifacts are shared instead of rebuilt.
        command.args(["build", "--quiet", "--workspace", "--bins"]);
        if profile == "release" {
            command.arg("--release");
        }
        let status = command.status().map_err(|error| error.to_string())?;
        status
            .success()
            .then(|| root().join("target").join(profile).join("omnigate"))
            .ok_or_else(|| format!("cargo build failed: {status}"))
    });
    match built {
        Ok(path) => path.clone(),
        Err(error) => panic!("{error}"),
    }
}

/// TOML string literal for a path.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A gateway running in this process on a loopback port.
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The loopback address it listens on (for the load generator).
    pub addr: std::net::SocketAddr,
    /// The application (registry, pipeline, delivery).
    pub app: Arc<omnigate::server::App>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Start a gateway from TOML configuration text. `[plugins] cache_dir` defaults to a
    /// shared test cache so plugins compile once per test run.
    pub async fn start(config: &str) -> Result<Self> {
        omnigate::tls::ensure_crypto_provider();
        let mut config = omnigate::ops::config::Config::from_toml(config)?;
        if config.plugins.cache_dir == omnigate::ops::config::PluginSettings::default().cache_dir {
            config.plugins.cache_dir = Some(root().join("target").join("test-plugin-cache"));
        }
        let limits = config.server.limits()?;
        let app = omnigate::server::build(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(omnigate::server::serve(
            app.clone(),
            listener,
            limits,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(2),
        ));
        Ok(Self {
            base,
            addr,
            app,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stop serving and wait for shutdown.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `method path` on `gateway` with `headers` and an optional JSON body; the status and
/// the JSON answer (`null` when the answer is not JSON).
pub async fn call_with(
    gateway: &Gateway,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(String, String)],
) -> (u16, Value) {
    call_at(&gateway.base, method, path, body, headers).await
}

/// [`call_with`] on the gateway at `base` (`http://127.0.0.1:<port>`; e.g. a
/// [`process::Process`]).
pub async fn call_at(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(String, String)],
) -> (u16, Value) {
    omnigate::tls::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// [`call_with`] with the API key.
pub async fn api_call(
    gateway: &Gateway,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call_with(gateway, method, path, body, &api_auth()).await
}

/// A fake site backend answering every reply with `200 {"id":"r"}`, and a receiver
/// checking deliveries signed with [`SUBSCRIPTION_SECRET`]: what most end-to-end tests
/// start before their gateway.
pub async fn site_and_receiver() -> (FakeApi, Receiver) {
    let site = FakeApi::start(|_| json_answer(200, serde_json::json!({"id": "r"})))
        .await
        .expect("fake site");
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    (site, receiver)
}

/// A request recorded by a fake server.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a fake server answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

type Responder = Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Mutex<Responder>>,
}

/// A local HTTP server that records requests and answers with a closure: a fake
/// provider API, a fake site backend, or an echo server.
pub struct FakeApi {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `127.0.0.1:<port>`, for `allowed_hosts`.
    pub authority: String,
    state: FakeState,
}

impl FakeApi {
    /// Start with `responder`.
    pub async fn start(
        responder: impl Fn(&Recorded) -> Answer + Send + Sync + 'static,
    ) -> Result<Self> {
        let state = FakeState {
            requests: Arc::default(),
            responder: Arc::new(Mutex::new(Arc::new(responder))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let authority = listener.local_addr()?.to_string();
        let app = Router::new()
            .route("/", any(fake_handler))
            .route("/{*path}", any(fake_handler))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{authority}"),
            authority,
            state,
        })
    }

    /// Replace the responder.
    pub fn respond(&self, responder: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) {
        *self.state.responder.lock() = Arc::new(responder);
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// The first request, waiting for it (within [`WAIT`]); panics naming `what` (the
    /// provider) when none came.
    pub async fn first_request(&self, what: &str) -> Recorded {
        eventually(|| {
            let requests = self.requests();
            requests
                .into_iter()
                .next()
                .ok_or_else(|| format!("nothing sent to {what}"))
        })
        .await
    }
}

async fn fake_handler(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let recorded = Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let responder = state.responder.lock().clone();
    let (status, answer_headers, body) = responder(&recorded);
    state.requests.lock().push(recorded);
    let mut out = HeaderMap::new();
    for (name, value) in answer_headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            out.append(name, value);
        }
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        out,
        body,
    )
}

/// A JSON answer.
pub fn json_answer(status: u16, body: Value) -> Answer {
    (
        status,
        vec![("content-type".into(), "application/json".into())],
        body.to_string().into_bytes(),
    )
}

/// A downstream tool: verifies every delivery's Standard Webhooks signature (refusing
/// bad ones with 401) and keeps the verified CloudEvents.
pub struct Receiver {
    /// URL to subscribe.
    pub url: String,
    api: FakeApi,
    secret: String,
}

impl Receiver {
    /// Start, verifying with `secret` (`whsec_…`).
    pub async fn start(secret: &str) -> Result<Self> {
        let key = secret.to_owned();
        let api = FakeApi::start(move |request| {
            if verify_delivery(&key, request) {
                (204, Vec::new(), Vec::new())
            } else {
                (401, Vec::new(), b"bad signature".to_vec())
            }
        })
        .await?;
        Ok(Self {
            url: format!("{}/hook", api.url),
            api,
            secret: secret.to_owned(),
        })
    }

    /// Verified deliveries (the CloudEvents), in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.api
            .requests()
            .iter()
            .filter(|request| verify_delivery(&self.secret, request))
            .map(Recorded::json)
            .collect()
    }

    /// Raw requests, verified or not.
    pub fn requests(&self) -> Vec<Recorded> {
        self.api.requests()
    }

    /// Wait until at least `count` verified events arrived, or fail after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.len() >= count {
                return Ok(events);
            }
            if Instant::now() > deadline {
                bail!(
                    "expected {count} deliveries within {timeout:?}, got {}: {events:#?}",
                    events.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `data` (normalized events) of verified deliveries of `event_type`.
    pub fn of_type(&self, event_type: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["type"] == format!("dev.omnigate.{event_type}"))
            .map(|event| event["data"].clone())
            .collect()
    }

    /// Wait until `count` deliveries of `event_type` arrived (within [`WAIT`]); their
    /// `data`. Panics naming what arrived instead.
    pub async fn wait_of_type(&self, event_type: &str, count: usize) -> Vec<Value> {
        eventually(|| {
            let found = self.of_type(event_type);
            if found.len() >= count {
                Ok(found)
            } else {
                Err(format!("expected {count} {event_type}, got {found:#?}"))
            }
        })
        .await
    }
}

/// Whether `request` carries a valid Standard Webhooks signature for `secret`.
pub fn verify_delivery(secret: &str, request: &Recorded) -> bool {
    let (Some(id), Some(timestamp), Some(signature)) = (
        request.header("webhook-id"),
        request
            .header("webhook-timestamp")
            .and_then(|t| t.parse::<i64>().ok()),
        request.header("webhook-signature"),
    ) else {
        return false;
    };
    let content =
        omnigate_signature::standard_webhooks::signed_content(id, timestamp, &request.body);
    omnigate_signature::verify(
        omnigate_signature::Scheme::StandardWebhooks,
        secret.as_bytes(),
        &content,
        signature,
    ) == Ok(true)
}

/// Standard Webhooks headers for `body`, signed now with `secret` under `id`.
pub fn standard_webhooks_headers(
    secret: &str,
    id: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>> {
    let timestamp = jiff::Timestamp::now().as_second();
    standard_webhooks_headers_at(secret, id, body, timestamp)
}

/// Like [`standard_webhooks_headers`] with an explicit timestamp (seconds).
pub fn standard_webhooks_headers_at(
    secret: &str,
    id: &str,
    body: &[u8],
    timestamp: i64,
) -> Result<Vec<(String, String)>> {
    let content = omnigate_signature::standard_webhooks::signed_content(id, timestamp, body);
    let signature = omnigate_signature::sign(
        omnigate_signature::Scheme::StandardWebhooks,
        secret.as_bytes(),
        &content,
    )
    .context("sign")?;
    Ok(vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signature),
    ])
}

/// Meta's `X-Hub-Signature-256` value for `body`.
pub fn hub_signature(app_secret: &str, body: &[u8]) -> String {
    omnigate_signature::sign(
        omnigate_signature::Scheme::HmacSha256Prefixed,
        app_secret.as_bytes(),
        body,
    )
    .unwrap_or_default()
}

/// POST `body` to `url` with `headers`; returns status and body text.
pub async fn post(
    url: &str,
    headers: &[(String, String)],
    body: impl Into<Vec<u8>>,
) -> Result<(u16, String)> {
    omnigate::tls::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let mut request = client.post(url).body(body.into());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// GET `url`; returns status and body text.
pub async fn get(url: &str, headers: &[(String, String)]) -> Result<(u16, String)> {
    omnigate::tls::ensure_crypto_provider();
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}
