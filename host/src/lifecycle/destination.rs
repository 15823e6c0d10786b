//! Destinations: a destination plugin bound to its `[[destinations]]` entry (checked,
//! given its environment, warmed) and handed to delivery as a subscription's target.
//!
//! Delivery holds a [`PluginDestination`] for the life of the process; the plugin version
//! inside it is swapped atomically (an activation through `/admin`, the fleet, or the
//! plugins directory watch), so the subscription's queue, order and retries carry on.
//! A delivery in flight finishes on the version it started with.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use jiff::Timestamp;

use super::binding::{BindError, PluginSettings, check_requirements, secret_scopes};
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

/// A destination plugin serving one `[[destinations]]` entry: the version active now.
pub struct PluginDestination {
    runtime: ArcSwap<ChannelRuntime>,
}

impl PluginDestination {
    /// Serve with `runtime` from now on; deliveries in flight finish on the old one.
    pub fn swap(&self, runtime: Arc<ChannelRuntime>) {
        self.runtime.store(runtime);
    }

    /// The plugin version serving now.
    pub fn plugin(&self) -> Arc<Plugin> {
        self.runtime.load().plugin.clone()
    }
}

impl std::fmt::Debug for PluginDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDestination")
            .field("plugin", &self.runtime.load().plugin.label)
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
        let runtime = self.runtime.load_full();
        match runtime.deliver(&event).await {
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

/// A `[[destinations]]` entry, ready to bind plugin versions: its secrets resolved once,
/// so an `oauth2` token minted for one version serves the next.
pub struct DestinationBinder {
    config: DestinationConfig,
    secrets: BTreeMap<String, crate::secret::Secret>,
    tokens: BTreeMap<String, Arc<TokenSource>>,
    /// The events the subscription filters on, set when it is made.
    subscribed: OnceLock<Vec<String>>,
}

impl std::fmt::Debug for DestinationBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationBinder")
            .field("destination", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl DestinationBinder {
    /// The binder of `config`; refused when an `oauth2` secret is unusable.
    pub fn new(config: &DestinationConfig) -> Result<Self, BindError> {
        let (secrets, tokens) =
            split_secrets(&config.secrets).map_err(|problem| BindError::Requirements {
                channel: config.label(),
                plugin: String::new(),
                problem,
            })?;
        Ok(Self {
            config: config.clone(),
            secrets,
            tokens,
            subscribed: OnceLock::new(),
        })
    }

    /// The destination's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// `plugin` checked against the entry, given its environment and one instance warmed:
    /// everything that can fail before it serves.
    pub async fn bind(
        &self,
        runtime: &Runtime,
        plugin: Arc<Plugin>,
    ) -> Result<Arc<ChannelRuntime>, BindError> {
        let destination = &self.config;
        let events = self.events_of(&plugin)?;
        if let Some(subscribed) = self.subscribed.get()
            && destination.events.is_none()
            && *subscribed != events
        {
            return Err(self.refused(
                &plugin,
                format!(
                    "this version declares the events {events:?}; the destination was \
                     subscribed at start to {subscribed:?} (set `events` on the entry, or restart)"
                ),
            ));
        }
        check_requirements(destination, &plugin.info)?;
        let mut env = ChannelEnv::empty(&destination.id, runtime.fetch_client());
        env.config = destination
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect();
        env.secrets = self.secrets.clone();
        env.tokens = self.tokens.clone();
        env.allowed_hosts = destination.allowed_hosts.clone();
        env.secrets_hosts = secret_scopes(destination, &plugin.info);
        env.limits = destination.limits.clone();
        let bound = Arc::new(runtime.bind_destination(plugin, Arc::new(env)));
        bound.prewarm().await.map_err(|source| BindError::Warm {
            channel: destination.label(),
            source,
        })?;
        Ok(bound)
    }

    /// Bind `plugin` (see [`DestinationBinder::bind`]) and make it the subscription
    /// delivery runs for this destination, its receipts kept in `receipts`. The returned
    /// [`PluginDestination`] takes later versions.
    pub async fn subscribe(
        &self,
        runtime: &Runtime,
        plugin: Arc<Plugin>,
        receipts: Arc<dyn ReceiptBook>,
    ) -> Result<(SubscriptionConfig, Arc<PluginDestination>), BindError> {
        let label = plugin.label.to_string();
        let declared = self.events_of(&plugin)?;
        let bound = self.bind(runtime, plugin).await?;
        let events = self.config.events.clone().unwrap_or(declared);
        // Later versions must keep these (the subscription's filter is set once).
        let _ = self.subscribed.set(events.clone());
        let target = Arc::new(PluginDestination {
            runtime: ArcSwap::new(bound),
        });
        let subscription = SubscriptionConfig::for_destination(
            self.config.id.clone(),
            label,
            events,
            self.config.channels.clone(),
            DestinationTarget {
                plugin: target.clone(),
                receipts,
            },
        );
        Ok((subscription, target))
    }

    /// The events a destination plugin declares; a channel plugin is refused.
    fn events_of(&self, plugin: &Plugin) -> Result<Vec<String>, BindError> {
        match &plugin.role {
            Role::Destination { events } => Ok(events.clone()),
            Role::Channel => Err(self.refused(
                plugin,
                "a channel plugin cannot be a destination; configure it under [[channels]]".into(),
            )),
        }
    }

    fn refused(&self, plugin: &Plugin, problem: String) -> BindError {
        BindError::Requirements {
            channel: self.config.label(),
            plugin: plugin.info.id.clone(),
            problem,
        }
    }
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
