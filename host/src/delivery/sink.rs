//! The Redis Streams sink: a subscription kind that appends each event to a named stream
//! (`XADD … MAXLEN ~ n`) for downstream consumers reading with consumer groups.
//!
//! Entry fields mirror the CloudEvents attributes: `specversion`, `id`, `type`, `source`,
//! `subject`, `time`, `datacontenttype`, `data` (the normalized event JSON, tailored like
//! an HTTP delivery). Delivery is at-least-once: after a crash an event may be appended
//! twice; consumers deduplicate on `id`.

use tokio::sync::OnceCell;

use super::outbox::Connection;
use super::outcome::Outcome;
use crate::event::Event;
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

    /// Appends the event (`data` already tailored and serialized) once.
    pub(crate) async fn append(&self, event: &Event, data: &str) -> Outcome {
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
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.maxlen)
            .arg("*")
            .arg("specversion")
            .arg("1.0")
            .arg("id")
            .arg(&event.id)
            .arg("type")
            .arg(format!("dev.omnigate.{}", event.kind.as_str()))
            .arg("source")
            .arg(format!("/channels/{}", event.channel.id))
            .arg("subject")
            .arg(&event.conversation.id)
            .arg("time")
            .arg(event.occurred_at.to_string())
            .arg("datacontenttype")
            .arg("application/json")
            .arg("data")
            .arg(data);
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
