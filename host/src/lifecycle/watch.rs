//! Watching the plugins directory: when a configured channel's or destination's `.wasm`
//! file changes, the new bytes become a version and are activated for every channel and
//! destination using that file.
//!
//! Events are debounced (editors and `cp` write in several steps), and a file that fails
//! to load (half written, or simply bad) is logged and skipped: the active version keeps
//! serving, and the next write triggers another attempt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

use super::{Lifecycle, Target};

/// Keeps the directory watched while alive.
pub struct DirWatch {
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Why the directory cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch the plugins directory {dir}: {reason}")]
pub struct WatchError {
    dir: String,
    reason: String,
}

/// Watch `dir`; `files` maps each configured plugin file to the targets it serves.
/// Must be called inside a tokio runtime (the reloads run as a task).
pub fn watch(
    lifecycle: Arc<Lifecycle>,
    dir: &Path,
    files: HashMap<PathBuf, Vec<Target>>,
    debounce: Duration,
) -> Result<DirWatch, WatchError> {
    let failed = |reason: String| WatchError {
        dir: dir.display().to_string(),
        reason,
    };
    let dir = dir.canonicalize().map_err(|e| failed(e.to_string()))?;
    let files: HashMap<PathBuf, Vec<Target>> = files
        .into_iter()
        .filter_map(|(path, targets)| Some((path.canonicalize().ok()?, targets)))
        .collect();
    let (changed, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                let _ = changed.send(event.path);
            }
        }
        Err(error) => tracing::warn!(%error, "plugins directory watch error"),
    })
    .map_err(|e| failed(e.to_string()))?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| failed(e.to_string()))?;
    tracing::info!(dir = %dir.display(), files = files.len(), "watching the plugins directory");
    tokio::spawn(async move {
        while let Some(path) = changes.recv().await {
            let Some(targets) = path.canonicalize().ok().and_then(|path| files.get(&path)) else {
                continue;
            };
            reload(&lifecycle, &path, targets).await;
        }
    });
    Ok(DirWatch {
        _debouncer: debouncer,
    })
}

/// Load `path` as a version and activate it for `targets`; log and skip on failure.
async fn reload(lifecycle: &Lifecycle, path: &Path, targets: &[Target]) {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "changed plugin file unreadable; active version keeps serving");
            return;
        }
    };
    let version = match lifecycle.add(bytes, &path.display().to_string()).await {
        Ok(version) => version,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "changed plugin file refused; active version keeps serving");
            return;
        }
    };
    for target in targets {
        if let Err(error) = lifecycle.activate(target, &version.digest).await {
            tracing::warn!(%target, path = %path.display(), %error, "changed plugin not activated; active version keeps serving");
        }
    }
}
