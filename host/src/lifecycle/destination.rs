//! Destinations: a destination plugin bound to its `[[destinations]]` entry (checked,
//! given its environment, warmed) and handed to delivery as a subscription's target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::binding::{BindError, check_requirements, secret_scopes};
use crate::delivery::destination::{Accepted, Delivery, Destination, ReceiptBook, Refusal};
use crate::delivery::{DestinationTarget, SubscriptionConfig};
use crate::ops::config::DestinationConfig;
use crate::runtime::contract::destination::types::{DeliveryError, Event};
use crate::runtime::imports::truncate;
use crate::runtime::{ChannelEnv, ChannelRuntime, Plugin, Role, Runtime};
use crate::secret::SecretSpec;
use crate::secret::oauth2::TokenSource;

/// Longest receipt or reason kept from a plugin: it is stored per conversion.
const MAX_TEXT: usize = 1024;

/// A destination plugin serving one `[[destinations]]` entry.
pub struct PluginDestination {
    runtime: Arc<ChannelRuntime>,
}

impl std::fmt::Debug for PluginDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDestination")
            .field("plugin", &self.runtime.plugin.label)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Destination for PluginDestination {
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<Accepted, Refusal> {
        let event = Event {
            id: delivery.event_id.to_owned(),
            type_: delivery.event_type.to_owned(),
            document: String::from_utf8_lossy(delivery.cloudevent).into_owned(),
            attempt: delivery.attempt,
        };
        match self.runtime.deliver(&event).await {
            Ok(Ok(receipt)) => Ok(Accepted::Sent {
                receipt: bounded(&receipt.id),
            }),
            Ok(Err(error)) => answer(error),
            // A trap, limit or timeout: the plugin may do better next time (or be fixed).
            Err(error) => Err(Refusal::Retryable {
                reason: bounded(&error.to_string()),
                retry_after: None,
            }),
        }
    }
}

/// The plugin's refusal in delivery's terms.
fn answer(error: DeliveryError) -> Result<Accepted, Refusal> {
    Err(match error {
        DeliveryError::Skipped(reason) => {
            return Ok(Accepted::Skipped {
                reason: bounded(&reason),
            });
        }
        DeliveryError::Retryable(retry) => Refusal::Retryable {
            reason: bounded(&retry.reason),
            retry_after: retry.after_ms.map(Duration::from_millis),
        },
        DeliveryError::Permanent(reason) => Refusal::Permanent {
            reason: bounded(&reason),
        },
        DeliveryError::Disable(reason) => Refusal::Disable {
            reason: bounded(&reason),
        },
        DeliveryError::NotBefore(at) => match Timestamp::from_millisecond(at) {
            Ok(at) => Refusal::NotBefore { at },
            Err(_) => Refusal::Permanent {
                reason: format!("the plugin asked to wait until an impossible time ({at} ms)"),
            },
        },
    })
}

fn bounded(text: &str) -> String {
    truncate(text, MAX_TEXT).to_owned()
}

/// Bind `plugin` to `destination` and warm one instance; the subscription delivery runs
/// for it, its receipts kept in `receipts`.
pub async fn bind(
    runtime: &Runtime,
    destination: &DestinationConfig,
    plugin: Arc<Plugin>,
    receipts: Arc<dyn ReceiptBook>,
) -> Result<SubscriptionConfig, BindError> {
    let requirement = |problem: &str| BindError::Requirements {
        channel: format!("destination `{}`", destination.id),
        plugin: plugin.info.id.clone(),
        problem: problem.to_owned(),
    };
    let Role::Destination { events } = &plugin.role else {
        return Err(requirement(
            "a channel plugin cannot be a destination; configure it under [[channels]]",
        ));
    };
    check_requirements(destination, &plugin.info)?;
    let (secrets, tokens) =
        split_secrets(&destination.secrets).map_err(|error| requirement(&error))?;
    let mut env = ChannelEnv::empty(&destination.id, runtime.fetch_client());
    env.config = destination
        .config
        .iter()
        .map(|(key, value)| (key.clone(), value.to_string()))
        .collect();
    env.secrets = secrets;
    env.tokens = tokens;
    env.allowed_hosts = destination.allowed_hosts.clone();
    env.secrets_hosts = secret_scopes(destination, &plugin.info);
    env.limits = destination.limits.clone();
    let bound = Arc::new(runtime.bind_destination(plugin.clone(), Arc::new(env)));
    bound.prewarm().await.map_err(|source| BindError::Warm {
        channel: format!("destination `{}`", destination.id),
        source,
    })?;
    Ok(SubscriptionConfig::for_destination(
        destination.id.clone(),
        plugin.label.to_string(),
        destination.events.clone().unwrap_or_else(|| events.clone()),
        destination.channels.clone(),
        DestinationTarget {
            plugin: Arc::new(PluginDestination { runtime: bound }),
            receipts,
        },
    ))
}

/// The secrets as the environment holds them: values, and token sources.
type Split = (
    BTreeMap<String, crate::secret::Secret>,
    BTreeMap<String, Arc<TokenSource>>,
);

fn split_secrets(specs: &BTreeMap<String, SecretSpec>) -> Result<Split, String> {
    let mut values = BTreeMap::new();
    let mut tokens = BTreeMap::new();
    for (name, spec) in specs {
        match spec {
            SecretSpec::Value(secret) => {
                values.insert(name.clone(), secret.clone());
            }
            SecretSpec::OAuth2(config) => {
                let source = TokenSource::new(config.clone())
                    .map_err(|error| format!("secret `{name}`: {error}"))?;
                tokens.insert(name.clone(), Arc::new(source));
            }
        }
    }
    Ok((values, tokens))
}
