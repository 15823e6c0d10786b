//! Errors of loading and calling plugins.

use std::time::Duration;

/// Why a plugin could not be loaded. Messages name the exact reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for the \
         wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// wasmtime could not compile or validate it.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component does not import the omnigate host interface.
    #[error(
        "not an omnigate channel plugin: it does not implement the {expected} world \
         (exports describe, handle-webhook, send); it {found}"
    )]
    WrongWorld {
        /// The world the host expects.
        expected: &'static str,
        /// What the component has instead.
        found: String,
    },
    /// The component targets a contract version this host does not implement.
    #[error(
        "plugin built for contract `{found}`; this host implements omnigate:channel versions {supported}"
    )]
    UnsupportedVersion {
        /// The interface version found.
        found: String,
        /// The versions this host implements.
        supported: String,
    },
    /// The component imports something the host does not offer.
    #[error("the plugin imports `{import}`, which this host does not offer: {advice}")]
    Import {
        /// The import's name.
        import: String,
        /// What to use instead.
        advice: &'static str,
    },
    /// Imports or exports do not match the contract.
    #[error("the component does not fit the omnigate:channel world: {0}")]
    Contract(String),
    /// `describe()` trapped or returned nonsense.
    #[error("describe() failed: {0}")]
    Describe(String),
}

/// Why a plugin call failed. The host keeps serving; the instance is discarded.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin used up its CPU time budget.
    #[error("plugin {plugin} exceeded its CPU deadline of {deadline:?}")]
    Deadline {
        /// Plugin id and version.
        plugin: String,
        /// The budget.
        deadline: Duration,
    },
    /// The call took longer than the wall-clock limit (including fetches).
    #[error("plugin {plugin} did not return within {timeout:?}")]
    Timeout {
        /// Plugin id and version.
        plugin: String,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin hit its memory limit.
    #[error("plugin {plugin} exceeded its memory limit of {limit_bytes} bytes")]
    Memory {
        /// Plugin id and version.
        plugin: String,
        /// The limit.
        limit_bytes: usize,
    },
    /// The plugin trapped (panic, unreachable, out of bounds…).
    #[error("plugin {plugin} trapped: {detail}")]
    Trap {
        /// Plugin id and version.
        plugin: String,
        /// wasmtime's description, with the backtrace's first line.
        detail: String,
    },
    /// Every instance slot or the whole plugin memory budget is in use
    /// (`[plugins] max_instances`, `max_memory_bytes`) and none came free in time.
    #[error("plugin {plugin}: no instance available, the plugin budget is in use; retry later")]
    Busy {
        /// Plugin id and version.
        plugin: String,
    },
    /// The instance could not be created.
    #[error("plugin {plugin} could not be instantiated: {detail}")]
    Instantiate {
        /// Plugin id and version.
        plugin: String,
        /// wasmtime's description.
        detail: String,
    },
}

impl CallError {
    /// The message for whoever called the webhook: like `Display` but without
    /// wasmtime's trap or instantiation details (backtraces, offsets), which go to the
    /// log only.
    pub fn public_message(&self) -> String {
        match self {
            CallError::Trap { plugin, .. } => format!("plugin {plugin} trapped"),
            CallError::Instantiate { plugin, .. } => {
                format!("plugin {plugin} could not be instantiated")
            }
            other => other.to_string(),
        }
    }

    /// A short stable label, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Deadline { .. } => "deadline",
            CallError::Timeout { .. } => "timeout",
            CallError::Memory { .. } => "memory",
            CallError::Trap { .. } => "trap",
            CallError::Instantiate { .. } => "instantiate",
            CallError::Busy { .. } => "busy",
        }
    }
}
