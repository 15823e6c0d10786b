//! Development aids.

pub mod receiver;
