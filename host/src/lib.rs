//! omnigate: an integration gateway for customer conversations.
//!
//! A webhook flows `ingress` → `runtime` (the channel's plugin) → `pipeline` (dedupe,
//! identity, threading, enrichment) → `store` → `delivery` (signed CloudEvents to
//! downstream tools). Replies come back through `api` → `runtime` (`send`).
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod authoring;
pub mod console;
pub mod delivery;
pub mod dev;
pub mod event;
pub mod fault;
pub mod http_error;
pub mod ids;
pub mod ingress;
pub mod keyed_limit;
pub mod lifecycle;
pub mod metrics;
pub mod netguard;
pub mod ops;
pub mod outcome;
pub mod pipeline;
pub mod redis_url;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;
pub mod user_data;
