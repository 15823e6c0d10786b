//! The outcome tables on Redis (keys in docs/redis-keys.md): the record beside its
//! conversation in the contact's slot, committed by `outcome.lua` with its owed record;
//! the due and started indexes and the rollup buckets in slots of their own.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use futures::future::try_join_all;
use jiff::Timestamp;

use super::conn::ScriptCall;
use super::{CONVERSATION_HASH_FIELDS, RedisStore, keys, owed_tail, parse_conversation};
use crate::event::Handle;
use crate::store::StoreError;
use crate::store::outcomes::{OutcomeCommit, OutcomeStore, RollupWrite, StartedRef, Tracked};

const DAY_MS: i64 = 86_400_000;
/// Members read per request when paging the started index.
const STARTED_CHUNK: usize = 500;

#[async_trait]
impl OutcomeStore for RedisStore {
    async fn tracked(&self, conversation_id: &str) -> Result<Option<Tracked>, StoreError> {
        self.trip();
        let Some(contact_id) = self.owner_of(conversation_id).await? else {
            return Ok(None);
        };
        self.trip();
        let (fields, record): (Vec<Option<String>>, (Option<u64>, Option<String>)) = futures::try_join!(
            self.query(
                redis::cmd("HMGET")
                    .arg(keys::conversation(&contact_id, conversation_id))
                    .arg(&CONVERSATION_HASH_FIELDS)
                    .clone(),
            ),
            self.query(
                redis::cmd("HMGET")
                    .arg(keys::outcome(&contact_id, conversation_id))
                    .arg("v")
                    .arg("r")
                    .clone(),
            ),
        )?;
        if fields.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        let mut values = vec![conversation_id.to_owned()];
        values.extend(fields.into_iter().map(Option::unwrap_or_default));
        Ok(Some(Tracked {
            conversation: parse_conversation(&values)?,
            version: record.0.unwrap_or(0),
            record: record.1,
        }))
    }

    async fn commit(&self, commit: &OutcomeCommit<'_>) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let (owed_key, tail) = match commit.owed {
            Some((key, payload)) => (key, owed_tail(None, Some(payload))?),
            None => ("", String::new()),
        };
        let mut invocation = ScriptCall::new(
            &self.outcome_script,
            [keys::outcome(commit.contact_id, commit.conversation_id)],
        );
        invocation
            .arg(keys::contact_prefix(commit.contact_id))
            .arg(commit.version)
            .arg(commit.record)
            .arg(owed_key)
            .arg(now.as_microsecond())
            .arg(commit.conversation_id)
            .arg(tail);
        self.trip();
        // The indexes are hints beside the record (written even if the commit loses: the
        // winner's record says what is due, and the started index skips what is gone).
        let (kept, due, started, hint) = futures::join!(
            async {
                let mut conn = self.conn.clone();
                invocation
                    .invoke::<i64>(&mut conn)
                    .await
                    .map_err(|error| self.unavailable(error))
            },
            async {
                let Some(due) = commit.due else {
                    return Ok(());
                };
                self.query::<()>(
                    redis::cmd("ZADD")
                        .arg(keys::due_shard(keys::shard_of(commit.conversation_id)))
                        .arg(due.as_millisecond())
                        .arg(commit.conversation_id)
                        .clone(),
                )
                .await
            },
            async {
                if commit.version != 0 {
                    return Ok(());
                }
                let at = commit.started_at.as_millisecond();
                self.query::<()>(
                    redis::cmd("ZADD")
                        .arg(keys::started_day(at.div_euclid(DAY_MS)))
                        .arg(at)
                        .arg(commit.conversation_id)
                        .clone(),
                )
                .await
            },
            async {
                if commit.owed.is_none() || commit.hinted {
                    return Ok(());
                }
                self.hint_change(commit.contact_id, now.as_millisecond(), true)
                    .await
            },
        );
        let kept = kept? == 1;
        if let Err(error) = due.and(started).and(hint) {
            tracing::warn!(%error, conversation = %commit.conversation_id, "an outcome index write failed: the close of the conversation still finds it, the relay finds its owed record on the contact's next change");
        }
        Ok(kept)
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        self.trip();
        let shards: Vec<String> = (0..keys::OPEN_SHARDS).map(keys::due_shard).collect();
        let shards = try_join_all(
            shards
                .iter()
                .map(|shard| self.members_until(shard, now.as_millisecond(), limit)),
        )
        .await?;
        Ok(shards.into_iter().flatten().take(limit).collect())
    }

    async fn undue(&self, conversation_id: &str) -> Result<(), StoreError> {
        self.trip();
        self.query(
            redis::cmd("ZREM")
                .arg(keys::due_shard(keys::shard_of(conversation_id)))
                .arg(conversation_id)
                .clone(),
        )
        .await
    }

    async fn add_rollups(
        &self,
        once: &[String],
        writes: &[RollupWrite<'_>],
    ) -> Result<bool, StoreError> {
        let mut by_bucket: BTreeMap<&str, Vec<&RollupWrite>> = BTreeMap::new();
        for write in writes {
            by_bucket.entry(&write.bucket).or_default().push(write);
        }
        self.trip();
        let taken = try_join_all(by_bucket.into_iter().map(|(bucket, writes)| async move {
            let prefix = keys::rollup_prefix(bucket);
            let mut invocation = ScriptCall::new(&self.rollup_script, [format!("{prefix}once")]);
            invocation.arg(once.len());
            for key in once {
                invocation.arg(key);
            }
            invocation.arg(&prefix);
            for write in writes {
                invocation
                    .arg(write.table.as_ref())
                    .arg(write.field.as_ref())
                    .arg(write.n);
            }
            let mut conn = self.conn.clone();
            invocation
                .invoke::<i64>(&mut conn)
                .await
                .map_err(|error| self.unavailable(error))
        }))
        .await?;
        Ok(taken.iter().all(|&taken| taken == 1))
    }

    async fn rollups(
        &self,
        table: &str,
        buckets: &[String],
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        self.trip();
        try_join_all(buckets.iter().map(|bucket| {
            self.query::<HashMap<String, i64>>(
                redis::cmd("HGETALL")
                    .arg(format!("{}{table}", keys::rollup_prefix(bucket)))
                    .clone(),
            )
        }))
        .await
    }

    async fn keep_conversion(&self, id: &str, body: &str) -> Result<Option<String>, StoreError> {
        self.trip();
        self.query(
            redis::cmd("SET")
                .arg(keys::conversion(id))
                .arg(body)
                .arg("NX")
                .arg("GET")
                .clone(),
        )
        .await
    }

    async fn conversion(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.trip();
        self.query(redis::cmd("GET").arg(keys::conversion(id)).clone())
            .await
    }

    async fn keep_receipt(
        &self,
        id: &str,
        destination: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        self.trip();
        self.query(
            redis::cmd("HSET")
                .arg(keys::receipts(id))
                .arg(destination)
                .arg(body)
                .clone(),
        )
        .await
        .map(|_: i64| ())
    }

    async fn receipts(&self, id: &str) -> Result<Vec<String>, StoreError> {
        self.trip();
        let by_destination: std::collections::BTreeMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(keys::receipts(id)).clone())
            .await?;
        Ok(by_destination.into_values().collect())
    }

    async fn started(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<&StartedRef>,
        limit: usize,
    ) -> Result<Vec<StartedRef>, StoreError> {
        let from_ms = after.map_or(from_ms, |after| after.at_ms.max(from_ms));
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return Ok(out);
        }
        for day in from_ms.div_euclid(DAY_MS)..=(to_ms - 1).div_euclid(DAY_MS) {
            let low = from_ms.max(day * DAY_MS);
            let high = (to_ms - 1).min(day * DAY_MS + DAY_MS - 1);
            let mut offset = 0;
            loop {
                self.trip();
                let page: Vec<(String, i64)> = self
                    .query(
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(keys::started_day(day))
                            .arg(low)
                            .arg(high)
                            .arg("WITHSCORES")
                            .arg("LIMIT")
                            .arg(offset)
                            .arg(STARTED_CHUNK)
                            .clone(),
                    )
                    .await?;
                let full = page.len() == STARTED_CHUNK;
                for (conversation_id, at_ms) in page {
                    let started = StartedRef {
                        at_ms,
                        conversation_id,
                    };
                    if after.is_some_and(|after| &started <= after) {
                        continue;
                    }
                    out.push(started);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
                if !full {
                    break;
                }
                offset += STARTED_CHUNK;
            }
        }
        Ok(out)
    }

    async fn owe_once(
        &self,
        contact_id: &str,
        key: &str,
        payload: &str,
    ) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let record = format!(
            "{}\u{1f}\u{1f}0\u{1f}\u{1f}{}",
            now.as_microsecond(),
            owed_tail(None, Some(payload))?
        );
        self.trip();
        futures::try_join!(
            self.query::<bool>(
                redis::cmd("HSETNX")
                    .arg(keys::owed(contact_id))
                    .arg(key)
                    .arg(record)
                    .clone(),
            ),
            self.hint_change(contact_id, now.as_millisecond(), true),
        )
        .map(|(kept, ())| kept)
    }

    async fn contact_by_handle(&self, handle: &Handle) -> Result<Option<String>, StoreError> {
        self.trip();
        self.query(redis::cmd("GET").arg(keys::handle(handle)).clone())
            .await
            .map(|owner: Option<String>| owner.filter(|owner| !owner.is_empty()))
    }
}
