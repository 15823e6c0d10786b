//! `cargo xtask bench`: the benchmarks in `tests/benches/`, built in release mode.
//!
//! Each reports medians over several rounds and ratios against a baseline measured in
//! the same run (machines are shared and noisy: absolute figures drift, ratios hold).

use anyhow::Result;

use crate::{plugins, shell};

/// Build plugins, then run each benchmark with `rounds` rounds.
pub fn run(rounds: usize) -> Result<()> {
    plugins::build()?;
    let rounds = rounds.to_string();
    for bench in [
        "runtime",
        "languages",
        "throughput",
        "allocations",
        "delivery",
        "lifecycle",
        "outcomes",
        "store_rules",
    ] {
        shell::step(
            &format!("benchmark `{bench}` ({rounds} rounds)"),
            &[
                "bench",
                "-p",
                "omnigate-tests",
                "--bench",
                bench,
                "--",
                "--rounds",
                &rounds,
            ],
        )?;
    }
    Ok(())
}
