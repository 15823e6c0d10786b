//! Deterministic crash points, for the tests of what survives a crash between two writes.
//!
//! In debug builds, `OMNIGATE_FAULT=<point>:<n>` makes the process abort (like a
//! `kill -9`: no unwinding, no flushing) the `n`-th time it passes [`point`] `<point>`. In
//! release builds [`point`] is empty: no operator setting can crash a production gateway.

/// A place where a crash is interesting: `after_commit` (the store committed a change;
/// its events are not in the outbox yet), `after_publish` (the events are in the outbox;
/// the owed record is not settled yet), `after_outcome_commit` (an outcome change
/// committed), `after_link` (a link token's merge committed; the message that redeemed
/// it is not recorded yet), `after_shared_merge` (Redis: a merge on a verified handle
/// another contact owns committed; the event that reported the handle is not recorded
/// yet), `mid_erase` (an erasure between its writes: its owed record
/// and the contacts merged into the erased one are written and gone; the erased one is
/// not).
#[inline]
pub fn point(name: &'static str) {
    #[cfg(debug_assertions)]
    armed::pass(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The armed point and the pass that aborts, from `OMNIGATE_FAULT`.
    fn armed() -> Option<&'static (String, u64)> {
        static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("OMNIGATE_FAULT").ok()?;
                let (name, nth) = spec.split_once(':')?;
                Some((name.to_owned(), nth.parse().ok()?))
            })
            .as_ref()
    }

    pub(super) fn pass(name: &'static str) {
        static PASSES: AtomicU64 = AtomicU64::new(0);
        let Some((armed, nth)) = armed() else { return };
        if armed == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            eprintln!("OMNIGATE_FAULT: aborting at {name} (pass {nth})");
            std::process::abort();
        }
    }
}
