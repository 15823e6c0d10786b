//! Home slots: a contact made by a sender's first event gets an id whose Redis Cluster
//! slot is the slot of that sender's handle key, so one script on that slot can look the
//! sender up and record the event (docs/redis-keys.md, "One inbound event").
//!
//! A key's slot is CRC16 (XMODEM) of its hash tag, modulo 16384. A contact id is
//! `ct_<ULID>`; its last four ULID characters (20 of the 80 random bits) are chosen so
//! the id lands in the wanted slot. CRC16 is linear (zero initial value, no final XOR),
//! so for an id `P ‖ S` with a four-byte suffix `S`: `crc(P ‖ S) = crc(P ‖ 0000) ⊕
//! crc(S)`. A table from `crc(S)` to a suffix, built once (2²⁰ short CRCs, ~10 ms), turns
//! the choice into one lookup per id.

use std::sync::OnceLock;

use crc16::{State, XMODEM};

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// ULID characters (Crockford base32): each encodes five bits.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Random bits the suffix replaces (four characters).
const SUFFIX_BITS: u32 = 20;

/// Unused entries of [`suffixes`].
const NONE: u32 = u32::MAX;

/// The slot of a key: CRC16 of its hash tag (the text between the first `{` and the
/// next `}`, when not empty), else of the whole key, modulo [`SLOTS`].
pub fn slot_of_key(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tag = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    State::<XMODEM>::calculate(tag) % SLOTS
}

/// A new contact id whose keys (`og:{<id>}:…`) live in `slot`; `None` only if no suffix
/// reaches it (not seen in practice: the table covers every CRC value).
pub fn contact_id_in(slot: u16) -> Option<String> {
    let drawn = ulid::Ulid::generate();
    let random = drawn.random() & !((1u128 << SUFFIX_BITS) - 1);
    let base = format!(
        "ct_{}",
        ulid::Ulid::from_parts(drawn.timestamp_ms(), random)
    );
    let head = &base.as_bytes()[..base.len() - 4];
    let mut state = State::<XMODEM>::new();
    state.update(head);
    state.update(&[0; 4]);
    let zeroed = state.get();
    let table = suffixes();
    (0..4u16).find_map(|high| {
        let wanted = slot + high * SLOTS;
        let suffix = table[usize::from(zeroed ^ wanted)];
        (suffix != NONE).then(|| {
            let id = ulid::Ulid::from_parts(drawn.timestamp_ms(), random | u128::from(suffix));
            format!("ct_{id}")
        })
    })
}

/// For each CRC value, a 20-bit suffix whose four ULID characters have it.
fn suffixes() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![NONE; 1 << 16];
        for value in 0..(1u32 << SUFFIX_BITS) {
            let crc = State::<XMODEM>::calculate(&encode(value));
            if table[usize::from(crc)] == NONE {
                table[usize::from(crc)] = value;
            }
        }
        table
    })
}

/// The last four ULID characters of a 20-bit value.
fn encode(value: u32) -> [u8; 4] {
    let char_at = |shift: u32| ALPHABET[((value >> shift) & 31) as usize];
    [char_at(15), char_at(10), char_at(5), char_at(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot_of_key("a"), 15495);
        assert_eq!(slot_of_key("og:hd:{a}"), 15495);
        assert_eq!(slot_of_key("ct_01JABCDEFGHJKMNPQRSTVWXYZ0"), 10409);
        assert_eq!(slot_of_key("og:{ct_01JABCDEFGHJKMNPQRSTVWXYZ0}:c"), 10409);
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(
            slot_of_key("{}x"),
            State::<XMODEM>::calculate(b"{}x") % SLOTS
        );
    }

    #[test]
    fn new_ids_land_in_the_asked_slot() {
        for slot in [0, 1, 42, 8191, 15495, SLOTS - 1] {
            for _ in 0..20 {
                let id = contact_id_in(slot).expect("every slot is reachable");
                assert_eq!(slot_of_key(&id), slot, "{id}");
                assert!(id.starts_with("ct_") && id.len() == 29, "{id}");
                assert!(id[3..].parse::<ulid::Ulid>().is_ok(), "{id}");
            }
        }
    }

    #[test]
    fn ids_stay_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..1000).filter_map(|_| contact_id_in(7)).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn the_table_covers_every_crc() {
        assert!(suffixes().iter().all(|&suffix| suffix != NONE));
    }
}
