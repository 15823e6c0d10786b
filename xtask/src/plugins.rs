//! Building plugins and test guests for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
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
///
/// Rust components are linked as core modules (no `wit-component` step in the linker),
/// optimized with `wasm-opt -O3` (Binaryen cannot read components) and then made
/// components here, with the component type the bindings embedded: measured on the web
/// chat plugin, ~0.8 µs less per `handle-webhook` (about 9 %) and 15 % smaller
/// (docs/benchmarks.md).
pub fn build() -> Result<Vec<PathBuf>> {
    ensure_target()?;
    let components = discover()?;
    let mut args = vec!["build", "--profile", "plugin", "--target", TARGET];
    for component in &components {
        args.push("-p");
        args.push(&component.package);
    }
    shell::step_env(
        "build plugins and test guests (wasm32-wasip2, core modules)",
        &args,
        &[(RUSTFLAGS_VAR, CORE_MODULES)],
    )?;
    let wasm_opt = wasm_opt()?;
    let out = root().join("target").join(TARGET).join("plugin");
    let mut published = Vec::new();
    for component in &components {
        let built = out.join(format!("{}.wasm", component.package.replace('-', "_")));
        publish(&wasm_opt, &built, &component.published)?;
        published.push(component.published.clone());
    }
    for path in &published {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or_default();
        println!("    {} ({} KiB)", path.display(), size / 1024);
    }
    published.extend(crate::examples::build()?);
    Ok(published)
}

/// The target's own rustflags: only the wasm build gets them, host crates are untouched.
const RUSTFLAGS_VAR: &str = "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS";

/// `wasm-component-ld` leaves the core module, for wasm-opt.
const CORE_MODULES: &str = "-C link-arg=--skip-wit-component";

/// The features rustc's `wasm32-wasip2` code uses, for wasm-opt's validator.
const WASM_FEATURES: [&str; 7] = [
    "--enable-bulk-memory",
    "--enable-bulk-memory-opt",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// `wasm-opt` from the Binaryen release pinned in `xtask/binaryen/package-lock.json`,
/// installed by `npm ci` the first time.
fn wasm_opt() -> Result<PathBuf> {
    let dir = root().join("xtask").join("binaryen");
    let tool = dir.join("node_modules").join(".bin").join("wasm-opt");
    if !tool.exists() {
        println!("\n==> npm ci (binaryen: wasm-opt)");
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .context("Node.js with npm is needed to optimize plugins with wasm-opt")?;
        if !status.success() {
            bail!("`npm ci` for binaryen failed ({status})");
        }
    }
    Ok(tool)
}

/// `built`, a core module, optimized and made a component at `published`; nothing to do
/// while `published` is newer than `built`.
fn publish(wasm_opt: &Path, built: &Path, published: &Path) -> Result<()> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let (Some(done), Some(input)) = (modified(published), modified(built))
        && done > input
    {
        return Ok(());
    }
    if let Some(dir) = published.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = std::fs::read(built).with_context(|| format!("read {}", built.display()))?;
    // Layer 1 in the header: already a component, when RUSTFLAGS (which take precedence
    // over the target's flags) dropped `--skip-wit-component`. Published as built.
    if bytes.get(6..8) == Some(&[1, 0]) {
        println!(
            "    {} is a component already (RUSTFLAGS set?): published without wasm-opt",
            built.display()
        );
        std::fs::write(published, bytes)?;
        return Ok(());
    }
    let optimized = built.with_extension("opt.wasm");
    let status = Command::new(wasm_opt)
        .arg("-O3")
        .args(WASM_FEATURES)
        .arg(built)
        .arg("-o")
        .arg(&optimized)
        .status()
        .with_context(|| format!("cannot run {}", wasm_opt.display()))?;
    if !status.success() {
        bail!("wasm-opt failed on {} ({status})", built.display());
    }
    let core = std::fs::read(&optimized)?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)
        .and_then(|encoder| encoder.validate(true).encode())
        .with_context(|| format!("make a component of {}", optimized.display()))?;
    std::fs::write(published, component)
        .with_context(|| format!("write {}", published.display()))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-publish-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_component_is_published_as_built_without_wasm_opt() {
        let dir = scratch("component");
        let built = dir.join("built.wasm");
        let published = dir.join("out").join("published.wasm");
        let component = b"\0asm\x0d\0\x01\0".to_vec();
        std::fs::write(&built, &component).expect("write");
        // A wasm-opt that does not exist: running it would fail the publish.
        publish(&dir.join("no-wasm-opt"), &built, &published).expect("published");
        assert_eq!(std::fs::read(&published).expect("read"), component);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_core_module_goes_through_wasm_opt_unless_published_is_newer() {
        let dir = scratch("core");
        let built = dir.join("built.wasm");
        let published = dir.join("published.wasm");
        std::fs::write(&built, b"\0asm\x01\0\0\0").expect("write");
        let missing = dir.join("no-wasm-opt");
        assert!(publish(&missing, &built, &published).is_err());
        std::fs::write(&published, b"done").expect("write");
        publish(&missing, &built, &published).expect("up to date: nothing run");
        assert_eq!(std::fs::read(&published).expect("read"), b"done");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
