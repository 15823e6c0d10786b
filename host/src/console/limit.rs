//! The sign-in rate limit: each client address may try `[console] sign_in_attempts`
//! keys per `sign_in_window` (a burst of that many, given back evenly over the window),
//! so console keys cannot be guessed at speed. Every attempt counts, right or wrong:
//! the limit is checked before the key is, so an address over it learns nothing.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::keyed_limit::KeyedLimiter;

/// Checks between two prunes of the addresses back at their full allowance.
const PRUNE_EVERY: u32 = 1024;

/// Sign-in attempts per client address.
pub struct SignInLimiter(KeyedLimiter<IpAddr>);

impl SignInLimiter {
    /// `attempts` per `window` for each address (`attempts` is at least 1 and `window`
    /// at least a second: `[console]` is checked at start).
    pub fn new(attempts: u32, window: Duration) -> Self {
        let attempts = NonZeroU32::new(attempts).unwrap_or(NonZeroU32::MIN);
        let period = (window / attempts.get()).max(Duration::from_millis(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(attempts);
        Self(KeyedLimiter::new(quota, PRUNE_EVERY))
    }

    /// Take one attempt of `address`'s allowance; `Err(wait)` when none is left, with how
    /// long until the next one.
    pub fn admit(&self, address: IpAddr) -> Result<(), Duration> {
        self.0.admit(&address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_attempts_then_waits_and_others_are_not_affected() {
        let limiter = SignInLimiter::new(3, Duration::from_secs(3600));
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        let two: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.admit(one).is_ok());
        }
        let wait = limiter.admit(one).expect_err("over the limit");
        assert!(wait > Duration::from_secs(60), "{wait:?}");
        assert!(
            limiter.admit(two).is_ok(),
            "another address has its own allowance"
        );
    }
}
