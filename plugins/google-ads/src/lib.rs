//! omnigate destination plugin for Google Ads: conversions recorded in omnigate go to
//! Google's Data Manager API with the click (`gclid`, `gbraid`, `wbraid`) that brought
//! the customer.

#![warn(missing_docs)]

pub mod ingest;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
