//! `cargo xtask`: the project's own set-up, build, test and benchmark commands.
//!
//! - `cargo xtask run`: build plugins and the gateway, start a demo (memory store, web chat
//!   channel, a local receiver printing verified deliveries).
//! - `cargo xtask test`: everything CI runs: fmt, clippy, plugins, unit and e2e tests.
//! - `cargo xtask bench`: the benchmarks, figures as ratios against same-run baselines.
//! - `cargo xtask plugins`: build the plugins and test guests for `wasm32-wasip2`.

mod bench;
mod demo;
mod plugins;
mod shell;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "omnigate project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build everything and start the demo gateway with a local receiver.
    Run,
    /// Run the whole check suite (what CI runs).
    Test,
    /// Run the benchmarks.
    Bench {
        /// Rounds per measurement (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Build the plugins and test guests.
    Plugins,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Run => demo::run(),
        Task::Test => test(),
        Task::Bench { rounds } => bench::run(rounds),
        Task::Plugins => plugins::build().map(|_| ()),
    }
}

fn test() -> Result<()> {
    shell::step("cargo fmt --check", &["fmt", "--all", "--", "--check"])?;
    plugins::build()?;
    shell::step(
        "cargo clippy (all targets, warnings are errors)",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    plugins::clippy_wasm()?;
    shell::require_redis()?;
    // The e2e tests run the `omnigate` binary; build it with the workspace's features.
    shell::step(
        "cargo build (binaries)",
        &["build", "--workspace", "--bins"],
    )?;
    shell::step(
        "cargo test (unit, end-to-end, benchmark smoke runs)",
        &["test", "--workspace", "--all-targets"],
    )?;
    println!("\nxtask test: all checks passed");
    Ok(())
}
