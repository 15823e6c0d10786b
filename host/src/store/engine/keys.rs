//! The engine's keys. A letter names the kind of record; ids follow. A part of variable
//! content is closed by `\x1f` when something follows it, so no key is a prefix of a key
//! of another record by accident.

use crate::event::{Handle, HandleKind};

/// `c/<contact>`: the contact ([`super::records::ContactDoc`]).
pub fn contact(id: &str) -> String {
    format!("c/{id}")
}

/// Every contact.
pub const CONTACTS: &str = "c/";

/// `h/<kind>\x1f<value>`: the contact a handle identifies (first claim wins).
pub fn handle(handle: &Handle) -> String {
    let kind = match handle.kind {
        HandleKind::ChannelUser => "user",
        HandleKind::Phone => "phone",
        HandleKind::Email => "email",
    };
    format!("h/{kind}\u{1f}{}", handle.value)
}

/// `v/<conversation>`: the conversation ([`super::records::ThreadDoc`]).
pub fn thread(id: &str) -> String {
    format!("v/{id}")
}

/// Every conversation.
pub const THREADS: &str = "v/";

/// `O/<conversation>`: the conversation is its contact's latest and open (what the
/// sweeper looks at).
pub fn open(id: &str) -> String {
    format!("O/{id}")
}

/// Every open conversation.
pub const OPEN: &str = "O/";

/// `m/<conversation>\x1f<position>`: one message of its history.
pub fn message(conversation: &str, position: u64) -> String {
    format!("m/{conversation}\u{1f}{position:016x}")
}

/// `t/<conversation>\x1f<position>`: one entry of its timeline.
pub fn entry(conversation: &str, position: u64) -> String {
    format!("t/{conversation}\u{1f}{position:016x}")
}

/// `d/<channel>\x1f<external id>`: an inbound event seen (expires with the dedupe TTL).
pub fn dedupe(owed_key: &str) -> String {
    format!("d/{owed_key}")
}

/// `o/<contact>\x1f<owed key>`: what a change of the contact owes, until settled.
pub fn owed(contact: &str, key: &str) -> String {
    format!("o/{contact}\u{1f}{key}")
}

/// Every owed record.
pub const OWED: &str = "o/";

/// The owed records of one contact.
pub fn owed_of(contact: &str) -> String {
    format!("o/{contact}\u{1f}")
}

/// `k/<token>`: a link token's contact (expires with the token).
pub fn token(token: &str) -> String {
    format!("k/{token}")
}

/// Every link token.
pub const TOKENS: &str = "k/";

/// `s/<session>`: a signed-out console session (expires when it would have).
pub fn session(id: &str) -> String {
    format!("s/{id}")
}

/// `p/<probable key>\x1f<contact>`: the contact is listed under the probable-link key.
pub fn probable(key: &str, contact: &str) -> String {
    format!("p/{key}\u{1f}{contact}")
}

/// The members of one probable-link key.
pub fn probable_members(key: &str) -> String {
    format!("p/{key}\u{1f}")
}

/// `u/<ms>\x1f<conversation>`: the conversation's outcome is due at `ms`.
pub fn due(ms: i64, conversation: &str) -> String {
    format!("u/{}\u{1f}{conversation}", ordered(ms))
}

/// The due index.
pub const DUE: &str = "u/";

/// `U/<conversation>`: where the conversation is in the due index.
pub fn due_of(conversation: &str) -> String {
    format!("U/{conversation}")
}

/// `a/<ms>\x1f<conversation>`: the conversation started at `ms` (the export's index).
pub fn started(ms: i64, conversation: &str) -> String {
    format!("a/{}\u{1f}{conversation}", ordered(ms))
}

/// The started index.
pub const STARTED: &str = "a/";

/// The first key of the started index at or after `ms`, minus one: a scan after it
/// starts at `ms`.
pub fn started_before(ms: i64) -> String {
    format!("a/{}", ordered(ms))
}

/// `r/<bucket>\x1f<table>`: rollup counters.
pub fn rollup(bucket: &str, table: &str) -> String {
    format!("r/{bucket}\u{1f}{table}")
}

/// `R/<bucket>\x1f<debt>`: the bucket has taken the debt (expires after 30 days).
pub fn rollup_once(bucket: &str, debt: &str) -> String {
    format!("R/{bucket}\u{1f}{debt}")
}

/// `x/<conversion>`: the answer kept for a conversion.
pub fn conversion(id: &str) -> String {
    format!("x/{id}")
}

/// `y/<conversion>\x1f<destination>`: what a destination did with a conversion.
pub fn receipt(id: &str, destination: &str) -> String {
    format!("y/{id}\u{1f}{destination}")
}

/// The receipts of one conversion, in destination order.
pub fn receipts(id: &str) -> String {
    format!("y/{id}\u{1f}")
}

/// `P/v/<digest>`: a plugin version's record.
pub fn plugin(digest: &str) -> String {
    format!("P/v/{digest}")
}

/// Every plugin version.
pub const PLUGINS: &str = "P/v/";

/// `P/w/<digest>`: a plugin version's wasm.
pub fn wasm(digest: &str) -> String {
    format!("P/w/{digest}")
}

/// `P/a`: every channel's activation.
pub const ACTIVATIONS: &str = "P/a";

/// Milliseconds as 16 hex digits whose byte order is the numbers' order (negative
/// ones included).
fn ordered(ms: i64) -> String {
    format!("{:016x}", (ms as u64) ^ (1 << 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_their_keys_do() {
        let times = [-1_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let keys: Vec<String> = times.iter().map(|ms| due(*ms, "cv")).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(started_before(5) < started(5, "cv"));
        assert!(started(4, "cv_zzz") < started_before(5));
    }
}
