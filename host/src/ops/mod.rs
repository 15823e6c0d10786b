//! Operations: configuration, logging, health.

pub mod config;
pub mod health;
pub mod telemetry;
