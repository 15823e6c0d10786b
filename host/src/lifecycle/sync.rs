//! Keeping this instance on the fleet's activations: reconcile when the shared registry
//! announces a change, when the announcement feed reconnects (changes may have been
//! missed), and every `[plugins] reconcile_interval` whatever happens.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::Lifecycle;
use crate::store::plugins::Change;

/// Start the reconcile loop; it ends when the lifecycle is dropped.
pub fn spawn(lifecycle: &Arc<Lifecycle>, every: Duration) {
    let mut changes = lifecycle.shared.changes();
    let lifecycle = Arc::downgrade(lifecycle);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; start-up reconciled already
        let mut feed_open = true;
        loop {
            let why = tokio::select! {
                change = changes.recv(), if feed_open => match change {
                    Some(Change::Announced(revision)) => format!("announced revision {revision}"),
                    Some(Change::Resubscribed) => "announcements (re)subscribed".to_owned(),
                    None => {
                        feed_open = false;
                        continue;
                    }
                },
                _ = ticks.tick() => "periodic".to_owned(),
            };
            if !reconcile(&lifecycle, &why).await {
                return;
            }
        }
    });
}

/// One reconcile; `false` once the lifecycle is gone.
async fn reconcile(lifecycle: &Weak<Lifecycle>, why: &str) -> bool {
    let Some(lifecycle) = lifecycle.upgrade() else {
        return false;
    };
    match lifecycle.reconcile().await {
        Ok(0) => tracing::debug!(why, "plugin registry reconciled; nothing to change"),
        Ok(changed) => tracing::info!(why, changed, "plugin registry reconciled"),
        Err(error) => {
            tracing::warn!(why, %error, "plugin registry unreachable; channels keep their versions")
        }
    }
    true
}
