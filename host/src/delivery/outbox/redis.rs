//! The outbox on Redis Streams (standalone or Cluster): one stream per partition, one
//! consumer group per subscription, a lease key per (subscription, partition).
//!
//! Keys (every key of a partition shares its hash tag, so a Cluster keeps them together
//! and spreads partitions over the nodes):
//! - `omnigate:outbox:{outbox-<p>}`: the stream; fields `event` (the event JSON),
//!   for a replay `target` (the only subscription to deliver it), and when spans are
//!   exported `trace` (the publishing span's W3C `traceparent`; absent in older entries);
//! - `omnigate:outbox:{outbox-<p>}:lease:<subscription>`: the owning instance's id, with
//!   a TTL renewed by the owner;
//! - `omnigate:outbox:partitions`: the partition count every instance must agree on;
//! - `omnigate:dead-letters`: a stream of dead letters (field `letter`: JSON with the
//!   event), capped at [`DEAD_LETTER_LIMIT`] with `MAXLEN ~`; the entry id is the dead
//!   letter's id;
//! - `omnigate:subscriptions` (hash: id → JSON) for API-created subscriptions and
//!   `omnigate:subscriptions:disabled` (hash: id → reason).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingReply, StreamReadReply,
};
use redis::{Cmd, FromRedisValue, Script, Value};

use super::{
    Append, DEAD_LETTER_LIMIT, Outbox, OutboxError, Record, Stored, StoredDeadLetter,
    StoredSubscription,
};
use crate::event::Event;

/// How long one Redis command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The dead-letter stream.
const DEAD_LETTERS: &str = "omnigate:dead-letters";

/// API subscriptions.
const SUBSCRIPTIONS: &str = "omnigate:subscriptions";

/// Disabled subscriptions.
const DISABLED: &str = "omnigate:subscriptions:disabled";

/// Entries taken per `XAUTOCLAIM` call.
const CLAIM_BATCH: usize = 256;

/// A connection to a standalone server or a Cluster. Both reconnect by themselves.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects to `url`, any form `[store] url` accepts: `redis+cluster://` /
    /// `rediss+cluster://`, or several comma-separated seeds, mean a Cluster. `rediss://`
    /// trusts `tls` (`[store] tls_ca_file`, or the webpki roots).
    pub(crate) async fn connect(
        url: &str,
        tls: &crate::redis_url::RedisTls,
    ) -> Result<Self, OutboxError> {
        let seeds =
            crate::redis_url::seeds(url).map_err(|error| OutboxError::Config(error.to_string()))?;
        if seeds.len() > 1 || url.contains("+cluster://") {
            let client = tls
                .cluster_builder(seeds.iter().map(String::as_str))
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(|error| OutboxError::Config(error.to_string()))?;
            Ok(Connection::Cluster(
                client.get_async_connection().await.map_err(unavailable)?,
            ))
        } else {
            let client = tls.client(&seeds[0]).map_err(|error| {
                OutboxError::Config(format!("`{}`: {error}", crate::redis_url::redact(url)))
            })?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            Ok(Connection::Single(
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(unavailable)?,
            ))
        }
    }

    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, OutboxError> {
        let value = match self.clone() {
            Connection::Single(mut connection) => connection.req_packed_command(cmd).await,
            Connection::Cluster(mut connection) => connection.req_packed_command(cmd).await,
        }
        .map_err(unavailable)?;
        T::from_redis_value(value).map_err(|error| unavailable(error.into()))
    }

    /// Runs `pipeline` (commands of one slot) in one round trip, answers ignored.
    async fn pipeline(&self, pipeline: &redis::Pipeline) -> Result<(), OutboxError> {
        match self.clone() {
            Connection::Single(mut connection) => pipeline.query_async::<()>(&mut connection).await,
            Connection::Cluster(mut connection) => {
                pipeline.query_async::<()>(&mut connection).await
            }
        }
        .map_err(unavailable)
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<T, OutboxError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg);
        }
        let result = match self.clone() {
            Connection::Single(mut connection) => invocation.invoke_async(&mut connection).await,
            Connection::Cluster(mut connection) => invocation.invoke_async(&mut connection).await,
        };
        result.map_err(unavailable)
    }
}

fn unavailable(error: redis::RedisError) -> OutboxError {
    OutboxError::Unavailable(error.to_string())
}

/// Takes the lease if free, renews it if ours: `1`, else `0`.
const LEASE: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Deletes the lease only if ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Empties a partition's stream that no consumer group reads: `-1` when a group exists
/// (trim by the groups instead), else how many entries went. Atomic, so no group is
/// created between the check and the trim; a group created later starts at `$` and could
/// never read them.
const TRIM_UNREAD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if #redis.call('XINFO', 'GROUPS', KEYS[1]) > 0 then
  return -1
end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
";

/// The Redis Streams outbox.
pub(crate) struct RedisOutbox {
    connection: Connection,
    partitions: u32,
    /// This process's consumer name and lease value: unique per start, so a restarted
    /// instance claims its own previous pending entries like anyone else's.
    instance: String,
    lease: Script,
    release: Script,
    trim_unread: Script,
}

impl RedisOutbox {
    /// Connects to `url` (several comma-separated seeds: a Cluster) and checks that the
    /// partition count matches the one other instances use.
    pub(crate) async fn connect(
        url: &str,
        partitions: u32,
        tls: &crate::redis_url::RedisTls,
    ) -> Result<Self, OutboxError> {
        let connection = Connection::connect(url, tls).await?;
        let outbox = Self {
            connection,
            partitions: partitions.max(1),
            instance: format!("gw-{}", ulid::Ulid::generate()),
            lease: Script::new(LEASE),
            release: Script::new(RELEASE),
            trim_unread: Script::new(TRIM_UNREAD),
        };
        outbox.check_partitions().await?;
        tracing::info!(instance = %outbox.instance, partitions = outbox.partitions, "delivery outbox on Redis Streams");
        Ok(outbox)
    }

    /// Every instance must hash conversations to the same partitions.
    async fn check_partitions(&self) -> Result<(), OutboxError> {
        let key = "omnigate:outbox:partitions";
        let _: Value = self
            .connection
            .query(redis::cmd("SET").arg(key).arg(self.partitions).arg("NX"))
            .await?;
        let stored: Option<u32> = self.connection.query(redis::cmd("GET").arg(key)).await?;
        match stored {
            Some(stored) if stored != self.partitions => Err(OutboxError::Config(format!(
                "[delivery] partitions = {} but the outbox in Redis was created with {stored}; \
                 every instance must use the same value",
                self.partitions
            ))),
            _ => Ok(()),
        }
    }

    fn stream(partition: u32) -> String {
        format!("omnigate:outbox:{{outbox-{partition}}}")
    }

    fn lease_key(partition: u32, subscription: &str) -> String {
        format!("{}:lease:{subscription}", Self::stream(partition))
    }

    /// Entries of `stream` after `last_delivered` (when Redis cannot tell the lag).
    async fn count_after(&self, stream: &str, last_delivered: &str) -> Result<u64, OutboxError> {
        let entries: Vec<Value> = self
            .connection
            .query(
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(format!("({last_delivered}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(100_000),
            )
            .await?;
        Ok(entries.len() as u64)
    }

    /// Trims what every group of the partition is done with; empties it when no group
    /// reads it (no subscription: nothing will ever be delivered from it).
    async fn trim_partition(&self, partition: u32) -> Result<(), OutboxError> {
        let stream = Self::stream(partition);
        let unread: i64 = self
            .connection
            .script(&self.trim_unread, &stream, &[])
            .await?;
        if unread >= 0 {
            return Ok(());
        }
        let groups: StreamInfoGroupsReply = self
            .connection
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&stream))
            .await?;
        let mut oldest: Option<(u64, u64)> = None;
        for group in &groups.groups {
            let keep_from = if group.pending > 0 {
                let pending: StreamPendingReply = self
                    .connection
                    .query(redis::cmd("XPENDING").arg(&stream).arg(&group.name))
                    .await?;
                match pending {
                    StreamPendingReply::Data(data) => data.start_id,
                    _ => group.last_delivered_id.clone(),
                }
            } else {
                group.last_delivered_id.clone()
            };
            let Some(id) = parse_id(&keep_from) else {
                return Ok(());
            };
            oldest = Some(oldest.map_or(id, |current| current.min(id)));
        }
        if let Some((ms, seq)) = oldest {
            let _: Value = self
                .connection
                .query(
                    redis::cmd("XTRIM")
                        .arg(&stream)
                        .arg("MINID")
                        .arg("~")
                        .arg(format!("{ms}-{seq}")),
                )
                .await?;
        }
        Ok(())
    }
}

/// A stream id as (milliseconds, sequence).
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn decode(entry: StreamId) -> Stored {
    let record = decode_record(&entry);
    Stored {
        id: entry.id,
        record,
    }
}

fn decode_record(entry: &StreamId) -> Result<Record, String> {
    let text = |field: &str| -> Option<String> {
        entry
            .map
            .get(field)
            .and_then(|value| String::from_redis_value(value.clone()).ok())
    };
    let json = text("event").ok_or("the outbox entry has no `event` field")?;
    let event: Event = serde_json::from_str(&json)
        .map_err(|error| format!("the outbox entry's event cannot be decoded: {error}"))?;
    Ok(Record {
        event: Arc::new(event),
        target: text("target"),
        trace: text("trace"),
    })
}

fn busy_group(error: &OutboxError) -> bool {
    matches!(error, OutboxError::Unavailable(message) if message.contains("BUSYGROUP"))
}

/// The consumer group (or its stream) is gone: Redis restarted without its data, or
/// was flushed.
fn missing_group(error: &OutboxError) -> bool {
    matches!(error, OutboxError::Unavailable(message) if message.contains("NOGROUP"))
}

impl RedisOutbox {
    /// Create a subscription's group again after Redis lost it, from the start of the
    /// stream: whatever was appended since the loss is delivered (at least once), and
    /// nothing older survives in the stream to be redelivered.
    async fn recreate_group(&self, partition: u32, subscription: &str) -> Result<(), OutboxError> {
        tracing::warn!(
            subscription,
            partition,
            "outbox consumer group missing (Redis restarted without its data?); recreated from the stream's start"
        );
        let created: Result<Value, OutboxError> = self
            .connection
            .query(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(Self::stream(partition))
                    .arg(subscription)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match created {
            Err(error) if !busy_group(&error) => Err(error),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Outbox for RedisOutbox {
    fn durable(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn register(&self, subscription: &str) -> Result<(), OutboxError> {
        for partition in 0..self.partitions {
            let created: Result<Value, OutboxError> = self
                .connection
                .query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(Self::stream(partition))
                        .arg(subscription)
                        .arg("$")
                        .arg("MKSTREAM"),
                )
                .await;
            match created {
                Ok(_) => {}
                // Another instance (or an earlier start) created it: keep its position.
                Err(error) if busy_group(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn unregister(&self, subscription: &str) -> Result<(), OutboxError> {
        for partition in 0..self.partitions {
            let _: Value = self
                .connection
                .query(
                    redis::cmd("XGROUP")
                        .arg("DESTROY")
                        .arg(Self::stream(partition))
                        .arg(subscription),
                )
                .await?;
        }
        Ok(())
    }

    async fn append(&self, entries: Vec<Append>) -> Result<(), OutboxError> {
        // One pipeline per partition, in order (a partition's keys share a slot); the
        // partitions at once: one round trip for the events of a message.
        let mut pipelines: BTreeMap<u32, redis::Pipeline> = BTreeMap::new();
        for append in &entries {
            let json = serde_json::to_string(&*append.record.event).map_err(|error| {
                OutboxError::Unavailable(format!("cannot encode the event: {error}"))
            })?;
            let xadd = pipelines
                .entry(append.partition)
                .or_insert_with(redis::pipe)
                .cmd("XADD")
                .arg(Self::stream(append.partition))
                .arg("*")
                .arg("event")
                .arg(json);
            if let Some(target) = &append.record.target {
                xadd.arg("target").arg(target);
            }
            if let Some(trace) = &append.record.trace {
                xadd.arg("trace").arg(trace);
            }
            xadd.ignore();
        }
        try_join_all(
            pipelines
                .values()
                .map(|pipeline| self.connection.pipeline(pipeline)),
        )
        .await?;
        // Stored: the reserved room is no longer needed (dropping the permits).
        drop(entries);
        Ok(())
    }

    async fn lease(
        &self,
        partition: u32,
        subscription: &str,
        ttl: Duration,
    ) -> Result<bool, OutboxError> {
        let millis = ttl.as_millis().max(1).to_string();
        let owned: i64 = self
            .connection
            .script(
                &self.lease,
                &Self::lease_key(partition, subscription),
                &[self.instance.clone(), millis],
            )
            .await?;
        Ok(owned == 1)
    }

    async fn release(&self, partition: u32, subscription: &str) -> Result<(), OutboxError> {
        let _: i64 = self
            .connection
            .script(
                &self.release,
                &Self::lease_key(partition, subscription),
                std::slice::from_ref(&self.instance),
            )
            .await?;
        Ok(())
    }

    async fn claim_pending(
        &self,
        partition: u32,
        subscription: &str,
    ) -> Result<Vec<Stored>, OutboxError> {
        let stream = Self::stream(partition);
        let mut start = "0-0".to_owned();
        let mut claimed = Vec::new();
        loop {
            let mut autoclaim = redis::cmd("XAUTOCLAIM");
            autoclaim
                .arg(&stream)
                .arg(subscription)
                .arg(&self.instance)
                .arg(0)
                .arg(&start)
                .arg("COUNT")
                .arg(CLAIM_BATCH);
            let reply: StreamAutoClaimReply = match self.connection.query(&autoclaim).await {
                // Nothing can be pending in a group that no longer exists.
                Err(error) if missing_group(&error) => {
                    self.recreate_group(partition, subscription).await?;
                    return Ok(claimed);
                }
                other => other?,
            };
            claimed.extend(reply.claimed.into_iter().map(decode));
            if reply.next_stream_id == "0-0" || reply.next_stream_id.is_empty() {
                break;
            }
            start = reply.next_stream_id;
        }
        if !claimed.is_empty() {
            tracing::info!(subscription, partition, entries = claimed.len(), instance = %self.instance, "claimed pending outbox entries");
        }
        Ok(claimed)
    }

    async fn read_new(
        &self,
        partition: u32,
        subscription: &str,
        count: usize,
    ) -> Result<Vec<Stored>, OutboxError> {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(subscription)
            .arg(&self.instance)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(Self::stream(partition))
            .arg(">");
        let reply: Option<StreamReadReply> = match self.connection.query(&read).await {
            Err(error) if missing_group(&error) => {
                self.recreate_group(partition, subscription).await?;
                self.connection.query(&read).await?
            }
            other => other?,
        };
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(decode)
            .collect())
    }

    async fn ack(&self, partition: u32, subscription: &str, id: &str) -> Result<(), OutboxError> {
        let _: i64 = self
            .connection
            .query(
                redis::cmd("XACK")
                    .arg(Self::stream(partition))
                    .arg(subscription)
                    .arg(id),
            )
            .await?;
        Ok(())
    }

    async fn add_dead_letter(&self, letter: &StoredDeadLetter) -> Result<String, OutboxError> {
        let json = serde_json::to_string(letter).map_err(|error| {
            OutboxError::Unavailable(format!("cannot encode the dead letter: {error}"))
        })?;
        self.connection
            .query(
                redis::cmd("XADD")
                    .arg(DEAD_LETTERS)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEAD_LETTER_LIMIT)
                    .arg("*")
                    .arg("letter")
                    .arg(json),
            )
            .await
    }

    async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, StoredDeadLetter)>, OutboxError> {
        let reply: redis::streams::StreamRangeReply = self
            .connection
            .query(
                redis::cmd("XREVRANGE")
                    .arg(DEAD_LETTERS)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit.max(1)),
            )
            .await?;
        let mut letters: Vec<(String, StoredDeadLetter)> = reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let json = entry
                    .map
                    .get("letter")
                    .and_then(|value| String::from_redis_value(value.clone()).ok())?;
                match serde_json::from_str(&json) {
                    Ok(letter) => Some((entry.id, letter)),
                    Err(error) => {
                        tracing::warn!(id = %entry.id, %error, "undecodable dead letter skipped");
                        None
                    }
                }
            })
            .collect();
        letters.reverse();
        Ok(letters)
    }

    async fn remove_dead_letter(&self, id: &str) -> Result<bool, OutboxError> {
        if parse_id(id).is_none() {
            return Ok(false);
        }
        let removed: i64 = self
            .connection
            .query(redis::cmd("XDEL").arg(DEAD_LETTERS).arg(id))
            .await?;
        Ok(removed > 0)
    }

    async fn subscriptions(&self) -> Result<Vec<StoredSubscription>, OutboxError> {
        let all: Vec<String> = self
            .connection
            .query(redis::cmd("HVALS").arg(SUBSCRIPTIONS))
            .await?;
        Ok(all
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(subscription) => Some(subscription),
                Err(error) => {
                    tracing::warn!(%error, "undecodable stored subscription skipped");
                    None
                }
            })
            .collect())
    }

    async fn put_subscription(&self, subscription: &StoredSubscription) -> Result<(), OutboxError> {
        let json = serde_json::to_string(subscription).map_err(|error| {
            OutboxError::Unavailable(format!("cannot encode the subscription: {error}"))
        })?;
        let _: i64 = self
            .connection
            .query(
                redis::cmd("HSET")
                    .arg(SUBSCRIPTIONS)
                    .arg(&subscription.id)
                    .arg(json),
            )
            .await?;
        Ok(())
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, OutboxError> {
        let removed: i64 = self
            .connection
            .query(redis::cmd("HDEL").arg(SUBSCRIPTIONS).arg(id))
            .await?;
        Ok(removed > 0)
    }

    async fn disabled(&self) -> Result<std::collections::BTreeMap<String, String>, OutboxError> {
        self.connection
            .query(redis::cmd("HGETALL").arg(DISABLED))
            .await
    }

    async fn set_disabled(&self, id: &str, reason: Option<&str>) -> Result<(), OutboxError> {
        let cmd = match reason {
            Some(reason) => {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(DISABLED).arg(id).arg(reason);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(DISABLED).arg(id);
                cmd
            }
        };
        let _: i64 = self.connection.query(&cmd).await?;
        Ok(())
    }

    async fn trim(&self, partition: u32) -> Result<(), OutboxError> {
        self.trim_partition(partition).await
    }

    async fn backlog(&self, subscription: &str) -> Result<u64, OutboxError> {
        let mut total = 0u64;
        for partition in 0..self.partitions {
            let stream = Self::stream(partition);
            let groups: StreamInfoGroupsReply = self
                .connection
                .query(redis::cmd("XINFO").arg("GROUPS").arg(&stream))
                .await?;
            for group in groups.groups.iter().filter(|g| g.name == subscription) {
                let lag = match group.lag {
                    Some(lag) => lag as u64,
                    None => self.count_after(&stream, &group.last_delivered_id).await?,
                };
                total += lag + group.pending as u64;
            }
        }
        Ok(total)
    }
}
