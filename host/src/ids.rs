//! Prefixed ULID identifiers: sortable by creation time, unique across instances.

/// A new id with `prefix`, e.g. `evt_01J…`.
fn new(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::generate())
}

/// A new event id (`evt_…`).
pub fn event() -> String {
    new("evt")
}

/// A new contact id (`ct_…`).
pub fn contact() -> String {
    new("ct")
}

/// A new conversation id (`cv_…`).
pub fn conversation() -> String {
    new("cv")
}

/// A new outbound message id (`msg_…`).
pub fn message() -> String {
    new("msg")
}

/// A new merge id (`mg_…`).
pub fn merge() -> String {
    new("mg")
}
