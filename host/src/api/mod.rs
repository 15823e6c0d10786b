//! The REST API for downstream tools (`/v1`, bearer API keys) and operators (`/admin`,
//! admin keys).

pub mod admin;
pub mod auth;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod lookup;
pub mod messages;
pub mod subscriptions;
