//! Secret values from configuration: `env:VAR`, `file:/path` or the literal value, and
//! (`oauth2`) access tokens the host mints and renews.
//!
//! Resolved when the configuration is read, so a missing variable is a start-up error
//! naming the key. `Debug` never shows a value, so secrets cannot reach logs by accident.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

pub mod oauth2;

/// A resolved secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a resolved value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// Resolve a reference: `env:VAR`, `file:/path` (trailing newline trimmed) or a
    /// literal value.
    pub fn resolve(reference: &str) -> Result<Self, String> {
        if let Some(var) = reference.strip_prefix("env:") {
            return std::env::var(var)
                .map(Self::new)
                .map_err(|_| format!("environment variable `{var}` is not set"));
        }
        if let Some(path) = reference.strip_prefix("file:") {
            return std::fs::read_to_string(path)
                .map(|text| Self::new(text.trim_end_matches(['\n', '\r'])))
                .map_err(|error| format!("cannot read secret file `{path}`: {error}"));
        }
        Ok(Self::new(reference))
    }

    /// The value, for the native code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(deserializer)?;
        Self::resolve(&reference).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_env_and_file() {
        assert_eq!(
            Secret::resolve("whsec_abc").expect("literal").expose(),
            "whsec_abc"
        );
        assert!(Secret::resolve("env:OMNIGATE_TEST_SURELY_UNSET_VAR").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "v4lue\n").expect("write");
        let secret = Secret::resolve(&format!("file:{}", path.display())).expect("file");
        assert_eq!(secret.expose(), "v4lue");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
