//! Stage 3 helpers: the pieces of an event the store does not decide (the raw payload,
//! a merge's view). The events themselves are built in [`super::owed`], from what a
//! change owes.

use crate::event::MergeRef;
use crate::store::Merge;

/// The raw payload for an event: the plugin's per-event JSON, else the whole body (as
/// JSON when it is JSON, as a string otherwise).
pub fn raw_payload(per_event: Option<&str>, body: &[u8]) -> serde_json::Value {
    per_event
        .and_then(|text| serde_json::from_str(text).ok())
        .or_else(|| serde_json::from_slice(body).ok())
        .unwrap_or_else(|| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The event's view of a merge.
pub fn merge_ref(merge: &Merge) -> MergeRef {
    MergeRef {
        id: merge.id.clone(),
        survivor: merge.survivor.clone(),
        absorbed: merge.absorbed.clone(),
        evidence: merge.evidence.clone(),
    }
}
