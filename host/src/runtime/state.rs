//! The data of one plugin instance's `Store`.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::env::ChannelEnv;
use super::imports::guest_output::GuestOutput;

/// Store data: minimal WASI, the memory limiter and the channel environment.
pub struct WasmState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// The channel this instance serves.
    pub env: Arc<ChannelEnv>,
    /// `id@version` of the plugin, for logs.
    pub plugin: Arc<str>,
    /// Epoch ticks the current call has spent in the guest.
    pub ticks_used: u64,
    /// The current fiberless call was interrupted at the end of its slice (not at its
    /// CPU deadline): it is to be made again on the async path.
    pub slice_spent: bool,
}

impl WasmState {
    /// Fresh state for an instance of `plugin` serving `env`.
    pub fn new(env: Arc<ChannelEnv>, plugin: Arc<str>) -> Self {
        let output = GuestOutput::new(plugin.clone(), env.channel_id.clone());
        // WASI only as far as Rust std needs it: no preopened dirs, no env, no args, no
        // sockets, no name lookups. Stdout/stderr become log lines.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limiter = Limiter::new(env.limits.memory_bytes);
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            env,
            plugin,
            ticks_used: 0,
            slice_spent: false,
        }
    }

    /// The limiter, for `Store::limiter`.
    pub fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }

    /// Whether a memory growth was refused during the current call.
    pub fn memory_denied(&self) -> bool {
        self.limiter.denied
    }

    /// Forget the previous call's CPU ticks and memory refusals (a reused instance).
    pub fn start_call(&mut self) {
        self.ticks_used = 0;
        self.slice_spent = false;
        self.limiter.denied = false;
    }
}

impl WasiView for WasmState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `StoreLimits` plus a record of refusals, so a trap caused by a refused allocation is
/// reported as a memory limit hit rather than a generic trap.
pub struct Limiter {
    inner: StoreLimits,
    denied: bool,
}

impl Limiter {
    fn new(memory_bytes: usize) -> Self {
        Self {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(16)
                .tables(16)
                .memories(4)
                .build(),
            denied: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
