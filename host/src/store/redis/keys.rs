//! Key names (documented in docs/redis-keys.md). Every key of one contact — its record,
//! dedupe set, conversations and their histories — carries the hash tag `{<contact id>}`,
//! so one Lua script can update them atomically, also in a Redis Cluster. Indexes that
//! point *to* a contact (handle → contact, conversation → contact, link token → contact)
//! are single keys tagged by what they index: each is written with one atomic command.

use crate::event::{Handle, HandleKind};

/// Probable-link index: `og:pl:{<normalized name>|<e-mail domain>}` → set of contact ids.
pub fn probable(key: &str) -> String {
    format!("{ROOT}pl:{{{key}}}")
}

/// Every key starts with this.
pub const ROOT: &str = "og:";

/// Pub/sub channel on which an instance that erased contacts names them, so that the
/// others drop their copies: the contact ids, `\x1f`-joined, then `\x1e` and the
/// handle keys of their senders, `\x1f`-joined.
pub const ERASED: &str = "og:contacts:erased";

/// `og:{<contact id>}:` — the prefix of every key of one contact.
pub fn contact_prefix(contact_id: &str) -> String {
    format!("{ROOT}{{{contact_id}}}:")
}

/// Contact hash: `id`, `name`, `created_at`, `handles` (JSON), `latest` conversation.
pub fn contact(contact_id: &str) -> String {
    format!("{}c", contact_prefix(contact_id))
}

/// Dedupe sorted set of the contact's events: member `<channel>\x1f<external id>`,
/// score = expiry in ms.
pub fn seen(contact_id: &str) -> String {
    format!("{}seen", contact_prefix(contact_id))
}

/// List of the contact's conversation ids, oldest first.
pub fn conversations(contact_id: &str) -> String {
    format!("{}cvs", contact_prefix(contact_id))
}

/// Conversation hash.
pub fn conversation(contact_id: &str, conversation_id: &str) -> String {
    format!("{}cv:{conversation_id}", contact_prefix(contact_id))
}

/// Conversation history list (JSON entries, oldest first, capped).
pub fn history(contact_id: &str, conversation_id: &str) -> String {
    format!("{}h:{conversation_id}", contact_prefix(contact_id))
}

/// Handle index: `og:hd:{<kind>:<value>}` → contact id.
pub fn handle(handle: &Handle) -> String {
    format!("{ROOT}hd:{{{}:{}}}", kind_name(handle.kind), handle.value)
}

/// The contact hash field `v:<kind>:<value>` that says a verified handle's index key
/// points at this contact (so an event carrying it needs no lookup of its own).
pub fn verified_field(handle: &Handle) -> String {
    format!("v:{}:{}", kind_name(handle.kind), handle.value)
}

/// An owed-record hint member that names a sender instead of a contact: `@<kind>:<value>`
/// (written beside a script that finds the contact itself; the relay looks the handle up).
pub fn sender_member(handle: &Handle) -> String {
    format!("@{}:{}", kind_name(handle.kind), handle.value)
}

/// The handle index key a [`sender_member`] names; `None` for a contact id.
pub fn member_handle_key(member: &str) -> Option<String> {
    member
        .strip_prefix('@')
        .map(|handle| format!("{ROOT}hd:{{{handle}}}"))
}

/// Conversation index: `og:cvx:{<conversation id>}` → contact id.
pub fn conversation_index(conversation_id: &str) -> String {
    format!("{ROOT}cvx:{{{conversation_id}}}")
}

/// The dedupe member of (channel, external id): the same as its owed key.
pub fn dedupe_member(channel: &str, external_id: &str) -> String {
    crate::store::owed_inbound_key(channel, external_id)
}

/// Owed events of the contact's changes, until settled: hash, field = owed key, value =
/// `<commit µs>\x1f<conversation>\x1f<started 0|1>\x1f<switched from>\x1f<merge JSON>\x1f<payload>`.
pub fn owed(contact_id: &str) -> String {
    format!("{}owed", contact_prefix(contact_id))
}

/// Owed-record hint shard `n`: sorted set of contact ids, score = latest owed write (ms).
/// The relay reads members older than its cutoff (same shards as [`open_shard`]).
pub fn owed_shard(n: u32) -> String {
    format!("{ROOT}owed:{{{n}}}")
}

/// The serialized name of a handle kind.
pub fn kind_name(kind: HandleKind) -> &'static str {
    match kind {
        HandleKind::Phone => "phone",
        HandleKind::Email => "email",
        HandleKind::ChannelUser => "channel_user",
    }
}

/// List of merges into the contact (JSON records, oldest first, undone ones kept).
pub fn merges(contact_id: &str) -> String {
    format!("{}merges", contact_prefix(contact_id))
}

/// Set of the link tokens issued for the contact (so erasure can revoke them).
pub fn tokens_of(contact_id: &str) -> String {
    format!("{}lt", contact_prefix(contact_id))
}

/// A signed-out console session: `og:cs:{<session id>}` → `1`, expiring when the
/// session would have.
pub fn revoked_session(id: &str) -> String {
    format!("{ROOT}cs:{{{id}}}")
}

/// Link token: `og:lt:{<token>}` → contact id, with the token's TTL.
pub fn link_token(token: &str) -> String {
    format!("{ROOT}lt:{{{token}}}")
}

/// Shards of the open-conversation index (spread over a cluster's slots).
pub const OPEN_SHARDS: u32 = 16;

/// Open-conversation index shard `n`: sorted set of contact ids, score = last activity
/// (ms). A hint for the sweeper, which checks the conversation itself before closing it.
pub fn open_shard(n: u32) -> String {
    format!("{ROOT}open:{{{n}}}")
}

/// The open-conversation shard of a contact (FNV-1a: the same on every instance).
pub fn shard_of(contact_id: &str) -> u32 {
    let hash = contact_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % OPEN_SHARDS
}

/// Conversation timeline list (JSON entries written by the scripts, oldest first).
pub fn timeline(contact_id: &str, conversation_id: &str) -> String {
    format!("{}tl:{conversation_id}", contact_prefix(contact_id))
}

/// Contact activity shard `n`: sorted set of contact ids, score = latest message either way
/// (ms, `ZADD GT`), for `[store] contact_retention` (same shards as [`open_shard`]).
pub fn activity_shard(n: u32) -> String {
    format!("{ROOT}act:{{{n}}}")
}

/// A conversation's outcome record: hash `v` (version), `r` (record JSON).
pub fn outcome(contact_id: &str, conversation_id: &str) -> String {
    format!("{}oc:{conversation_id}", contact_prefix(contact_id))
}

/// Outcome due shard `n`: sorted set of conversation ids, score = when due (ms).
pub fn due_shard(n: u32) -> String {
    format!("{ROOT}due:{{{n}}}")
}

/// Conversations started on UTC day `day` (Unix days): sorted set of conversation ids,
/// score = start (ms).
pub fn started_day(day: i64) -> String {
    format!("{ROOT}st:{{{day}}}")
}

/// The prefix of a rollup bucket's keys: `og:ru:{<bucket>}:` (tables follow, and `once`).
pub fn rollup_prefix(bucket: &str) -> String {
    format!("{ROOT}ru:{{{bucket}}}:")
}

/// The answer kept for a conversion: `og:cn:{<conversion id>}`.
pub fn conversion(conversion_id: &str) -> String {
    format!("{ROOT}cn:{{{conversion_id}}}")
}

/// Hash of a conversion's receipts, destination → receipt JSON.
pub fn receipts(conversion_id: &str) -> String {
    format!("{ROOT}rc:{{{conversion_id}}}")
}
