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
use super::contract::{self, Exports, WebhookFunc};
use super::engine::EPOCH_TICK;
use super::env::{ChannelEnv, Limits};
use super::error::CallError;
use super::fiberless::{FIBERLESS_SLICE_TICKS, NeedsAsync};
use super::lent::WebhookRequest;
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
    /// `handle-webhook` typed for a lent request (`None` for a destination plugin).
    webhook: Option<WebhookFunc>,
    /// Made from the fiberless pre-instantiation: called with plain `call`, never
    /// `call_async` (and the reverse for the others).
    fiberless: bool,
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

    /// Call `handle-webhook` with an owned request (fixtures, tests): lends it to
    /// [`Self::handle_webhook_lent`].
    pub async fn handle_webhook(
        &self,
        request: &HttpRequest,
    ) -> Result<Result<WebhookOutcome, WebhookError>, CallError> {
        self.handle_webhook_lent(&request.lend()).await
    }

    /// Call `handle-webhook`: without a fiber while the plugin allows it (see
    /// [`super::fiberless`]), else, or when that call cannot finish, on the async path.
    /// One duration is recorded per call, whichever path served it.
    pub async fn handle_webhook_lent(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<Result<WebhookOutcome, WebhookError>, CallError> {
        if let Some(native) = &self.native {
            // In place, on this task: no instance, budget or timeout to apply.
            let started = Instant::now();
            let outcome = native.handle_webhook(request);
            self.metrics.handle_webhook(started.elapsed());
            return Ok(outcome);
        }
        let fiberless = self.plugin.fiberless_webhooks().is_some();
        let mut warm = self.checkout(fiberless).await?;
        let started = Instant::now();
        if warm.fiberless {
            let spent_ticks = match self.call_fiberless(&mut warm, request) {
                Ok(outcome) => {
                    self.metrics.handle_webhook(started.elapsed());
                    return self.finish(warm, Ok(outcome));
                }
                Err(spent_ticks) => spent_ticks,
            };
            // Its call was cut short: the instance goes (and its budget share with it).
            drop(warm);
            warm = self.checkout(false).await?;
            warm.store.data_mut().ticks_used = spent_ticks;
        }
        let call = async {
            match &warm.webhook {
                Some(func) => contract::webhook_call(func)
                    .call_async(&mut warm.store, (request,))
                    .await
                    .map(|(outcome,)| outcome),
                None => Err(not_a_channel()),
            }
        };
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        self.metrics.handle_webhook(started.elapsed());
        self.finish(warm, outcome)
    }

    /// `handle-webhook` with plain `call` on a fiberless instance; `Err(ticks spent)`
    /// when it is to be made again on the async path.
    fn call_fiberless(
        &self,
        warm: &mut Warm,
        request: &WebhookRequest<'_>,
    ) -> Result<wasmtime::Result<Result<WebhookOutcome, WebhookError>>, u64> {
        let outcome = match &warm.webhook {
            Some(func) => contract::webhook_call(func)
                .call(&mut warm.store, (request,))
                .map(|(outcome,)| outcome),
            None => Err(not_a_channel()),
        };
        let Err(error) = &outcome else {
            return Ok(outcome);
        };
        let state = warm.store.data();
        if state.slice_spent {
            tracing::debug!(channel = %self.env.channel_id, plugin = &*self.plugin.label, "fiberless handle-webhook ran past its slice; made again on the async path");
            return Err(state.ticks_used);
        }
        if error.downcast_ref::<NeedsAsync>().is_some() {
            if self.plugin.send_webhooks_async() {
                tracing::info!(channel = %self.env.channel_id, plugin = &*self.plugin.label, %error, "this plugin's handle-webhook reached an import only the async path serves; its webhooks take the async path from now on");
            }
            return Err(state.ticks_used);
        }
        Ok(outcome)
    }

    /// Call `send`.
    pub async fn send(
        &self,
        message: &OutboundMessage,
    ) -> Result<Result<SendReceipt, SendError>, CallError> {
        let mut warm = self.checkout(false).await?;
        let started = Instant::now();
        let call = warm.bindings.send(&mut warm.store, message);
        let outcome = tokio::time::timeout(self.env.limits.call_timeout, call).await;
        metrics::plugin_call(&self.plugin.label, "send", started.elapsed());
        self.finish(warm, outcome)
    }

    /// Call `describe` (used when loading and checking plugins).
    pub async fn describe(&self) -> Result<super::types::PluginInfo, CallError> {
        let mut warm = self.checkout(false).await?;
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
        let mut warm = self.checkout(false).await?;
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
        let mut warm = self.checkout(false).await?;
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
        // The instance the first webhook will want.
        let fiberless = self.plugin.fiberless_webhooks().is_some();
        let warm = self.instantiate(reservation, fiberless).await?;
        self.idle.0.lock().push(warm);
        Ok(())
    }

    /// An idle instance of the kind asked for (fiberless or not), or a new one.
    async fn checkout(&self, fiberless: bool) -> Result<Warm, CallError> {
        let reused = {
            let mut idle = self.idle.0.lock();
            idle.iter()
                .rposition(|warm| warm.fiberless == fiberless)
                .map(|at| idle.remove(at))
        };
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
                self.instantiate(reservation, fiberless).await?
            }
        };
        arm(&mut warm.store);
        Ok(warm)
    }

    async fn instantiate(
        &self,
        reservation: Reservation,
        fiberless: bool,
    ) -> Result<Warm, CallError> {
        // What is made, whatever was asked: the plugin may have left the fiberless path.
        let fiberless_pre = self.plugin.fiberless_webhooks().filter(|_| fiberless);
        let fiberless = fiberless_pre.is_some();
        let state = WasmState::new(self.env.clone(), self.plugin.label.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limiter());
        let budget = budget_ticks(&self.env);
        // Each tick spent in the guest counts against the CPU budget; time in host
        // imports does not tick. Over budget, the call traps with `Trap::Interrupt`.
        // On the async path each tick yields to the executor (an endless loop never
        // holds a worker thread); a fiberless call cannot yield, so it is interrupted at
        // the end of its slice instead and made again on the async path.
        store.epoch_deadline_callback(move |mut context| {
            let state = context.data_mut();
            state.ticks_used += 1;
            if state.ticks_used >= budget {
                Ok(UpdateDeadline::Interrupt)
            } else if !fiberless {
                Ok(UpdateDeadline::Yield(1))
            } else if state.ticks_used >= FIBERLESS_SLICE_TICKS {
                state.slice_spent = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        // The deadline must be set before instantiating: it defaults to 0, which would
        // trap the instantiation itself.
        arm(&mut store);
        let instantiated = match fiberless_pre {
            Some(pre) => pre.instantiate_fiberless(&mut store),
            None => self.plugin.pre.instantiate(&mut store).await,
        };
        let bindings = instantiated.map_err(|error| self.classify(&store, error))?;
        let webhook = bindings
            .webhook_func(&store)
            .map_err(|error| self.classify(&store, error))?;
        Ok(Warm {
            store,
            bindings,
            webhook,
            fiberless,
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

/// `handle-webhook` asked of a destination plugin: a host bug, reported as a failed call.
fn not_a_channel() -> wasmtime::Error {
    wasmtime::Error::msg("handle-webhook called on a destination plugin")
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
