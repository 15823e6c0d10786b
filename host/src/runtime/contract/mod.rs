//! The plugin contract versions this host implements, one module each, and the adapter
//! that lets the rest of the runtime call any of them the same way.
//!
//! The host's own types are the newest version's ([`v0_2::types`]); an older version's
//! module binds or converts its types to them. Adding a version is one module here plus
//! one arm in [`Pre`], [`Exports`] and [`detect`].

pub mod destination;
pub mod v0_1;
pub mod v0_2;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, TypedFunc};
use wasmtime::{Engine, Store};

use super::error::LoadError;
use super::lent::WebhookRequest;
use super::state::WasmState;
use v0_2::types::{
    OutboundMessage, PluginInfo, SendError, SendReceipt, WebhookError, WebhookOutcome,
};

/// `handle-webhook` of one instance, typed as taking a lent request (checked when the
/// instance is made; [`webhook_call`] gives it the caller's lifetime).
pub(crate) type WebhookFunc =
    TypedFunc<(&'static WebhookRequest<'static>,), (Result<WebhookOutcome, WebhookError>,)>;

/// [`WebhookFunc`] for a request borrowed for `'a`.
pub(crate) fn webhook_call<'a>(
    func: &WebhookFunc,
) -> TypedFunc<(&'a WebhookRequest<'a>,), (Result<WebhookOutcome, WebhookError>,)> {
    // SAFETY: `func` was type-checked against these very types (`Exports::webhook_func`);
    // only the lifetime differs, which the component model does not see: the request is
    // copied into the guest during the call and not kept.
    unsafe { TypedFunc::new_unchecked(*func.func()) }
}

/// Every contract version this host loads, oldest first.
pub const SUPPORTED: [&str; 2] = [v0_1::VERSION, v0_2::VERSION];

/// The package every version's interfaces belong to.
const PACKAGE: &str = "omnigate:channel";

/// The functions a channel plugin exports, in every version.
const FUNCTIONS: [&str; 3] = ["describe", "handle-webhook", "send"];

/// Define every version's host imports in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<WasmState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker(linker)?;
    v0_2::add_to_linker(linker)?;
    destination::add_to_linker(linker)
}

/// A compiled plugin linked against its contract version, ready to instantiate.
#[derive(Clone)]
pub(crate) enum Pre {
    /// Built against 0.1.0.
    V0_1(v0_1::ChannelPre<WasmState>),
    /// Built against 0.2.0.
    V0_2(v0_2::ChannelPre<WasmState>),
    /// A destination plugin (0.2.0).
    Destination(destination::DestinationPre<WasmState>),
}

/// One instance's exports, whatever its version.
pub(crate) enum Exports {
    /// Built against 0.1.0.
    V0_1(v0_1::Channel),
    /// Built against 0.2.0.
    V0_2(v0_2::Channel),
    /// A destination plugin (0.2.0).
    Destination(destination::Destination),
}

impl Pre {
    /// A new instance in `store`.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<WasmState>,
    ) -> wasmtime::Result<Exports> {
        Ok(match self {
            Pre::V0_1(pre) => Exports::V0_1(pre.instantiate_async(store).await?),
            Pre::V0_2(pre) => Exports::V0_2(pre.instantiate_async(store).await?),
            Pre::Destination(pre) => Exports::Destination(pre.instantiate_async(store).await?),
        })
    }

    /// A new instance in `store`, made without a fiber: `self` must come from
    /// [`prepare_fiberless`] (all its imports synchronous).
    pub(crate) fn instantiate_fiberless(
        &self,
        store: &mut Store<WasmState>,
    ) -> wasmtime::Result<Exports> {
        Ok(match self {
            Pre::V0_1(pre) => Exports::V0_1(pre.instantiate(store)?),
            Pre::V0_2(pre) => Exports::V0_2(pre.instantiate(store)?),
            Pre::Destination(pre) => Exports::Destination(pre.instantiate(store)?),
        })
    }

    /// Whether it is a destination plugin.
    pub(crate) fn is_destination(&self) -> bool {
        matches!(self, Pre::Destination(_))
    }
}

/// A channel call made on a destination plugin, or the reverse: the host binds plugins
/// by their world, so this is a host bug, reported as a failed call.
fn wrong_world(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{what} called on a plugin of another world"))
}

impl Exports {
    /// Call `describe`.
    pub(crate) async fn describe(
        &self,
        store: &mut Store<WasmState>,
    ) -> wasmtime::Result<PluginInfo> {
        match self {
            Exports::V0_1(bindings) => bindings.call_describe(store).await,
            Exports::V0_2(bindings) => {
                bindings
                    .omnigate_channel_plugin()
                    .call_describe(store)
                    .await
            }
            Exports::Destination(_) => {
                let info = self.describe_destination(store).await?;
                Ok(PluginInfo {
                    id: info.id,
                    name: info.name,
                    version: info.version,
                    kind: v0_2::types::ChannelKind::Other,
                    capabilities: Vec::new(),
                    config: info.config,
                    secrets: info.secrets,
                    outbound_hosts: info.outbound_hosts,
                })
            }
        }
    }

    /// Call a destination plugin's `describe`.
    pub(crate) async fn describe_destination(
        &self,
        store: &mut Store<WasmState>,
    ) -> wasmtime::Result<destination::types::DestinationInfo> {
        match self {
            Exports::Destination(bindings) => {
                bindings
                    .omnigate_channel_destination_plugin()
                    .call_describe(store)
                    .await
            }
            _ => Err(wrong_world("describe (destination)")),
        }
    }

    /// Call a destination plugin's `deliver`.
    pub(crate) async fn deliver(
        &self,
        store: &mut Store<WasmState>,
        event: &destination::types::Event,
    ) -> wasmtime::Result<Result<destination::types::Receipt, destination::types::DeliveryError>>
    {
        match self {
            Exports::Destination(bindings) => {
                bindings
                    .omnigate_channel_destination_plugin()
                    .call_deliver(store, event)
                    .await
            }
            _ => Err(wrong_world("deliver")),
        }
    }

    /// `handle-webhook`, typed as taking a lent request; `None` for a destination plugin.
    pub(crate) fn webhook_func(
        &self,
        store: &Store<WasmState>,
    ) -> wasmtime::Result<Option<WebhookFunc>> {
        let func = match self {
            Exports::V0_1(bindings) => *bindings.func_handle_webhook().func(),
            Exports::V0_2(bindings) => *bindings
                .omnigate_channel_plugin()
                .func_handle_webhook()
                .func(),
            Exports::Destination(_) => return Ok(None),
        };
        func.typed(store).map(Some)
    }

    /// Call `send`.
    pub(crate) async fn send(
        &self,
        store: &mut Store<WasmState>,
        message: &OutboundMessage,
    ) -> wasmtime::Result<Result<SendReceipt, SendError>> {
        match self {
            Exports::V0_1(bindings) => bindings.call_send(store, message).await,
            Exports::V0_2(bindings) => {
                bindings
                    .omnigate_channel_plugin()
                    .call_send(store, message)
                    .await
            }
            Exports::Destination(_) => Err(wrong_world("send")),
        }
    }
}

/// Which contract version `component` was built against, from its exports and imports,
/// with a message that names what is wrong when it fits none.
pub(crate) fn detect(engine: &Engine, component: &Component) -> Result<&'static str, LoadError> {
    let ty = component.component_type();
    let exports: Vec<(String, ComponentItem)> = ty
        .exports(engine)
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    check_imports(&imports)?;
    let unsupported = |found: &str| LoadError::UnsupportedVersion {
        found: found.to_owned(),
        supported: supported_list(),
    };

    // A destination plugin exports `destination-plugin`.
    let destination_interface = format!("{PACKAGE}/destination-plugin@");
    if let Some((name, _)) = exports
        .iter()
        .find(|(name, _)| name.starts_with(&destination_interface))
    {
        if name.as_str() != destination::EXPORTS {
            return Err(unsupported(name));
        }
        return Ok(v0_2::VERSION);
    }

    // 0.2.0 and later: the functions are in the exported interface `plugin`.
    let plugin_interface = format!("{PACKAGE}/plugin@");
    if let Some((name, item)) = exports
        .iter()
        .find(|(name, _)| name.starts_with(&plugin_interface))
    {
        let version = &name[plugin_interface.len()..];
        if version != v0_2::VERSION {
            return Err(unsupported(name));
        }
        let ComponentItem::ComponentInstance(instance) = item else {
            return Err(LoadError::Contract(format!(
                "export `{name}` is not an interface"
            )));
        };
        let functions: Vec<(String, ComponentItem)> = instance
            .exports(engine)
            .map(|(name, item)| (name.to_owned(), item.ty))
            .collect();
        check_functions(&functions, &format!("interface `{name}`"))?;
        return Ok(v0_2::VERSION);
    }

    // Which host interface it imports, if any, names its version.
    let host_interface = format!("{PACKAGE}/host@");
    let host_version = imports
        .iter()
        .find(|name| name.starts_with(&host_interface))
        .map(|name| (name, &name[host_interface.len()..]));
    if let Some((name, version)) = host_version
        && !SUPPORTED.contains(&version)
    {
        return Err(unsupported(name));
    }

    // 0.1.0: world-level functions.
    if exports
        .iter()
        .any(|(name, _)| FUNCTIONS.contains(&name.as_str()))
    {
        if let Some((name, version)) = host_version
            && version != v0_1::VERSION
        {
            return Err(LoadError::Contract(format!(
                "it imports `{name}` but exports its functions at the top level as \
                 0.1.0 did; contract {version} exports them through `{PACKAGE}/plugin@{version}`"
            )));
        }
        check_functions(&exports, "the component")?;
        return Ok(v0_1::VERSION);
    }

    Err(LoadError::WrongWorld {
        expected: v0_2::WORLD,
        found: format!(
            "exports [{}] and imports [{}]",
            exports
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            imports.join(", ")
        ),
    })
}

/// WASI interfaces the host offers (without capabilities: no preopened directories, no
/// sockets, no environment); what language runtimes import.
const WASI_OFFERED: [&str; 6] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Refuse, by name and with what to use instead, an import the linker cannot satisfy
/// (linking would fail later with a message about wasmtime's internals).
fn check_imports(imports: &[String]) -> Result<(), LoadError> {
    for import in imports {
        if import.starts_with("wasi:http/") {
            return Err(LoadError::Import {
                import: import.clone(),
                advice: "plugins reach the network only through the host's `http-fetch` \
                         (omnigate:channel/host); build without WASI HTTP (componentize-js: \
                         `-d http -d fetch-event`)",
            });
        }
        let offered = import.starts_with(&format!("{PACKAGE}/"))
            || WASI_OFFERED.iter().any(|prefix| import.starts_with(prefix));
        if !offered {
            return Err(LoadError::Import {
                import: import.clone(),
                advice: "a plugin may import only omnigate:channel/host and types, and the \
                         WASI interfaces language runtimes use (cli, io, clocks, random, \
                         filesystem and sockets, without any capability)",
            });
        }
    }
    Ok(())
}

/// The versions, for messages: `0.1.0, 0.2.0`.
fn supported_list() -> String {
    SUPPORTED.join(", ")
}

/// Every function of the contract is there and is a function.
fn check_functions(exports: &[(String, ComponentItem)], owner: &str) -> Result<(), LoadError> {
    let missing: Vec<&str> = FUNCTIONS
        .into_iter()
        .filter(|function| !exports.iter().any(|(name, _)| name == function))
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::Contract(format!(
            "{owner} is missing exports: {}",
            missing.join(", ")
        )));
    }
    for (name, item) in exports {
        if FUNCTIONS.contains(&name.as_str()) && !matches!(item, ComponentItem::ComponentFunc(_)) {
            return Err(LoadError::Contract(format!(
                "export `{name}` of {owner} is not a function"
            )));
        }
    }
    Ok(())
}

/// Link a channel plugin's `component`, built against `version`, with the fiberless
/// linker `base` ([`super::fiberless`]) and pre-instantiate it. Not for destination
/// plugins: they export no `handle-webhook`.
pub(crate) fn prepare_fiberless(
    base: &Linker<WasmState>,
    component: &Component,
    version: &str,
) -> wasmtime::Result<Pre> {
    let linker = super::fiberless::for_component(base, component)?;
    let instance_pre = linker.instantiate_pre(component)?;
    Ok(if version == v0_1::VERSION {
        Pre::V0_1(v0_1::ChannelPre::new(instance_pre)?)
    } else {
        Pre::V0_2(v0_2::ChannelPre::new(instance_pre)?)
    })
}

/// Link `component`, built against `version`, and pre-instantiate it (type-checks every
/// import and export).
pub(crate) fn prepare(
    linker: &Linker<WasmState>,
    component: &Component,
    version: &str,
) -> Result<Pre, LoadError> {
    let contract = |error: wasmtime::Error| LoadError::Contract(format!("{error:#}"));
    let instance_pre = linker.instantiate_pre(component).map_err(contract)?;
    let destination = component
        .component_type()
        .exports(linker.engine())
        .any(|(name, _)| name == destination::EXPORTS);
    if destination {
        Ok(Pre::Destination(
            destination::DestinationPre::new(instance_pre).map_err(contract)?,
        ))
    } else if version == v0_1::VERSION {
        Ok(Pre::V0_1(
            v0_1::ChannelPre::new(instance_pre).map_err(contract)?,
        ))
    } else {
        Ok(Pre::V0_2(
            v0_2::ChannelPre::new(instance_pre).map_err(contract)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(import: &str) -> String {
        match check_imports(&[import.to_owned()]) {
            Err(error) => error.to_string(),
            Ok(()) => panic!("{import} was accepted"),
        }
    }

    #[test]
    fn wasi_http_is_refused_by_name_with_what_to_use_instead() {
        let message = refused("wasi:http/outgoing-handler@0.2.3");
        assert!(
            message.contains("`wasi:http/outgoing-handler@0.2.3`"),
            "{message}"
        );
        assert!(message.contains("http-fetch"), "{message}");
        assert!(message.contains("-d http -d fetch-event"), "{message}");
        let message = refused("acme:keys/vault@1.0.0");
        assert!(message.contains("`acme:keys/vault@1.0.0`"), "{message}");
    }

    #[test]
    fn the_contract_and_wasi_without_capabilities_are_offered() {
        let imports = [
            "omnigate:channel/host@0.2.0",
            "omnigate:channel/types@0.1.0",
            "wasi:cli/stderr@0.2.6",
            "wasi:io/streams@0.2.6",
            "wasi:filesystem/preopens@0.2.0",
        ]
        .map(str::to_owned);
        assert!(check_imports(&imports).is_ok());
    }
}
