//! A rate limit per key (a sender, a client address) that forgets keys back at their full
//! allowance now and then, so its map holds recent keys only.

use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, QuantaClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// `quota` for each key.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, HashMapStateStore<K>, QuantaClock>,
    /// Checks since the last prune.
    checks: AtomicU32,
    /// Checks between two prunes.
    prune_every: u32,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `quota` per key; keys at their full allowance are forgotten every `prune_every`
    /// checks.
    pub fn new(quota: Quota, prune_every: u32) -> Self {
        Self {
            limiter: RateLimiter::hashmap(quota),
            checks: AtomicU32::new(0),
            prune_every: prune_every.max(1),
        }
    }

    /// Take one unit of `key`'s allowance; `Err(wait)` when none is left, with how long
    /// until the next one.
    pub fn admit(&self, key: &K) -> Result<(), Duration> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.prune_every)
        {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(QuantaClock::default().now()))
    }
}
