//! On-disk cache of compiled components, so a restart does not recompile.
//!
//! Entries are keyed by the SHA-256 of the wasm bytes and the engine's compatibility hash
//! (wasmtime version, compiler settings, CPU features). Only files this host wrote are
//! ever deserialized: the cache directory must be writable by the gateway alone, so it is
//! made `0700` (start-up fails when it cannot be, e.g. another user owns it), and each
//! artifact is loaded only if its SHA-256 matches the one recorded next to it when it was
//! written (a truncated or swapped file is recompiled instead).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
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
        owner_only(&dir)?;
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

    /// Load the compiled form of the wasm with `digest`, if cached, intact and still
    /// compatible.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path_for(digest);
        let bytes = std::fs::read(&path).ok()?;
        let recorded = std::fs::read_to_string(sum_path(&path)).unwrap_or_default();
        if recorded.trim() != hex::encode(Sha256::digest(&bytes)) {
            tracing::warn!(path = %path.display(), "discarding a compiled artifact whose digest does not match");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the bytes are what `store` below wrote from `Component::serialize` of
        // this host's own engine (their digest matches the one recorded then), in a
        // directory only the gateway can write (see module docs). wasmtime still checks
        // engine compatibility and refuses a mismatching artifact.
        match unsafe { Component::deserialize(engine, &bytes) } {
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
            .and_then(|bytes| {
                write_atomically(&path, &bytes)?;
                let sum = hex::encode(Sha256::digest(&bytes));
                write_atomically(&sum_path(&path), sum.as_bytes())
            })
        {
            tracing::warn!(path = %path.display(), %error, "could not cache compiled plugin");
        }
    }
}

/// Where the SHA-256 of an artifact is recorded.
fn sum_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("cwasm.sha256")
}

/// Makes `dir` readable and writable by the gateway's user only.
#[cfg(unix)]
fn owner_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!(
                "plugin cache_dir {} must belong to the gateway's user (cannot make it 0700: {error})",
                dir.display()
            ),
        )
    })
}

#[cfg(not(unix))]
fn owner_only(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(engine: &Engine) -> Component {
        // The binary header of a component with nothing in it.
        let empty = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        Component::new(engine, empty).expect("an empty component compiles")
    }

    #[test]
    fn a_tampered_artifact_is_not_loaded_and_the_directory_is_private() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = CompileCache::new(dir.path().join("cache"), &engine).expect("cache");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("cache"))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        cache.store("d1", &component(&engine));
        assert!(cache.load(&engine, "d1").is_some(), "intact artifact loads");
        let path = cache.path_for("d1");
        let mut bytes = std::fs::read(&path).expect("artifact");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("tamper");
        assert!(
            cache.load(&engine, "d1").is_none(),
            "tampered artifact refused"
        );
        assert!(!path.exists(), "and removed");
    }
}
