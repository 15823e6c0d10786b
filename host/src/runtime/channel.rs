//! A plugin bound to one channel: its environment, limits and warm instances.
//!
//! Instances are reused: one serves up to `limits.instance_reuse` calls of the *same
//! channel* (never another channel's: their config and secrets differ), then is replaced.
//! Any trap, limit hit or timeout discards the instance. Why: a fresh instance costs
//! ~7 µs of instantiation plus ~3 µs of argument copying per call (docs/runtime.md);
//! reuse removes both, and state shared between calls of one channel is that channel's
//! own. An idle pool per channel bounds memory.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, QuantaClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::keyed_limit::KeyedLimiter;

use parking_lot::Mutex;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::budget::{InstanceBudget, Reclaim, Reservation};
use super::contract::v0_2::types::{
    HttpRequest, OutboundMessage, SendError, SendReceipt, WebhookError, WebhookOutcome,
};
use super::contract::{self, Exports};
use super::engine::EPOCH_TICK;
use super::env::{ChannelEnv, Limits};
use super::error::CallError;
use super::native::NativeChannel;
use super::plugin::Plugin;
use super::state::WasmState;
use crate::metrics::{self, ChannelMetrics};

/// Idle instances kept per channel (enough for every core to have one or two in flight).
const MAX_IDLE: usize = 16;

/// One channel's plugin, ready to be called.
pub struct ChannelRuntime {
    /// The channel's environment.
    pub env: Arc<ChannelEnv>,
    /// The plugin version serving it.
    pub plugin: Arc<Plugin>,
    /// The channel's hot-path metric handles.
    pub metrics: ChannelMetrics,
    rate: Option<RateLimiter<NotKeyed, InMemoryState, QuantaClock>>,
    senders: Option<SenderLimiter>,
    engine: Engine,
    idle: Arc<Idle>,
    /// The process-wide budget every instance reserves from.
    budget: Arc<InstanceBudget>,
    /// When set, `handle_webhook` calls this instead of the plugin (benchmarks only).
    native: Option<Arc<dyn NativeChannel>>,
}

struct Warm {
    store: Store<WasmState>,
    bindings: Exports,
    calls: u32,
    /// Its share of the process-wide budget, returned when the instance is dropped.
    _reservation: Reservation,
}

/// A channel's warm idle instances; the budget may reclaim them for another channel.
struct Idle(Mutex<Vec<Warm>>);

impl Reclaim for Idle {
    fn reclaim(&self) {
        self.0.lock().clear();
    }
}

impl ChannelRuntime {
    /// Bind `plugin` to the channel described by `env`.
    pub fn new(
        engine: Engine,
        plugin: Arc<Plugin>,
        env: Arc<ChannelEnv>,
        budget: Arc<InstanceBudget>,
    ) -> Self {
        let metrics = ChannelMetrics::new(&env.channel_id, &plugin.label);
        Self::with_metrics(engine, plugin, env, budget, metrics)
    }

    /// A binding that records no channel metrics (a plugin asked to `describe()` itself
    /// while it loads, before any channel uses it).
    pub fn unmetered(
        engine: Engine,
        plugin: Arc<Plugin>,
        env: Arc<ChannelEnv>,
        budget: Arc<InstanceBudget>,
    ) -> Self {
        Self::with_metrics(engine, plugin, env, budget, ChannelMetrics::none())
    }

    fn with_metrics(
        engine: Engine,
        plugin: Arc<Plugin>,
        env: Arc<ChannelEnv>,
        budget: Arc<InstanceBudget>,
        metrics: ChannelMetrics,
    ) -> Self {
        let idle = Arc::new(Idle(Mutex::new(Vec::new())));
        let holder: Arc<dyn Reclaim> = idle.clone();
        budget.register(Arc::downgrade(&holder));
        Self {
            metrics,
            rate: rate_limiter(&env.limits),
            senders: SenderLimiter::new(&env.limits),
            env,
            plugin,
            engine,
            idle,
            budget,
            native: None,
        }
    }

    /// The same channel with its `handle-webhook` served by `native` code linked into
    /// the process instead of the sandboxed plugin: a benchmark and embedding hook (see
    /// [`super::native`]), not a production feature. Everything else is this binding's:
    /// environment, limits, metrics, and the plugin for `describe`, `send` and
    /// `deliver`. Rate limiters start afresh. Install the result in the registry to
    /// serve it.
    pub fn linked_natively(&self, native: Arc<dyn NativeChannel>) -> Self {
        let mut linked = Self::with_metrics(
            self.engine.clone(),
            self.plugin.clone(),
            self.env.clone(),
            self.budget.clone(),
            self.metrics.clone(),
        );
        linked.native = Some(native);
        linked
    }

    /// Whether `handle_webhook` is served by natively linked code
    /// ([`Self::linked_natively`]).
    pub fn is_linked_natively(&self) -> bool {
        self.native.is_some()
    }

    /// Whether one more webhook fits the channel's rate limit; `Err(wait)` when it does
    /// not, with how long until it would.
    pub fn admit(&self) -> Result<(), Duration> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.check()
            .map_err(|not_until| not_until.wait_time_from(QuantaClock::default().now()))
    }

    /// Whether the senders of a webhook's events are within their per-sender rate (each
    /// event counts); `Err(wait)` when one is not, with how long until it would be.
    pub fn admit_senders<'a>(
        &self,
        senders: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Duration> {
        match &self.senders {
            Some(limiter) => limiter.admit(senders),
            None => Ok(()),
        }
    }

    /// Call `handle-webhook`.
    pub async fn handle_webhook(
        &self,
        request: &HttpRequest,
    ) -> Result<Result<WebhookOutcome, WebhookError>, CallError> {
        if let Some(native) = &self.native {
            // In place, on this task: no instance, budget or timeout to apply.
            let started = Instant::now();
            let outcome = native.handle_webhook(request);
            self.metrics.handle_webhook(started.elapsed());
            return Ok(outcome);
        }
        let mut warm = self.checkout().await?;
        let started = Instant::now();
        let call = warm.bindings.handle_webhook(&mut warm.store, request);
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        self.metrics.handle_webhook(started.elapsed());
        self.finish(warm, outcome)
    }

    /// Call `send`.
    pub async fn send(
        &self,
        message: &OutboundMessage,
    ) -> Result<Result<SendReceipt, SendError>, CallError> {
        let mut warm = self.checkout().await?;
        let started = Instant::now();
        let call = warm.bindings.send(&mut warm.store, message);
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        metrics::plugin_call(&self.plugin.label, "send", started.elapsed());
        self.finish(warm, outcome)
    }

    /// Call `describe` (used when loading and checking plugins).
    pub async fn describe(&self) -> Result<super::types::PluginInfo, CallError> {
        let mut warm = self.checkout().await?;
        let started = Instant::now();
        let call = warm.bindings.describe(&mut warm.store);
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        metrics::plugin_call(&self.plugin.label, "describe", started.elapsed());
        self.finish(warm, outcome)
    }

    /// Call a destination plugin's `describe`.
    pub async fn describe_destination(
        &self,
    ) -> Result<contract::destination::types::DestinationInfo, CallError> {
        let mut warm = self.checkout().await?;
        let started = Instant::now();
        let call = warm.bindings.describe_destination(&mut warm.store);
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        metrics::plugin_call(&self.plugin.label, "describe", started.elapsed());
        self.finish(warm, outcome)
    }

    /// Call a destination plugin's `deliver`.
    pub async fn deliver(
        &self,
        event: &contract::destination::types::Event,
    ) -> Result<
        Result<contract::destination::types::Receipt, contract::destination::types::DeliveryError>,
        CallError,
    > {
        let mut warm = self.checkout().await?;
        let started = Instant::now();
        let call = warm.bindings.deliver(&mut warm.store, event);
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        metrics::plugin_call(&self.plugin.label, "deliver", started.elapsed());
        self.finish(warm, outcome)
    }

    /// Create one instance ahead of the first call and keep it idle. Fails like a call
    /// would if the plugin cannot start (a trap or limit hit while instantiating); skipped
    /// when the instance budget has no room right now.
    pub async fn prewarm(&self) -> Result<(), CallError> {
        let Some(reservation) = self.budget.try_reserve(self.env.limits.memory_bytes) else {
            return Ok(());
        };
        let warm = self.instantiate(reservation).await?;
        self.idle.0.lock().push(warm);
        Ok(())
    }

    async fn checkout(&self) -> Result<Warm, CallError> {
        let reused = self.idle.0.lock().pop();
        let mut warm = match reused {
            Some(warm) => warm,
            None => {
                let reservation = self
                    .budget
                    .reserve(self.env.limits.memory_bytes)
                    .await
                    .map_err(|_| CallError::Busy {
                        plugin: self.plugin.label.to_string(),
                    })?;
                self.instantiate(reservation).await?
            }
        };
        arm(&mut warm.store);
        Ok(warm)
    }

    async fn instantiate(&self, reservation: Reservation) -> Result<Warm, CallError> {
        let state = WasmState::new(self.env.clone(), self.plugin.label.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limiter());
        let budget = budget_ticks(&self.env);
        // Each tick spent in the guest yields to the executor (an endless loop never holds
        // a worker thread) and counts against the CPU budget; time in host imports does
        // not tick. Over budget, the call traps with `Trap::Interrupt`.
        store.epoch_deadline_callback(move |mut context| {
            let state = context.data_mut();
            state.ticks_used += 1;
            if state.ticks_used >= budget {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        // The deadline must be set before instantiating: it defaults to 0, which would
        // trap the instantiation itself.
        arm(&mut store);
        let bindings = self
            .plugin
            .pre
            .instantiate(&mut store)
            .await
            .map_err(|error| self.classify(&store, error))?;
        Ok(Warm {
            store,
            bindings,
            calls: 0,
            _reservation: reservation,
        })
    }

    fn finish<R>(
        &self,
        mut warm: Warm,
        outcome: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, CallError> {
        match outcome {
            Ok(Ok(value)) => {
                warm.calls += 1;
                if warm.calls < self.env.limits.instance_reuse {
                    let mut idle = self.idle.0.lock();
                    if idle.len() < MAX_IDLE {
                        idle.push(warm);
                    }
                }
                Ok(value)
            }
            Ok(Err(error)) => {
                let error = self.classify(&warm.store, error);
                metrics::plugin_failure(&self.plugin.label, error.kind());
                tracing::warn!(channel = %self.env.channel_id, plugin = &*self.plugin.label, kind = error.kind(), %error, "plugin call failed; instance discarded");
                Err(error)
            }
            Err(_) => {
                let error = CallError::Timeout {
                    plugin: self.plugin.label.to_string(),
                    timeout: self.env.limits.call_timeout,
                };
                metrics::plugin_failure(&self.plugin.label, error.kind());
                tracing::warn!(channel = %self.env.channel_id, %error, "plugin call timed out; instance discarded");
                Err(error)
            }
        }
    }

    fn classify(&self, store: &Store<WasmState>, error: wasmtime::Error) -> CallError {
        let plugin = self.plugin.label.to_string();
        if store.data().memory_denied() {
            return CallError::Memory {
                plugin,
                limit_bytes: self.env.limits.memory_bytes,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Deadline {
                plugin,
                deadline: self.env.limits.cpu_deadline,
            },
            Some(_) => CallError::Trap {
                plugin,
                detail: first_lines(&format!("{error:?}"), 12),
            },
            None => CallError::Instantiate {
                plugin,
                detail: format!("{error:#}"),
            },
        }
    }

    /// Drop every idle instance (after a configuration change).
    pub fn clear_idle(&self) {
        self.idle.0.lock().clear();
    }
}

fn rate_limiter(limits: &Limits) -> Option<RateLimiter<NotKeyed, InMemoryState, QuantaClock>> {
    let per_second = NonZeroU32::new(limits.rate_per_second?)?;
    let burst = limits
        .rate_burst
        .and_then(NonZeroU32::new)
        .unwrap_or(per_second);
    Some(RateLimiter::direct(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

/// Per-sender rates of one channel (keyed by the provider's user id).
struct SenderLimiter(KeyedLimiter<String>);

/// Checks between two prunes: the map holds recent senders only.
const SENDER_PRUNE_EVERY: u32 = 4096;

impl SenderLimiter {
    fn new(limits: &Limits) -> Option<Self> {
        let per_minute = NonZeroU32::new(limits.sender_rate_per_minute)?;
        let burst = NonZeroU32::new(limits.sender_burst).unwrap_or(per_minute);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Some(Self(KeyedLimiter::new(quota, SENDER_PRUNE_EVERY)))
    }

    fn admit<'a>(&self, senders: impl IntoIterator<Item = &'a str>) -> Result<(), Duration> {
        senders
            .into_iter()
            .try_for_each(|sender| self.0.admit(&sender.to_owned()))
    }
}

fn budget_ticks(env: &ChannelEnv) -> u64 {
    (env.limits.cpu_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

fn arm(store: &mut Store<WasmState>) {
    store.data_mut().start_call();
    store.set_epoch_deadline(1);
}

fn first_lines(text: &str, lines: usize) -> String {
    text.lines().take(lines).collect::<Vec<_>>().join("\n")
}
