//! The process-wide budget of plugin instances: how many may be alive at once (in a call
//! or kept warm) and how much linear memory they may reserve together. Each instance
//! reserves its channel's `memory_bytes` (the most it can ever use, the sandbox enforces
//! it), so the plugins together never grow past `[plugins] max_memory_bytes`, whatever
//! the callers send in parallel. When the budget is spent, warm idle instances (of every
//! channel) are dropped first; a call still without room waits `instance_wait`, then
//! fails with [`super::CallError::Busy`] (a `503` with `Retry-After`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const MIB: usize = 1 << 20;

/// `[plugins]` settings of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Live instances at most (in a call or warm).
    pub max_instances: usize,
    /// Linear memory all live instances may reserve together, in bytes.
    pub max_memory_bytes: usize,
    /// How long a call waits for room before it is refused.
    pub wait: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 4 << 30,
            wait: Duration::from_secs(1),
        }
    }
}

/// Something holding warm instances that can let them go.
pub(crate) trait Reclaim: Send + Sync {
    /// Drops every warm idle instance (their reservations return to the budget).
    fn reclaim(&self);
}

/// The shared budget; see the module documentation.
pub struct InstanceBudget {
    instances: Arc<Semaphore>,
    memory_mib: Arc<Semaphore>,
    max_mib: usize,
    wait: Duration,
    warm: Mutex<Vec<Weak<dyn Reclaim>>>,
}

impl std::fmt::Debug for InstanceBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceBudget")
            .field("instances_free", &self.instances.available_permits())
            .field("memory_mib_free", &self.memory_mib.available_permits())
            .finish()
    }
}

/// Room for one instance; returned to the budget when dropped with the instance.
#[derive(Debug)]
pub(crate) struct Reservation {
    _instance: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

/// The budget has no room and none was freed within `instance_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted;

impl InstanceBudget {
    /// A budget with `settings` (caps below 1 are raised to 1).
    pub fn new(settings: &BudgetSettings) -> Self {
        let max_mib = (settings.max_memory_bytes / MIB).max(1);
        Self {
            instances: Arc::new(Semaphore::new(settings.max_instances.max(1))),
            memory_mib: Arc::new(Semaphore::new(max_mib)),
            max_mib,
            wait: settings.wait,
            warm: Mutex::default(),
        }
    }

    /// Registers a holder of warm instances, reclaimed when the budget runs out.
    pub(crate) fn register(&self, holder: Weak<dyn Reclaim>) {
        let mut warm = self.warm.lock();
        warm.retain(|holder| holder.strong_count() > 0);
        warm.push(holder);
    }

    /// Room for an instance of up to `memory_bytes` (rounded up to whole MiB, and capped
    /// at the whole budget so a single large channel can still run alone).
    pub(crate) async fn reserve(&self, memory_bytes: usize) -> Result<Reservation, Exhausted> {
        let mib = memory_bytes.div_ceil(MIB).clamp(1, self.max_mib) as u32;
        if let Some(reservation) = self.try_reserve_mib(mib) {
            return Ok(reservation);
        }
        self.reclaim_warm();
        let acquire = async {
            let instance = self.instances.clone().acquire_owned().await.ok()?;
            let memory = self.memory_mib.clone().acquire_many_owned(mib).await.ok()?;
            Some(Reservation {
                _instance: instance,
                _memory: memory,
            })
        };
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Some(reservation)) => Ok(reservation),
            _ => Err(Exhausted),
        }
    }

    /// Room for an instance now, or `None` (for optional warm-ups).
    pub(crate) fn try_reserve(&self, memory_bytes: usize) -> Option<Reservation> {
        let mib = memory_bytes.div_ceil(MIB).clamp(1, self.max_mib) as u32;
        self.try_reserve_mib(mib)
    }

    fn try_reserve_mib(&self, mib: u32) -> Option<Reservation> {
        let instance = self.instances.clone().try_acquire_owned().ok()?;
        let memory = self.memory_mib.clone().try_acquire_many_owned(mib).ok()?;
        Some(Reservation {
            _instance: instance,
            _memory: memory,
        })
    }

    fn reclaim_warm(&self) {
        let holders: Vec<Arc<dyn Reclaim>> =
            self.warm.lock().iter().filter_map(Weak::upgrade).collect();
        for holder in holders {
            holder.reclaim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_and_instances_are_capped_and_come_back() {
        let budget = InstanceBudget::new(&BudgetSettings {
            max_instances: 3,
            max_memory_bytes: 64 * MIB,
            wait: Duration::from_millis(1),
        });
        let first = budget.reserve(32 * MIB).await.expect("room");
        let second = budget.reserve(31 * MIB + 1).await.expect("room");
        assert_eq!(budget.reserve(MIB).await.err(), Some(Exhausted), "memory");
        drop(first);
        let small: Vec<_> = [budget.try_reserve(MIB), budget.try_reserve(MIB)]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(small.len(), 2, "32 MiB came back");
        assert!(budget.try_reserve(MIB).is_none(), "3 instances at most");
        drop((second, small));
        // Larger than the whole budget: runs alone.
        let large = budget.reserve(1 << 30).await.expect("clamped");
        assert!(budget.try_reserve(MIB).is_none());
        drop(large);
    }

    struct Warm(Mutex<Option<Reservation>>);

    impl Reclaim for Warm {
        fn reclaim(&self) {
            self.0.lock().take();
        }
    }

    #[tokio::test]
    async fn warm_instances_are_dropped_before_a_call_is_refused() {
        let budget = InstanceBudget::new(&BudgetSettings {
            max_instances: 1,
            max_memory_bytes: 64 * MIB,
            wait: Duration::from_millis(1),
        });
        let warm = Arc::new(Warm(Mutex::new(budget.try_reserve(MIB))));
        let holder: Arc<dyn Reclaim> = warm.clone();
        budget.register(Arc::downgrade(&holder));
        budget
            .reserve(MIB)
            .await
            .expect("the warm one was reclaimed");
        assert!(warm.0.lock().is_none());
    }
}
