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

/// The cargo that runs us.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Run `cargo <args>`, failing with `title` if it fails.
pub fn step(title: &str, args: &[&str]) -> Result<()> {
    println!("\n==> {title}");
    let status = cargo()
        .args(args)
        .status()
        .with_context(|| format!("cannot run cargo for `{title}`"))?;
    if !status.success() {
        bail!("`{title}` failed ({status})");
    }
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
