//! The shared plugin registry on Redis (keys in docs/redis-keys.md).
//!
//! Records, activations and the revision share the hash tag `{plugins}`, so the
//! activation script touches one slot, also in a cluster. Wasm bytes are one string per
//! digest in its own slot (they are large; spreading them over a cluster is fine, they
//! are written once and never change). Announcements go over pub/sub, which a Redis
//! Cluster forwards to every node, so the feed listens on any one seed node.

use async_trait::async_trait;
use redis::Script;
use tokio::sync::mpsc;

use super::conn::{self, Conn};
use super::feed::{self, Heard};
use crate::redis_url::{self, RedisTls};
use crate::store::StoreError;
use crate::store::plugins::{
    Activation, Activations, Change, PluginRecord, PluginRegistry, conflict,
};

/// Hash: digest → version record (JSON).
const VERSIONS: &str = "og:{plugins}:versions";
/// Hash: channel id → activation (JSON).
const ACTIVE: &str = "og:{plugins}:active";
/// Counter bumped by every activation.
const REVISION: &str = "og:{plugins}:revision";
/// Pub/sub channel announcing each new revision.
pub const ANNOUNCE: &str = "og:plugins:changed";

/// Wasm string of one version.
fn wasm_key(digest: &str) -> String {
    format!("og:wasm:{{{digest}}}")
}

/// The registry on Redis.
pub struct RedisPlugins {
    conn: Conn,
    display: String,
    seeds: Vec<String>,
    tls: RedisTls,
    activate_script: Script,
}

impl RedisPlugins {
    /// Connect (lazily) to the Redis named by `url` (any form `[store] url` accepts).
    /// `rediss://` connections (the announcement subscriptions too) trust `tls`.
    pub fn connect(url: &str, tls: &RedisTls) -> Result<Self, StoreError> {
        crate::tls::ensure_crypto_provider();
        let target = conn::open(url, tls)?;
        Ok(Self {
            conn: target.conn,
            display: target.display,
            seeds: redis_url::seeds(url)?,
            tls: tls.clone(),
            activate_script: Script::new(include_str!("activate.lua")),
        })
    }

    fn unavailable(&self, error: redis::RedisError) -> StoreError {
        StoreError::Unavailable(format!("redis {}: {error}", self.display))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))
    }
}

#[async_trait]
impl PluginRegistry for RedisPlugins {
    async fn put_version(&self, record: &PluginRecord, wasm: &[u8]) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(encode_failed)?;
        // Bytes first: a record is only ever listed once its wasm can be fetched.
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(wasm_key(&record.digest))
                    .arg(wasm)
                    .arg("NX"),
            )
            .await?;
        let _: () = self
            .query(
                redis::cmd("HSETNX")
                    .arg(VERSIONS)
                    .arg(&record.digest)
                    .arg(json),
            )
            .await?;
        Ok(())
    }

    async fn versions(&self) -> Result<Vec<PluginRecord>, StoreError> {
        let all: Vec<String> = self.query(redis::cmd("HVALS").arg(VERSIONS)).await?;
        all.iter()
            .map(|json| parse(json, "plugin version"))
            .collect()
    }

    async fn wasm(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(wasm_key(digest))).await
    }

    async fn activations(&self) -> Result<Activations, StoreError> {
        // The revision is read first: a change landing between the two reads shows up as
        // a newer record under an older revision, which the next reconcile reads again.
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(REVISION).cmd("HGETALL").arg(ACTIVE);
        let mut conn = self.conn.clone();
        let (revision, channels): (Option<u64>, Vec<(String, String)>) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))?;
        let channels = channels
            .into_iter()
            .map(|(channel, json)| Ok((channel, parse(&json, "plugin activation")?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Activations {
            revision: revision.unwrap_or(0),
            channels,
        })
    }

    async fn activate(
        &self,
        channel: &str,
        expected: Option<&str>,
        activation: &Activation,
    ) -> Result<u64, StoreError> {
        let json = serde_json::to_string(activation).map_err(encode_failed)?;
        let mut conn = self.conn.clone();
        let (outcome, value): (String, String) = self
            .activate_script
            .key(ACTIVE)
            .key(REVISION)
            .arg(channel)
            .arg(expected.unwrap_or_default())
            .arg(json)
            .arg(ANNOUNCE)
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.unavailable(error))?;
        match outcome.as_str() {
            "ok" => value
                .parse()
                .map_err(|_| corrupt("registry revision", &value)),
            _ => Err(conflict(
                channel,
                expected,
                Some(value.as_str()).filter(|digest| !digest.is_empty()),
            )),
        }
    }

    fn changes(&self) -> mpsc::Receiver<Change> {
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(feed::follow(
            self.seeds.clone(),
            self.tls.clone(),
            ANNOUNCE,
            "plugin registry announcements lost; resubscribing (the periodic reconcile covers the gap)",
            sender,
            |heard| match heard {
                Heard::Subscribed => Change::Resubscribed,
                Heard::Message(revision) => Change::Announced(revision.parse().unwrap_or_default()),
            },
        ));
        receiver
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|error| corrupt(what, &error.to_string()))
}

fn corrupt(what: &str, detail: &str) -> StoreError {
    StoreError::Unavailable(format!("unreadable {what} in redis: {detail}"))
}

fn encode_failed(error: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot encode a plugin record: {error}"))
}
