//! Prefixed ULID identifiers: sortable by creation time, unique across instances.

/// A new id with `prefix`, e.g. `evt_01J…`.
fn new(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::generate())
}

/// A new event id (`evt_…`).
pub fn event() -> String {
    new("evt")
}

/// The event id of a fact named by an outside id (`name`, e.g. a conversion's
/// idempotency key) that happened at `at`: the same for every attempt to record it, so
/// two concurrent attempts publish one event id, which receivers deduplicate on.
pub fn event_named(name: &str, at: jiff::Timestamp) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut random = [0u8; 16];
    random.copy_from_slice(&digest[..16]);
    // A ULID: 48 bits of milliseconds, then 80 bits (here of the digest).
    let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(ms, u128::from_be_bytes(random));
    format!("evt_{ulid}")
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
