//! The one wasmtime [`Engine`] of the process and its epoch ticker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings, chosen once at start-up.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Upper bound of any one instance's linear memory (the per-channel limit is below it).
    pub max_memory_bytes: usize,
    /// Instances the pooling allocator keeps slots for (live stores at once).
    pub max_instances: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            // Channels default to 64 MiB (see `Limits`); operators may raise one up to this.
            max_memory_bytes: 256 << 20,
            max_instances: 1000,
        }
    }
}

/// Build the engine: component model, epoch interruption and the pooling allocator tuned
/// as measured with wasmtime 48 (with default pooling, two threads are slower than one
/// because of madvise + TLB shootdowns; pagemap_scan + keep-resident removes both).
pub fn build_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config.memory_init_cow(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(settings)));
    Engine::new(&config)
}

fn pooling(settings: &EngineSettings) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // Auto: on by itself where the kernel has PAGEMAP_SCAN (Linux >= 6.7), so older kernels
    // still start; keep-resident only pays off together with it.
    pool.pagemap_scan(Enabled::Auto);
    pool.linear_memory_keep_resident(1 << 20);
    pool.table_keep_resident(64 << 10);
    pool.max_memory_size(settings.max_memory_bytes);
    pool.total_component_instances(settings.max_instances);
    pool.total_core_instances(settings.max_instances * 4);
    pool.total_memories(settings.max_instances * 2);
    pool.total_tables(settings.max_instances * 4);
    pool.total_stacks(settings.max_instances);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("omnigate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
