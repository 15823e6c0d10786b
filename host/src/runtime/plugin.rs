//! A loaded plugin: compiled, checked against the contract, pre-instantiated, described.

use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use super::bindings::{CONTRACT_VERSION, ChannelPre, HOST_INTERFACE, WORLD, types::PluginInfo};
use super::error::LoadError;
use super::state::WasmState;

/// The exports every plugin of this contract has.
const REQUIRED_EXPORTS: [&str; 3] = ["describe", "handle-webhook", "send"];

/// One plugin version, ready to instantiate for any number of channels.
pub struct Plugin {
    /// What the plugin said about itself.
    pub info: PluginInfo,
    /// SHA-256 of the wasm bytes, hex.
    pub digest: String,
    /// Contract version it was built against.
    pub contract: &'static str,
    /// `id@version`, for logs and errors.
    pub label: Arc<str>,
    pub(crate) pre: ChannelPre<WasmState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.label)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// What the first bytes of a file say it is.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    // Magic, then a 16-bit version and a 16-bit layer: layer 0 is a core module, 1 a component.
    let Some(header) = bytes.get(..8).filter(|header| header.starts_with(b"\0asm")) else {
        return Err(LoadError::NotWasm);
    };
    match header[6..8] {
        [1, 0] => Ok(()),
        _ => Err(LoadError::CoreModule),
    }
}

/// Check imports and exports against the contract before linking, for clear messages.
pub(crate) fn check_contract(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let ours = imports
        .iter()
        .find(|name| name.starts_with("omnigate:channel/host"));
    if let Some(found) = ours.filter(|name| name.as_str() != HOST_INTERFACE) {
        return Err(LoadError::UnsupportedVersion {
            found: found.clone(),
            supported: CONTRACT_VERSION,
        });
    }
    let has = |name: &str| exports.iter().any(|export| export == name);
    if !REQUIRED_EXPORTS.iter().any(|name| has(name)) {
        return Err(LoadError::WrongWorld {
            expected: WORLD,
            found: format!(
                "exports [{}] and imports [{}]",
                exports.join(", "),
                imports.join(", ")
            ),
        });
    }
    let missing: Vec<&str> = REQUIRED_EXPORTS
        .into_iter()
        .filter(|name| !has(name))
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::Contract(format!(
            "missing exports: {}",
            missing.join(", ")
        )));
    }
    for (name, item) in ty.exports(engine) {
        if REQUIRED_EXPORTS.contains(&name) && !matches!(item.ty, ComponentItem::ComponentFunc(_)) {
            return Err(LoadError::Contract(format!(
                "export `{name}` is not a function"
            )));
        }
    }
    Ok(())
}

/// Link `component` and pre-instantiate it (type-checks every import and export).
pub(crate) fn prepare(
    linker: &Linker<WasmState>,
    component: &Component,
) -> Result<ChannelPre<WasmState>, LoadError> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|error| LoadError::Contract(format!("{error:#}")))?;
    ChannelPre::new(instance_pre).map_err(|error| LoadError::Contract(format!("{error:#}")))
}
