//! Contract 0.2.0 (`wit/0.2.0`): the plugin's functions are exported through the
//! interface `omnigate:channel/plugin@0.2.0`. Its types are the host's own: every other
//! version is adapted to them.
#![allow(missing_docs)]

use wasmtime::component::{HasSelf, Linker};

use super::super::state::WasmState;

wasmtime::component::bindgen!({
    path: "../wit/0.2.0",
    world: "omnigate:channel/channel@0.2.0",
    imports: { default: async },
    exports: { default: async },
});

/// The contract version.
pub const VERSION: &str = "0.2.0";

/// The world plugins of this version implement.
pub const WORLD: &str = "omnigate:channel/channel@0.2.0";

/// The interface a plugin of this version exports.
pub const EXPORTS: &str = "omnigate:channel/plugin@0.2.0";

pub use omnigate::channel::host as host_api;
pub use omnigate::channel::types;

/// Define this version's imports (`types`, `host`) in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<WasmState>) -> wasmtime::Result<()> {
    Channel::add_to_linker::<WasmState, HasSelf<WasmState>>(linker, |state| state)
}
