//! Building plugins and test guests for `wasm32-wasip2`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell::{self, root};

const TARGET: &str = "wasm32-wasip2";

/// A component crate and where its `.wasm` is published.
struct Component {
    package: String,
    published: PathBuf,
}

/// Build every plugin (`plugins/*` → `target/plugins/<name>.wasm`), test guest
/// (`tests/guests/*` → `target/test-guests/<name>.wasm`) and example plugin in another
/// language (`plugins/examples/*` → `target/examples/<name>.wasm`). Returns the paths.
pub fn build() -> Result<Vec<PathBuf>> {
    ensure_target()?;
    let components = discover()?;
    let mut args = vec!["build", "--profile", "plugin", "--target", TARGET];
    for component in &components {
        args.push("-p");
        args.push(&component.package);
    }
    shell::step("build plugins and test guests (wasm32-wasip2)", &args)?;
    let out = root().join("target").join(TARGET).join("plugin");
    let mut published = Vec::new();
    for component in &components {
        let built = out.join(format!("{}.wasm", component.package.replace('-', "_")));
        if let Some(dir) = component.published.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&built, &component.published).with_context(|| {
            format!(
                "copy {} to {}",
                built.display(),
                component.published.display()
            )
        })?;
        published.push(component.published.clone());
    }
    for path in &published {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or_default();
        println!("    {} ({} KiB)", path.display(), size / 1024);
    }
    published.extend(crate::examples::build()?);
    Ok(published)
}

/// Clippy for the wasm target, so guest-only code paths are linted too.
pub fn clippy_wasm() -> Result<()> {
    let components = discover()?;
    let mut args = vec!["clippy", "--target", TARGET];
    for component in &components {
        args.push("-p");
        args.push(&component.package);
    }
    args.extend(["--", "-D", "warnings"]);
    shell::step("cargo clippy (plugins for wasm32-wasip2)", &args)
}

fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32-wasip2 target")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    println!("\n==> rustup target add {TARGET}");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed");
    }
    Ok(())
}

/// Plugin crates are `plugins/<name>` (package `omnigate-plugin-<name>`); test guests are
/// `tests/guests/<name>` (package `omnigate-guest-<name>`).
fn discover() -> Result<Vec<Component>> {
    let mut found = Vec::new();
    for (dir, prefix, out) in [
        ("plugins", "omnigate-plugin-", "plugins"),
        ("tests/guests", "omnigate-guest-", "test-guests"),
    ] {
        let mut entries: Vec<_> = std::fs::read_dir(root().join(dir))
            .with_context(|| format!("read {dir}"))?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().join("Cargo.toml").exists())
            .collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            found.push(Component {
                package: format!("{prefix}{name}"),
                published: root().join("target").join(out).join(format!("{name}.wasm")),
            });
        }
    }
    Ok(found)
}
