//! The Redis Streams sink: a subscription kind that appends each event to a named stream
//! (`XADD … MAXLEN ~ n`) for downstream consumers reading with consumer groups.
//!
//! Entry fields mirror the CloudEvents attributes: `specversion`, `id`, `type`, `source`,
//! `subject`, `time`, `datacontenttype`, `data` (the normalized event JSON, tailored like
//! an HTTP delivery) — the event in CloudEvents binary mode, its `ce-*` headers as
//! fields. Delivery is at-least-once: after a crash an event may be appended twice;
//! consumers deduplicate on `id`.

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::envelope::CloudEventsMode;
use super::outbox::Connection;
use super::outcome::Outcome;
use super::sink::{Attempt, Sink};
use crate::redis_url::RedisTls;

/// Where a sink subscription appends.
pub(crate) struct StreamSink {
    /// `redis://…` (comma-separated seeds: a Cluster).
    pub(crate) url: String,
    /// Stream key.
    pub(crate) stream: String,
    /// Approximate cap on the stream's length.
    pub(crate) maxlen: usize,
    /// Connected on first use (validation is synchronous; the connection reconnects).
    connection: OnceCell<Connection>,
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSink")
            .field("stream", &self.stream)
            .field("maxlen", &self.maxlen)
            .finish()
    }
}

impl StreamSink {
    pub(crate) fn new(url: String, stream: String, maxlen: usize) -> Self {
        Self {
            url,
            stream,
            maxlen,
            connection: OnceCell::new(),
        }
    }
}

#[async_trait]
impl Sink for StreamSink {
    fn mode(&self) -> CloudEventsMode {
        CloudEventsMode::Binary
    }

    /// Appends the event once: its `ce-*` attributes as fields, then `datacontenttype`
    /// and `data`.
    async fn attempt(&self, attempt: Attempt<'_>) -> Outcome {
        let connection = match self
            .connection
            // A sink is the downstream tool's Redis, not the store's: public CAs.
            .get_or_try_init(|| async {
                let public_roots = RedisTls::default();
                Connection::connect(&self.url, &public_roots).await
            })
            .await
        {
            Ok(connection) => connection,
            Err(error) => return retry(error.to_string()),
        };
        let prepared = attempt.prepared;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.maxlen)
            .arg("*");
        for (name, value) in &prepared.headers {
            cmd.arg(name.trim_start_matches("ce-")).arg(value);
        }
        cmd.arg("datacontenttype")
            .arg(prepared.content_type)
            .arg("data")
            .arg(&prepared.body[..]);
        match connection.query::<redis::Value>(&cmd).await {
            Ok(_) => Outcome::Delivered,
            Err(error) => retry(error.to_string()),
        }
    }
}

fn retry(error: String) -> Outcome {
    Outcome::Retry {
        class: "redis".into(),
        error,
        retry_after: None,
    }
}
