//! Example plugins in other languages (`plugins/examples/*`) → `target/examples/<name>.wasm`.
//!
//! Python examples (a `requirements.txt`) are built with componentize-py, installed with
//! pip into a virtual environment under `target/` the first time (pinned by the
//! requirements file, reinstalled when it changes). JavaScript examples (a
//! `package-lock.json`) are built with componentize-js, installed by `npm ci` into the
//! example's `node_modules` when absent, with WASI HTTP and the fetch event disabled
//! (`-d http -d fetch-event`): plugins reach the network only through `http-fetch`. A build is skipped while the
//! `.wasm` is newer than every input (the example, the SDK, the WIT), so repeated runs
//! cost nothing; the first one takes under a minute per Python plugin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::shell::root;

/// The contract examples are built against.
const WIT: &str = "wit/0.2.0";
const WORLD: &str = "omnigate:channel/channel@0.2.0";

/// Build every example plugin whose inputs changed. Returns the built paths.
pub fn build() -> Result<Vec<PathBuf>> {
    let dir = root().join("plugins").join("examples");
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    entries.sort();
    let mut built = Vec::new();
    for example in entries {
        if example.join("requirements.txt").exists() {
            built.push(python(&example)?);
        } else if example.join("package-lock.json").exists() {
            built.push(javascript(&example)?);
        }
    }
    Ok(built)
}

fn run(title: &str, command: &mut Command) -> Result<()> {
    println!("\n==> {title}");
    let status = command
        .status()
        .with_context(|| format!("cannot run `{title}`"))?;
    if !status.success() {
        bail!("`{title}` failed ({status})");
    }
    Ok(())
}

/// The virtual environment with componentize-py, created or updated to `requirements`.
fn python_env(requirements: &Path) -> Result<PathBuf> {
    let venv = root().join("target").join("py-venv");
    let stamp = venv.join("requirements.installed");
    // A venv's scripts name its interpreter by absolute path: one made elsewhere (a
    // `target/` moved from another checkout) cannot run here, so it is made again.
    let made_at = venv.join("made-at");
    let here = venv.display().to_string();
    if venv.exists() && std::fs::read_to_string(&made_at).ok().as_deref() != Some(here.as_str()) {
        std::fs::remove_dir_all(&venv)
            .with_context(|| format!("cannot remove {here}, made at another path"))?;
    }
    let wanted = std::fs::read_to_string(requirements)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(venv);
    }
    if !venv.join("bin").join("pip").exists() {
        run(
            "python3 -m venv target/py-venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )
        .context("Python 3.11+ with venv is needed for the Python example plugins")?;
        std::fs::write(&made_at, &here)?;
    }
    run(
        &format!("pip install -r {}", requirements.display()),
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "-r"])
            .arg(requirements),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(venv)
}

/// Build the Python example in `example`: the SDK pip-installed into a directory of its
/// own, the example's native tests, then componentize-py.
fn python(example: &Path) -> Result<PathBuf> {
    let name = file_name(example);
    let out_dir = root().join("target").join("examples");
    let wasm = out_dir.join(format!("{name}.wasm"));
    let sdk = root().join("sdk").join("python");
    let inputs = [example.to_path_buf(), sdk.clone(), root().join(WIT)];
    // Made (or made again) even when the component is up to date: the plugin-authoring
    // tests run componentize-py from it.
    let venv = python_env(&example.join("requirements.txt"))?;
    if newer_than_all(&wasm, &inputs)? {
        return Ok(wasm);
    }
    let bin = venv.join("bin");
    let site = out_dir.join("python-sdk");
    let bindings = out_dir.join("python-bindings");
    let _ = std::fs::remove_dir_all(&site);
    run(
        "pip install sdk/python (the omnigate_sdk package)",
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--no-deps", "--target"])
            .arg(&site)
            .arg(&sdk),
    )?;
    // The generated types, importable natively for the plugin's unit tests.
    let _ = std::fs::remove_dir_all(&bindings);
    run(
        "componentize-py bindings (for native tests)",
        Command::new(bin.join("componentize-py"))
            .args(["-d"])
            .arg(root().join(WIT))
            .args(["-w", WORLD, "bindings"])
            .arg(&bindings),
    )?;
    let path = std::env::join_paths([&bindings, &site, &example.to_path_buf()])?;
    run(
        &format!("python -m unittest ({name})"),
        Command::new(bin.join("python"))
            .args(["-m", "unittest", "discover", "-s"])
            .arg(example)
            .args(["-p", "test_*.py"])
            .env("PYTHONPATH", path)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )?;
    let started = std::time::Instant::now();
    run(
        &format!("componentize-py ({name})"),
        Command::new(bin.join("componentize-py"))
            .args(["-d"])
            .arg(root().join(WIT))
            .args(["-w", WORLD, "componentize", "-p"])
            .arg(example)
            .arg("-p")
            .arg(&site)
            .args(["app", "-o"])
            .arg(&wasm),
    )?;
    let size = std::fs::metadata(&wasm)
        .map(|m| m.len())
        .unwrap_or_default();
    println!(
        "    {} ({} KiB, {:.0} s)",
        wasm.display(),
        size / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(wasm)
}

/// Build the JavaScript example in `example` with componentize-js. It runs from the
/// repository root: componentize-js resolves module imports against its working
/// directory, and the example imports the SDK as `sdk/js/src/index.js`.
fn javascript(example: &Path) -> Result<PathBuf> {
    let name = file_name(example);
    let wasm = root()
        .join("target")
        .join("examples")
        .join(format!("{name}.wasm"));
    let inputs = [
        example.join("app.js"),
        example.join("package-lock.json"),
        root().join("sdk").join("js").join("src"),
        root().join(WIT),
    ];
    // Installed even when the component is up to date: `omnigate plugin new`'s test
    // builds a new JavaScript plugin with this example's pinned componentize-js.
    let tool = example
        .join("node_modules")
        .join(".bin")
        .join("componentize-js");
    if !tool.exists() {
        run(
            &format!("npm ci ({name})"),
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(example),
        )
        .context("Node.js with npm is needed for the JavaScript example plugins")?;
    }
    if newer_than_all(&wasm, &inputs)? {
        return Ok(wasm);
    }
    if let Some(dir) = wasm.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let started = std::time::Instant::now();
    run(
        &format!("componentize-js ({name})"),
        Command::new(&tool)
            .args(["--wit", WIT, "--world-name", WORLD])
            .args(["-d", "http", "-d", "fetch-event", "--out"])
            .arg(&wasm)
            .arg(format!("plugins/examples/{name}/app.js"))
            .current_dir(root()),
    )?;
    let size = std::fs::metadata(&wasm)
        .map(|m| m.len())
        .unwrap_or_default();
    println!(
        "    {} ({} KiB, {:.0} s)",
        wasm.display(),
        size / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(wasm)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `output` exists and is newer than every file under `inputs` (caches and
/// bytecode excepted).
fn newer_than_all(output: &Path, inputs: &[PathBuf]) -> Result<bool> {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    for input in inputs {
        newest = newest.max(newest_under(input)?);
    }
    Ok(built > newest)
}

fn newest_under(path: &Path) -> Result<SystemTime> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.modified()?);
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(
            name.to_str(),
            Some("__pycache__" | "node_modules" | "build" | ".pytest_cache")
        ) {
            continue;
        }
        newest = newest.max(newest_under(&entry.path())?);
    }
    Ok(newest)
}
