//! Which events a subscription wants: event-type patterns and channel ids.

use crate::event::{Event, EventType};

/// One event-type pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: every type.
    Any,
    /// `message.received`.
    Exact(String),
    /// `message.*`, stored with its dot (`message.`) so `messages.x` does not match.
    Prefix(String),
}

impl Pattern {
    fn matches(&self, kind: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(name) => name == kind,
            Pattern::Prefix(prefix) => kind.starts_with(prefix.as_str()),
        }
    }
}

/// A subscription's filter: event-type patterns and an optional channel allow-list.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    patterns: Vec<Pattern>,
    /// Empty means every channel.
    channels: Vec<String>,
}

impl EventFilter {
    /// Parses the patterns. Names and prefixes must match a known event type, so a typo
    /// (`mesage.*`) is a start-up error instead of a subscription that silently gets
    /// nothing.
    pub(crate) fn new(events: &[String], channels: &[String]) -> Result<Self, String> {
        if events.is_empty() {
            return Err("`events` is empty: use [\"*\"] for every event".into());
        }
        let patterns = events
            .iter()
            .map(|raw| parse(raw))
            .collect::<Result<_, _>>()?;
        if let Some(empty) = channels.iter().find(|id| id.trim().is_empty()) {
            return Err(format!("`channels` contains an empty id {empty:?}"));
        }
        Ok(Self {
            patterns,
            channels: channels.to_vec(),
        })
    }

    /// Whether the subscription wants this event.
    pub(crate) fn matches(&self, event: &Event) -> bool {
        self.matches_kind(event.kind.as_str(), &event.channel.id)
    }

    /// Whether the subscription wants events of type `kind` from channel `channel`.
    pub(crate) fn matches_kind(&self, kind: &str, channel: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(kind))
            && (self.channels.is_empty() || self.channels.iter().any(|id| id == channel))
    }
}

fn parse(raw: &str) -> Result<Pattern, String> {
    let pattern = if raw == "*" {
        Pattern::Any
    } else if let Some(stem) = raw.strip_suffix(".*") {
        Pattern::Prefix(format!("{stem}."))
    } else {
        Pattern::Exact(raw.to_owned())
    };
    let known = |p: &Pattern| ALL_TYPES.iter().any(|kind| p.matches(kind.as_str()));
    let well_formed = match &pattern {
        Pattern::Any => true,
        Pattern::Exact(name) => !name.contains('*'),
        Pattern::Prefix(prefix) => prefix.len() > 1 && !prefix.contains('*'),
    };
    if !well_formed {
        return Err(format!(
            "`events` pattern {raw:?} is malformed: use `*`, `prefix.*` or an exact type"
        ));
    }
    if !known(&pattern) {
        return Err(format!("`events` pattern {raw:?} matches no event type"));
    }
    Ok(pattern)
}

/// Every event type, for validating patterns.
const ALL_TYPES: [EventType; 17] = [
    EventType::MessageReceived,
    EventType::MessageSent,
    EventType::MessageStatus,
    EventType::MessageReaction,
    EventType::MessageEdited,
    EventType::MessageDeleted,
    EventType::ConversationStarted,
    EventType::ConversationChannelSwitched,
    EventType::ConversationReferred,
    EventType::ConversationClosed,
    EventType::ConversationFirstResponse,
    EventType::ConversationStageChanged,
    EventType::ConversationOpportunityLost,
    EventType::ContactMerged,
    EventType::ContactUnmerged,
    EventType::ContactErased,
    EventType::ConversionRecorded,
];

/// Never called: it stops compiling when a variant is added to [`EventType`], so that
/// [`ALL_TYPES`] gets updated (otherwise patterns for the new type would be refused).
#[allow(dead_code)]
fn all_types_is_exhaustive(kind: EventType) {
    match kind {
        EventType::MessageReceived
        | EventType::MessageSent
        | EventType::MessageStatus
        | EventType::MessageReaction
        | EventType::MessageEdited
        | EventType::MessageDeleted
        | EventType::ConversationStarted
        | EventType::ConversationChannelSwitched
        | EventType::ConversationReferred
        | EventType::ConversationClosed
        | EventType::ConversationFirstResponse
        | EventType::ConversationStageChanged
        | EventType::ConversationOpportunityLost
        | EventType::ContactMerged
        | EventType::ContactUnmerged
        | EventType::ContactErased
        | EventType::ConversionRecorded => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns() {
        let filter = |events: &[&str]| EventFilter::new(&strings(events), &[]).expect("valid");
        let matches = |f: &EventFilter, kind: &str| f.patterns.iter().any(|p| p.matches(kind));
        let messages = filter(&["message.*"]);
        assert!(matches(&messages, "message.received"));
        assert!(!matches(&messages, "conversation.started"));
        let exact = filter(&["conversation.closed", "contact.merged"]);
        assert!(matches(&exact, "contact.merged"));
        assert!(!matches(&exact, "conversation.started"));
        assert!(matches(&filter(&["*"]), "conversion.recorded"));
    }

    #[test]
    fn malformed_and_unknown_patterns_are_refused() {
        for bad in [
            "",
            ".*",
            "message*",
            "*.received",
            "mesage.*",
            "message.recieved",
            "message.**",
        ] {
            assert!(EventFilter::new(&strings(&[bad]), &[]).is_err(), "{bad:?}");
        }
        assert!(EventFilter::new(&[], &[]).is_err());
        assert!(EventFilter::new(&strings(&["*"]), &strings(&[" "])).is_err());
    }
}
