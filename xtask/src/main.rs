//! `cargo xtask`: the project's own set-up, build, test and benchmark commands.
//!
//! - `cargo xtask run`: build plugins and the gateway, start a demo (memory store, web chat
//!   channel, a local receiver printing verified deliveries).
//! - `cargo xtask test`: everything CI runs: fmt, clippy, plugins, unit and e2e tests.
//! - `cargo xtask bench`: the benchmarks, figures as ratios against same-run baselines.
//! - `cargo xtask plugins`: build the plugins and test guests for `wasm32-wasip2`.
//! - `cargo xtask browser`: install Chromium and chromedriver (Debian packages) when missing.
//! - `cargo xtask omnigate <args>`: the `omnigate` command from this checkout.

mod bench;
mod demo;
mod examples;
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
    /// Install Chromium and chromedriver with `apt-get` when missing (the console tests).
    Browser,
    /// Build the gateway (the debug build `run` and `test` share) and run the `omnigate`
    /// command with these arguments, e.g. `cargo xtask omnigate plugin check x.wasm`.
    Omnigate {
        /// Arguments of `omnigate`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Run => demo::run(),
        Task::Test => test(),
        Task::Bench { rounds } => bench::run(rounds),
        Task::Plugins => plugins::build().map(|_| ()),
        Task::Browser => shell::require_browser(),
        Task::Omnigate { args } => omnigate(&args),
    }
}

/// `omnigate <args>` from this checkout, built first (quietly when it is up to date).
fn omnigate(args: &[String]) -> Result<()> {
    let status = shell::cargo()
        .args(["build", "--quiet", "--workspace", "--bins"])
        .status()?;
    anyhow::ensure!(status.success(), "building the gateway failed ({status})");
    let binary = shell::root().join("target").join("debug").join("omnigate");
    // Run where the caller stands, so relative paths in `args` mean what they say.
    let status = std::process::Command::new(&binary).args(args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}

fn test() -> Result<()> {
    let started = std::time::Instant::now();
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
    shell::require_browser()?;
    // The e2e tests run the `omnigate` binary; build it with the workspace's features.
    shell::step(
        "cargo build (binaries)",
        &["build", "--workspace", "--bins"],
    )?;
    shell::step(
        "cargo test (unit, end-to-end, benchmark smoke runs)",
        &["test", "--workspace", "--all-targets"],
    )?;
    shell::step(
        "cargo test (Python and JavaScript plugins made by `omnigate plugin new`, built and tested)",
        &[
            "test",
            "-p",
            "omnigate-tests",
            "--test",
            "plugin_authoring",
            "--",
            "--ignored",
        ],
    )?;
    println!(
        "\nxtask test: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
