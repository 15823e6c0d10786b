//! Event type names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an event says happened. Serialized as the dotted name, e.g. `message.received`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A customer's message.
    #[serde(rename = "message.received")]
    MessageReceived,
    /// A message sent by the business (through omnigate, or echoed by the provider).
    #[serde(rename = "message.sent")]
    MessageSent,
    /// Delivery/read receipt.
    #[serde(rename = "message.status")]
    MessageStatus,
    /// A reaction added or removed.
    #[serde(rename = "message.reaction")]
    MessageReaction,
    /// A message edited.
    #[serde(rename = "message.edited")]
    MessageEdited,
    /// A message deleted.
    #[serde(rename = "message.deleted")]
    MessageDeleted,
    /// A new conversation.
    #[serde(rename = "conversation.started")]
    ConversationStarted,
    /// The conversation continued on another channel.
    #[serde(rename = "conversation.channel_switched")]
    ConversationChannelSwitched,
    /// A referral (ad, link) arrived without a message.
    #[serde(rename = "conversation.referred")]
    ConversationReferred,
    /// The conversation closed.
    #[serde(rename = "conversation.closed")]
    ConversationClosed,
    /// The business answered the customer's first message for the first time.
    #[serde(rename = "conversation.first_response")]
    ConversationFirstResponse,
    /// The conversation moved to another stage.
    #[serde(rename = "conversation.stage_changed")]
    ConversationStageChanged,
    /// An opportunity was lost (unanswered, window expired, closed without outcome,
    /// referral only, or moved to `lost`).
    #[serde(rename = "conversation.opportunity_lost")]
    ConversationOpportunityLost,
    /// Two contacts merged.
    #[serde(rename = "contact.merged")]
    ContactMerged,
    /// A merge was undone: two contacts again.
    #[serde(rename = "contact.unmerged")]
    ContactUnmerged,
    /// A contact was erased; downstream tools should erase it too.
    #[serde(rename = "contact.erased")]
    ContactErased,
    /// A conversion (sale) recorded.
    #[serde(rename = "conversion.recorded")]
    ConversionRecorded,
}

impl EventType {
    /// The dotted name, e.g. `message.received`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message.received",
            EventType::MessageSent => "message.sent",
            EventType::MessageStatus => "message.status",
            EventType::MessageReaction => "message.reaction",
            EventType::MessageEdited => "message.edited",
            EventType::MessageDeleted => "message.deleted",
            EventType::ConversationStarted => "conversation.started",
            EventType::ConversationChannelSwitched => "conversation.channel_switched",
            EventType::ConversationReferred => "conversation.referred",
            EventType::ConversationClosed => "conversation.closed",
            EventType::ConversationFirstResponse => "conversation.first_response",
            EventType::ConversationStageChanged => "conversation.stage_changed",
            EventType::ConversationOpportunityLost => "conversation.opportunity_lost",
            EventType::ContactMerged => "contact.merged",
            EventType::ContactUnmerged => "contact.unmerged",
            EventType::ContactErased => "contact.erased",
            EventType::ConversionRecorded => "conversion.recorded",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_name_matches_as_str() {
        for kind in [
            EventType::MessageReceived,
            EventType::ConversationChannelSwitched,
            EventType::ContactMerged,
            EventType::ContactUnmerged,
            EventType::ContactErased,
            EventType::ConversationFirstResponse,
            EventType::ConversationStageChanged,
            EventType::ConversationOpportunityLost,
        ] {
            let json = serde_json::to_string(&kind).expect("serializable");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
