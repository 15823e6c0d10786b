//! On-disk cache of compiled components, so a restart does not recompile.
//!
//! Entries are keyed by the SHA-256 of the wasm bytes and the engine's compatibility hash
//! (wasmtime version, compiler settings, CPU features). Only files this host wrote are
//! ever deserialized: the cache directory must be writable by the gateway alone.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    /// Use `dir` (created if missing) for `engine`'s artifacts.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Load the compiled form of the wasm with `digest`, if cached and still compatible.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path_for(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` below from `Component::serialize` of
        // this host's own engine; the directory is the gateway's own (see module docs).
        // wasmtime still checks engine compatibility and refuses a mismatching artifact.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "discarding unusable compiled artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store `component` (compiled from the wasm with `digest`); failures are logged
    /// only, since the cache is an optimization.
    pub fn store(&self, digest: &str, component: &Component) {
        let path = self.path_for(digest);
        if let Err(error) = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&path, &bytes))
        {
            tracing::warn!(path = %path.display(), %error, "could not cache compiled plugin");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
