//! The outcome loop's domain: what became of a conversation after the click — first
//! response, stages, conversions, lost opportunities — and the rollups reports add up.
//!
//! Everything here is pure: [`rules::decide`] turns a record, the conversation's facts
//! and a change into the new record and its events; [`rollup::deltas`] turns two records
//! into counter changes; [`report`] adds counters up. The flow that reads and writes the
//! store is `pipeline::outcomes`; docs/outcomes.md describes the model.

pub mod conversion;
pub mod record;
pub mod report;
pub mod rollup;
pub mod rules;
pub mod settings;

pub use record::{Author, AuthorKind, ConversionRef, OutcomeRecord, StageMove};
pub use settings::OutcomeSettings;
