//! `hashing`: customer identifiers normalised and hashed for an ad platform, so a
//! destination plugin gets the hash the platform matches on and never has to hold more.

use super::super::contract::destination::hashing::{self, Identifier, Platform};
use super::super::state::WasmState;
use crate::user_data;

impl hashing::Host for WasmState {
    async fn hash(
        &mut self,
        identifier: Identifier,
        platform: Platform,
        value: String,
    ) -> Result<String, String> {
        let identifier = match identifier {
            Identifier::Email => user_data::Identifier::Email,
            Identifier::Phone => user_data::Identifier::Phone,
        };
        let platform = match platform {
            Platform::Meta => user_data::Platform::Meta,
            Platform::Google => user_data::Platform::Google,
        };
        user_data::hash(identifier, platform, &value).map_err(|error| error.to_string())
    }
}

impl super::super::contract::destination::types::Host for WasmState {}
