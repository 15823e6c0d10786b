//! The recent errors of each channel's plugin, for the console's Plugins page: a small
//! ring per channel in this process (the counters are in `/metrics`; this says what and
//! when). Bounded, so a plugin that fails on every call costs a fixed amount of memory.

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;
use parking_lot::Mutex;

/// Errors kept per channel (the newest).
pub const KEPT_PER_CHANNEL: usize = 20;
/// A reason is cut to this many characters (a trap's detail can be long).
const MAX_REASON_CHARS: usize = 500;

/// One failed or refused plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// When.
    pub at: Timestamp,
    /// The export called: `handle-webhook` or `send`.
    pub function: &'static str,
    /// A short label: `trap`, `timeout`, `deadline`, `memory`, `busy`, … for a failed
    /// call; `unauthorized`, `forbidden`, `bad_request`, `rejected`, … for a refusal.
    pub kind: String,
    /// What happened, as the caller was told.
    pub reason: String,
}

/// The recent errors of every channel (channel id → the newest, oldest first).
#[derive(Debug, Default)]
pub struct RecentErrors {
    by_channel: Mutex<HashMap<String, VecDeque<PluginError>>>,
}

impl RecentErrors {
    /// Keep `error` of `channel`, forgetting its oldest beyond [`KEPT_PER_CHANNEL`].
    pub fn record(&self, channel: &str, mut error: PluginError) {
        if let Some((cut, _)) = error.reason.char_indices().nth(MAX_REASON_CHARS) {
            error.reason.truncate(cut);
            error.reason.push('…');
        }
        let mut by_channel = self.by_channel.lock();
        let ring = by_channel.entry(channel.to_owned()).or_default();
        if ring.len() == KEPT_PER_CHANNEL {
            ring.pop_front();
        }
        ring.push_back(error);
    }

    /// `channel`'s recent errors, newest first.
    pub fn of(&self, channel: &str) -> Vec<PluginError> {
        self.by_channel
            .lock()
            .get(channel)
            .map(|ring| ring.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(n: usize) -> PluginError {
        PluginError {
            at: Timestamp::UNIX_EPOCH,
            function: "handle-webhook",
            kind: "trap".into(),
            reason: format!("failure {n}"),
        }
    }

    #[test]
    fn each_channel_keeps_its_newest_errors_only() {
        let recent = RecentErrors::default();
        for n in 0..KEPT_PER_CHANNEL + 5 {
            recent.record("web", error(n));
        }
        recent.record("mail", error(99));
        let web = recent.of("web");
        assert_eq!(web.len(), KEPT_PER_CHANNEL);
        assert_eq!(web[0].reason, format!("failure {}", KEPT_PER_CHANNEL + 4));
        assert_eq!(web[KEPT_PER_CHANNEL - 1].reason, "failure 5");
        assert_eq!(recent.of("mail").len(), 1);
        assert!(recent.of("sms").is_empty());
        let mut long = error(0);
        long.reason = "x".repeat(2 * MAX_REASON_CHARS);
        recent.record("sms", long);
        assert_eq!(
            recent.of("sms")[0].reason.chars().count(),
            MAX_REASON_CHARS + 1
        );
    }
}
