//! Host-side bindings of the plugin contract (`wit/0.1.0`).
//!
//! One module per frozen contract version; today there is only 0.1.0. A later version
//! gets its own module and an adapter, so plugins built against 0.1.0 keep loading.
//! (The generated items carry the WIT doc comments where wasmtime emits them.)
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "omnigate:channel/channel@0.1.0",
    imports: { default: async },
    exports: { default: async },
});

/// The contract version these bindings implement.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The world plugins of this version implement.
pub const WORLD: &str = "omnigate:channel/channel@0.1.0";

/// The import interface every omnigate plugin of this version imports.
pub const HOST_INTERFACE: &str = "omnigate:channel/host@0.1.0";

pub use omnigate::channel::host as host_api;
pub use omnigate::channel::types;
