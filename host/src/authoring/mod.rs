//! Tools for plugin authors: `omnigate plugin new` ([`scaffold`]) and `omnigate plugin
//! test` ([`fixtures`]).

pub mod fixtures;
pub mod scaffold;
