//! omnigate destination plugin for Meta's Conversions API for Business Messaging:
//! conversions recorded in omnigate go back to Meta with the click (`ctwa_clid`) or the
//! channel's user ids that tie them to the ad that started the conversation.

#![warn(missing_docs)]

pub mod capi;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
