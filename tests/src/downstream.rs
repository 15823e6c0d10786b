//! A downstream tool for the delivery tests: a real HTTP receiver on loopback that can be
//! down (nothing listening on its port), fail in chosen ways, or accept; it verifies each
//! delivery with the stock `standardwebhooks` crate and records what it saw and answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::Value;

use crate::redis::free_port;

/// What the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 204.
    Accept,
    /// This status (with `Retry-After` if given).
    Fail(u16, Option<String>),
    /// Never answers (the gateway's attempt times out).
    Stall,
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `webhook-id`.
    pub webhook_id: String,
    /// CloudEvents `subject` (the conversation id).
    pub subject: String,
    /// CloudEvents `type` without the `dev.omnigate.` prefix.
    pub kind: String,
    /// `data.external_id` (the provider's message id), if any.
    pub external_id: Option<String>,
    /// Which of the receiver's secrets verified the signature (by index).
    pub verified_by: Vec<usize>,
    /// What the receiver answered.
    pub status: u16,
    /// The CloudEvent.
    pub body: Value,
    /// The request headers.
    pub headers: HeaderMap,
}

struct Inner {
    mode: Mutex<Mode>,
    secrets: Vec<String>,
    seen: Mutex<Vec<Seen>>,
}

/// The receiver. Its URL is fixed at creation; [`Downstream::up`] starts listening.
pub struct Downstream {
    port: u16,
    inner: Arc<Inner>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Downstream {
    /// A receiver on a free port, not listening yet, verifying with `secrets`.
    pub fn new(secrets: &[&str]) -> Result<Self> {
        Ok(Self {
            port: free_port()?,
            inner: Arc::new(Inner {
                mode: Mutex::new(Mode::Accept),
                secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
                seen: Mutex::default(),
            }),
            server: Mutex::default(),
        })
    }

    /// A receiver already listening, answering with `mode`.
    pub async fn start(secrets: &[&str], mode: Mode) -> Result<Self> {
        let downstream = Self::new(secrets)?;
        downstream.set(mode);
        downstream.up().await?;
        Ok(downstream)
    }

    /// The URL to subscribe.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Change what it answers from now on.
    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock() = mode;
    }

    /// Start listening on its port.
    pub async fn up(&self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await?;
        let app = Router::new()
            .fallback(receive)
            .with_state(self.inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock() = Some(task);
        Ok(())
    }

    /// Everything received, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().clone()
    }

    /// Deliveries answered with 2xx.
    pub fn accepted(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| (200..300).contains(&seen.status))
            .collect()
    }

    /// Per conversation, the `webhook-id`s of accepted deliveries in arrival order, with
    /// repeats (a redelivery after a crash) removed after their first acceptance; and how
    /// many repeats there were.
    pub fn accepted_by_conversation(&self) -> (BTreeMap<String, Vec<Seen>>, usize) {
        let mut by_conversation: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        let mut first: HashMap<String, ()> = HashMap::new();
        let mut duplicates = 0;
        for seen in self.accepted() {
            if first.insert(seen.webhook_id.clone(), ()).is_some() {
                duplicates += 1;
                continue;
            }
            by_conversation
                .entry(seen.subject.clone())
                .or_default()
                .push(seen);
        }
        (by_conversation, duplicates)
    }

    /// Waits until `done(accepted deliveries)` holds; fails after `timeout` with `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Seen]) -> bool,
    ) -> Result<Vec<Seen>> {
        let deadline = Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if done(&accepted) {
                return Ok(accepted);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}: {} accepted of {} received",
                    accepted.len(),
                    self.seen().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        if let Some(task) = self.server.lock().take() {
            task.abort();
        }
    }
}

/// Verifies with each secret through the stock `standardwebhooks` crate.
fn verified_by(secrets: &[String], headers: &HeaderMap, body: &[u8]) -> Vec<usize> {
    secrets
        .iter()
        .enumerate()
        .filter(|(_, secret)| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|webhook| webhook.verify(body, headers))
                .is_ok()
        })
        .map(|(index, _)| index)
        .collect()
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let verified = verified_by(&inner.secrets, &headers, &body);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mode = inner.mode.lock().clone();
    // An unverifiable delivery is refused like a real receiver would (401: permanent).
    let (status, retry_after, stall) = match (&mode, verified.is_empty()) {
        (_, true) => (401, None, false),
        (Mode::Accept, _) => (204, None, false),
        (Mode::Fail(status, retry_after), _) => (*status, retry_after.clone(), false),
        (Mode::Stall, _) => (0, None, true),
    };
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    inner.seen.lock().push(Seen {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        subject: text(&json["subject"]),
        kind: text(&json["type"])
            .trim_start_matches("dev.omnigate.")
            .to_owned(),
        external_id: json["data"]["external_id"].as_str().map(str::to_owned),
        verified_by: verified,
        status,
        body: json,
        headers,
    });
    if stall {
        std::future::pending::<()>().await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match retry_after {
        Some(value) => (status, [("retry-after", value)]).into_response(),
        None => status.into_response(),
    }
}
