//! `handle-webhook` called without a fiber: the linker its instances are made with.
//!
//! An async call (`call_async`) runs the guest on a fiber so a host import may await and
//! the epoch callback may yield; switching onto and off that stack and driving each
//! import as a future costs on every call. Most webhook handlers need neither: they
//! read the request, ask the host to check a signature, read a config value and the
//! clock — all plain computations. wasmtime 48 decides per store: a store whose
//! instances were made from a linker with only synchronous functions may be called
//! with plain `call`, on the caller's stack.
//!
//! So a channel plugin gets a second pre-instantiation, from this linker: the host
//! interfaces of every contract version defined synchronously (`verify` and `sign` read
//! the message straight out of the guest's memory, no copy), and every other import —
//! `http-fetch`, all of WASI — a stub that fails with [`NeedsAsync`]. Webhooks are
//! served by instances of it; `describe`, `send` and `deliver` stay on the async ones.
//! The channel runtime falls back to the async path when a fiberless call cannot finish:
//!
//! - it reached a stub ([`NeedsAsync`]): the call is made again on the async path and
//!   the plugin's webhooks stay there from then on;
//! - it ran for [`FIBERLESS_SLICE_TICKS`] epoch ticks: a plain call cannot yield, so it
//!   is interrupted and made again on the async path (with the ticks already spent
//!   counted against its CPU deadline), which yields every tick as before. A runaway
//!   guest thus holds a worker thread for at most this slice, not its whole deadline.
//!
//! Running a webhook handler again is safe: what it can do before the stub or the slice
//! stops it is compute, log and read the clock and config; it cannot reach the network.

use wasmtime::StoreContextMut;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, Lift, Linker, LinkerInstance, Lower, ResourceType, WasmList, WasmStr,
};

use super::contract::v0_1::omnigate::channel::host as v0_1;
use super::contract::v0_2::host_api as v0_2;
use super::imports::{self, signature};
use super::state::WasmState;

/// Epoch ticks a fiberless call may run before it is moved to the async path: with
/// [`super::EPOCH_TICK`] of 10 ms, a call blocks its thread for 10–20 ms at most.
pub const FIBERLESS_SLICE_TICKS: u64 = 2;

/// A fiberless call reached an import only the async path serves.
#[derive(Debug, thiserror::Error)]
#[error("`{import}` is not available to a fiberless call")]
pub struct NeedsAsync {
    /// `interface#function` of the import.
    pub import: String,
}

/// The resource type given to every stubbed resource import (a guest cannot get one: the
/// functions that would make it are stubs too).
struct Stub;

/// Imports the fiberless linker defines itself (the rest of each interface is stubbed).
const DEFINED: [(&str, &[&str]); 2] = [
    (
        "omnigate:channel/host@0.2.0",
        &["log", "now", "config", "verify", "sign"],
    ),
    (
        "omnigate:channel/host@0.1.0",
        &["log", "now", "config", "verify", "sign"],
    ),
];

/// The linker shared by every plugin's fiberless instances: the host interfaces of
/// contracts 0.1.0 and 0.2.0, synchronous. [`for_component`] completes it per plugin.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<WasmState>> {
    let mut linker = Linker::new(engine);
    host_v0_2(&mut linker.instance("omnigate:channel/host@0.2.0")?)?;
    host_v0_1(&mut linker.instance("omnigate:channel/host@0.1.0")?)?;
    Ok(linker)
}

/// `base` plus a [`NeedsAsync`] stub for every import of `component` it does not define.
pub(crate) fn for_component(
    base: &Linker<WasmState>,
    component: &Component,
) -> wasmtime::Result<Linker<WasmState>> {
    let mut linker = base.clone();
    let engine = component.engine().clone();
    for (name, item) in component.component_type().imports(&engine) {
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let defined = DEFINED
                    .iter()
                    .find(|(interface, _)| *interface == name)
                    .map_or(&[][..], |(_, functions)| *functions);
                let mut linker_instance = linker.instance(name)?;
                for (export, item) in instance.exports(&engine) {
                    if !defined.contains(&export) {
                        stub(&mut linker_instance, name, export, &item.ty)?;
                    }
                }
            }
            item => stub(&mut linker.root(), "", name, &item)?,
        }
    }
    Ok(linker)
}

fn stub(
    instance: &mut LinkerInstance<'_, WasmState>,
    interface: &str,
    name: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let import = format!("{interface}#{name}");
            instance.func_new(name, move |_, _, _, _| {
                Err(wasmtime::Error::new(NeedsAsync {
                    import: import.clone(),
                }))
            })
        }
        ComponentItem::Resource(_) => {
            instance.resource(name, ResourceType::host::<Stub>(), |_, _| Ok(()))
        }
        // Types need no definition; a plugin imports no modules or components (the
        // contract check refused those).
        _ => Ok(()),
    }
}

/// `now` and `config`, the same in every contract version.
fn clock_and_config(host: &mut LinkerInstance<'_, WasmState>) -> wasmtime::Result<()> {
    host.func_wrap("now", |store: StoreContextMut<'_, WasmState>, (): ()| {
        Ok((imports::now(store.data()),))
    })?;
    host.func_wrap(
        "config",
        |store: StoreContextMut<'_, WasmState>, (key,): (WasmStr,)| {
            Ok((imports::config(store.data(), &key.to_str(&store)?),))
        },
    )
}

/// Contract 0.2.0's host interface: its own types.
fn host_v0_2(host: &mut LinkerInstance<'_, WasmState>) -> wasmtime::Result<()> {
    host_interface::<v0_2::LogLevel, v0_2::SignatureScheme, v0_2::SecretError>(host)
}

/// Contract 0.1.0's host interface: its types convert to 0.2.0's, its errors from them.
fn host_v0_1(host: &mut LinkerInstance<'_, WasmState>) -> wasmtime::Result<()> {
    host_interface::<v0_1::LogLevel, v0_1::SignatureScheme, v0_1::SecretError>(host)
}

/// The host interface of a contract version whose log level `L` and signature scheme `S`
/// convert to 0.2.0's and whose secret error `E` converts from 0.2.0's: one definition
/// for every version (`verify` and `sign` read the message in place from the guest's
/// memory).
fn host_interface<L, S, E>(host: &mut LinkerInstance<'_, WasmState>) -> wasmtime::Result<()>
where
    L: Into<v0_2::LogLevel> + Lift + Send + Sync + 'static,
    S: Into<v0_2::SignatureScheme> + Lift + Send + Sync + 'static,
    E: From<v0_2::SecretError> + Lower + Send + Sync + 'static,
{
    host.func_wrap(
        "log",
        |store: StoreContextMut<'_, WasmState>, (level, message): (L, WasmStr)| {
            imports::log(store.data(), level.into(), &message.to_str(&store)?);
            Ok(())
        },
    )?;
    clock_and_config(host)?;
    host.func_wrap(
        "verify",
        |store: StoreContextMut<'_, WasmState>,
         (scheme, secret, message, signature_value): (S, WasmStr, WasmList<u8>, WasmStr)| {
            let verified = signature::verify(
                &store.data().env,
                scheme.into(),
                &secret.to_str(&store)?,
                message.as_le_slice(&store),
                &signature_value.to_str(&store)?,
            );
            Ok((verified.map_err(E::from),))
        },
    )?;
    host.func_wrap(
        "sign",
        |store: StoreContextMut<'_, WasmState>,
         (scheme, secret, message): (S, WasmStr, WasmList<u8>)| {
            let signed = signature::sign(
                &store.data().env,
                scheme.into(),
                &secret.to_str(&store)?,
                message.as_le_slice(&store),
            );
            Ok((signed.map_err(E::from),))
        },
    )
}
