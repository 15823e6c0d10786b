//! Pub/sub between the instances sharing a Redis: a subscription to one channel that
//! follows the seed nodes (a Redis Cluster forwards pub/sub to every node, so any one
//! seed will do) and subscribes again when its connection drops. Delivery is best
//! effort: a message published while an instance is resubscribing is missed, which the
//! listener hears as a resubscription.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::redis_url::{self, RedisTls};

/// How long to wait between attempts to (re)subscribe.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How long one subscribe attempt may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a feed hears.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Subscribed (again): messages may have been missed before this.
    Subscribed,
    /// A message's payload.
    Message(String),
}

/// Send what `channel` carries, as `into` makes it, to `to` until `to` is closed.
/// `lost` is logged as a warning (with the error) when a subscription drops, or when the
/// first attempt fails; the retries of an outage after that are logged at debug level,
/// not once a second.
pub async fn follow<T: Send>(
    seeds: Vec<String>,
    tls: RedisTls,
    channel: &'static str,
    lost: &'static str,
    to: mpsc::Sender<T>,
    into: fn(Heard) -> T,
) {
    let mut warned = false;
    for seed in seeds.iter().cycle() {
        match listen(seed, &tls, channel, &to, into).await {
            Ok(()) => return,
            Err(Lost { subscribed, why }) => {
                let redis = redis_url::redact(seed);
                if subscribed || !warned {
                    tracing::warn!(%redis, error = %why, "{lost}");
                } else {
                    tracing::debug!(%redis, error = %why, "{lost}");
                }
                warned = true;
            }
        }
        if to.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// Why a subscription ended.
struct Lost {
    /// It had subscribed (a connection that was up dropped).
    subscribed: bool,
    why: String,
}

/// One subscription: `Ok` when `to` is closed, `Err` when the connection is.
async fn listen<T: Send>(
    seed: &str,
    tls: &RedisTls,
    channel: &'static str,
    to: &mpsc::Sender<T>,
    into: fn(Heard) -> T,
) -> Result<(), Lost> {
    let unsubscribed = |why: String| Lost {
        subscribed: false,
        why,
    };
    let client = tls
        .client(seed)
        .map_err(|error| unsubscribed(error.to_string()))?;
    let subscribe = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe)
        .await
        .map_err(|_| unsubscribed("subscribe timed out".to_owned()))?
        .map_err(|error| unsubscribed(error.to_string()))?;
    if to.send(into(Heard::Subscribed)).await.is_err() {
        return Ok(());
    }
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        let payload = message.get_payload::<String>().unwrap_or_default();
        if to.send(into(Heard::Message(payload))).await.is_err() {
            return Ok(());
        }
    }
    Err(Lost {
        subscribed: true,
        why: "connection closed".to_owned(),
    })
}
