//! Operations: configuration, logging and tracing, health (metrics live in `crate::metrics`, a leaf
//! every stage records into).

pub mod config;
pub mod health;
pub mod scrape;
pub mod setup;
pub mod telemetry;
pub mod trace;
