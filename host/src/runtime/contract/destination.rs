//! The destination world of contract 0.2.0 (`wit/0.2.0/destination.wit`): plugins that
//! take events out to an ad platform, CRM or analytics tool. They import the same `host`
//! as channel plugins (bound to 0.2.0's own types) plus `hashing`, and export
//! `destination-plugin`.
#![allow(missing_docs)]

use wasmtime::component::{HasSelf, Linker};

use super::super::state::WasmState;

wasmtime::component::bindgen!({
    path: "../wit/0.2.0",
    world: "omnigate:channel/destination@0.2.0",
    imports: { default: async },
    exports: { default: async },
    with: {
        "omnigate:channel/types@0.2.0": super::v0_2::types,
        "omnigate:channel/host@0.2.0": super::v0_2::host_api,
    },
});

/// The world destination plugins implement.
pub const WORLD: &str = "omnigate:channel/destination@0.2.0";

/// The interface a destination plugin exports.
pub const EXPORTS: &str = "omnigate:channel/destination-plugin@0.2.0";

pub use omnigate::channel::destination_types as types;
pub use omnigate::channel::hashing;

/// Define the imports only destinations have (`hashing`, `destination-types`); `host`
/// and `types` are 0.2.0's, defined by its module.
pub(crate) fn add_to_linker(linker: &mut Linker<WasmState>) -> wasmtime::Result<()> {
    hashing::add_to_linker::<WasmState, HasSelf<WasmState>>(linker, |state| state)?;
    types::add_to_linker::<WasmState, HasSelf<WasmState>>(linker, |state| state)
}
