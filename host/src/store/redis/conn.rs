//! Connecting to Redis from a `[store] url`: one server (`redis://`, `rediss://`) through a
//! reconnecting [`ConnectionManager`], or a Redis Cluster (`redis+cluster://` /
//! `rediss+cluster://` with comma-separated seed hosts, or several comma-separated
//! `redis://` URLs) through the cluster client, which follows slot moves and reconnects.
//!
//! Both connect lazily: the gateway starts while Redis is down and `/readyz` says so.
//!
//! `rediss://` verifies the server's certificate against the webpki roots (public CAs),
//! or, with [`RedisTls`] from `[store] tls_ca_file`, against the CAs of that file only
//! (self-hosted Redis with a private CA). Verification is never switched off.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::redis_url::{RedisTls, redact, seeds};
use crate::store::StoreError;

/// How long one command may wait for its answer before the request fails (503) instead
/// of hanging while Redis is unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to one server or to a cluster; cheap to clone (both multiplex).
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// A parsed store URL: where to connect, and a loggable form without the password.
pub struct Target {
    /// The connection.
    pub conn: Conn,
    /// `redis://host:port` or `redis+cluster://h1:p1,h2:p2`, password removed.
    pub display: String,
}

/// Connect (lazily) to the store named by `url`, trusting `tls` for `rediss://`.
pub fn open(url: &str, tls: &RedisTls) -> Result<Target, StoreError> {
    let invalid = |why: String| StoreError::InvalidUrl(why);
    let seeds = seeds(url)?;
    let display = seeds
        .iter()
        .map(|seed| redact(seed))
        .collect::<Vec<_>>()
        .join(",");
    if seeds.len() == 1 && !url.contains("+cluster://") {
        let client = tls
            .client(seeds[0].as_str())
            .map_err(|error| invalid(format!("{}: {error}", redact(&seeds[0]))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // A request waits for at most a few quick connection attempts, then fails
            // (503 to the provider); the next request starts a new attempt, so Redis
            // coming back is noticed without a restart.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| invalid(format!("{display}: {error}")))?;
        return Ok(Target {
            conn: Conn::Single(manager),
            display,
        });
    }
    let client = tls
        .cluster_builder(seeds.iter().map(String::as_str))
        .build()
        .map_err(|error| invalid(format!("{display}: {error}")))?;
    let config = ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    let connection = client.get_pending_async_connection_with_config(config);
    Ok(Target {
        conn: Conn::Cluster(connection),
        display: format!("cluster[{display}]"),
    })
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Arguments and bytes a [`ScriptCall`] has room for before it grows.
const CALL_ARGS: usize = 32;
const CALL_BYTES: usize = 2048;

/// A script call written straight into one `EVALSHA` command: digest, key count, keys,
/// then arguments. `redis::ScriptInvocation` first copies every key and argument into a
/// `Vec<u8>` of its own and then into the command; on the hot path that was two
/// allocations per argument (an ingest has twenty).
pub struct ScriptCall<'s> {
    script: &'s redis::Script,
    cmd: Cmd,
}

impl<'s> ScriptCall<'s> {
    /// A call of `script` on `keys`, each item one key (all of them: the key count comes
    /// first).
    pub fn new<K: redis::ToRedisArgs>(
        script: &'s redis::Script,
        keys: impl IntoIterator<Item = K, IntoIter: ExactSizeIterator>,
    ) -> Self {
        let keys = keys.into_iter();
        // Room for the store's largest calls (the ingest: three keys, twenty arguments,
        // a message and a referral as JSON), so building one does not grow it step by step.
        let mut cmd = Cmd::with_capacity(CALL_ARGS, CALL_BYTES);
        cmd.arg("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        Self { script, cmd }
    }

    /// Add an argument (`ARGV[n]`).
    pub fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Run it on `conn`; a server that does not know the script yet (restarted, another
    /// cluster node) gets it loaded, then the same command again.
    pub async fn invoke<T: redis::FromRedisValue>(&self, conn: &mut Conn) -> redis::RedisResult<T> {
        match self.cmd.query_async(conn).await {
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.script.load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            answer => answer,
        }
    }
}
