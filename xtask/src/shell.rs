//! Running cargo and other tools with clear failure messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs us, without the variables `cargo run` set for xtask itself.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    // Build scripts that watch them (ring watches CARGO_MANIFEST_DIR) would otherwise see
    // other values than in the test harness's own `cargo build` (which drops them too),
    // and the first end-to-end test of each run would rebuild ring and all above it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if set_by_cargo_run {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Run `cargo <args>`, failing with `title` if it fails; prints how long it took (where
/// CI time goes).
pub fn step(title: &str, args: &[&str]) -> Result<()> {
    step_env(title, args, &[])
}

/// [`step`] with `env` set for cargo.
pub fn step_env(title: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    println!("\n==> {title}");
    let started = std::time::Instant::now();
    let status = cargo()
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run cargo for `{title}`"))?;
    if !status.success() {
        bail!("`{title}` failed ({status})");
    }
    println!("==> {title}: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Make sure `redis-server` is installed: the Redis-backed tests start their own.
pub fn require_redis() -> Result<()> {
    let found = Command::new("redis-server").arg("--version").output();
    match found {
        Ok(output) if output.status.success() => {
            println!(
                "\n==> redis-server found: {}",
                String::from_utf8_lossy(&output.stdout).trim()
            );
            Ok(())
        }
        _ => bail!(
            "redis-server is not installed; tests that use Redis start their own server.\n\
             Install it with `apt-get install redis-server` (Debian/Ubuntu), `brew install redis` (macOS) \
             or see https://redis.io/docs/latest/operate/oss_and_stack/install/"
        ),
    }
}

/// Debian's packages of the browser the console tests drive.
const BROWSER_PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

/// Make sure `chromium` and `chromedriver` are installed: the console tests drive a real
/// headless Chromium. When either is missing they are installed with `apt-get` (Debian's
/// `chromium` and `chromium-driver`); elsewhere this fails naming what to install.
pub fn require_browser() -> Result<()> {
    if browser_found() {
        return Ok(());
    }
    println!(
        "\n==> chromium or chromedriver missing: apt-get install {}",
        BROWSER_PACKAGES.join(" ")
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    };
    let installed = apt(&["update", "-q"])
        && apt(&[
            &["install", "-y", "-q", "--no-install-recommends"][..],
            &BROWSER_PACKAGES[..],
        ]
        .concat());
    if installed && browser_found() {
        return Ok(());
    }
    bail!(
        "the console tests need Chromium and its WebDriver: `apt-get install {}` (Debian/Ubuntu) \
         did not succeed here; install them and run again",
        BROWSER_PACKAGES.join(" ")
    )
}

fn browser_found() -> bool {
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    runs("chromium") && runs("chromedriver")
}
