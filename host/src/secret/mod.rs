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

/// A secret as configured: a value (`env:`/`file:`/literal), or `{ oauth2 = { … } }`,
/// whose access tokens the host mints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSpec {
    /// A resolved value.
    Value(Secret),
    /// Access tokens minted from a refresh token.
    OAuth2(oauth2::OAuth2Config),
}

impl<'de> Deserialize<'de> for SecretSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

impl<'de> serde::de::Visitor<'de> for SpecVisitor {
    type Value = SecretSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret (`env:VAR`, `file:/path` or a value) or `{ oauth2 = { … } }`")
    }

    fn visit_str<E: serde::de::Error>(self, reference: &str) -> Result<SecretSpec, E> {
        Secret::resolve(reference)
            .map(SecretSpec::Value)
            .map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SecretSpec, A::Error> {
        use serde::de::Error as _;
        let Some(key) = map.next_key::<String>()? else {
            return Err(A::Error::custom("an empty table is not a secret"));
        };
        if key != "oauth2" {
            return Err(A::Error::custom(format!(
                "unknown secret provider `{key}` (expected `oauth2`)"
            )));
        }
        let config = map.next_value::<oauth2::OAuth2Config>()?;
        if map.next_key::<String>()?.is_some() {
            return Err(A::Error::custom("a secret has one provider"));
        }
        Ok(SecretSpec::OAuth2(config))
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

    #[derive(Debug, Deserialize)]
    struct Secrets {
        secrets: std::collections::BTreeMap<String, SecretSpec>,
    }

    #[test]
    fn specs_are_values_or_oauth2() {
        let parsed: Secrets = toml::from_str(
            r#"
            [secrets]
            plain = "abc"
            access_token = { oauth2 = { token_url = "https://oauth2.example/token", client_id = "id", client_secret = "cs", refresh_token = "rt", scopes = ["s1"] } }
            "#,
        )
        .expect("valid");
        assert_eq!(
            parsed.secrets["plain"],
            SecretSpec::Value(Secret::new("abc"))
        );
        let SecretSpec::OAuth2(config) = &parsed.secrets["access_token"] else {
            panic!("not oauth2: {:?}", parsed.secrets["access_token"]);
        };
        assert_eq!(config.scopes, ["s1"]);
        assert_eq!(config.refresh_token.expose(), "rt");
        for (bad, named) in [
            (
                r#"x = { vault = { path = "a" } }"#,
                "unknown secret provider `vault`",
            ),
            (r#"x = { oauth2 = { token_url = "u" } }"#, "client_id"),
            (
                r#"x = { oauth2 = { token_url = "u", client_id = "c", client_secret = "s", refresh_token = "r", scope = [] } }"#,
                "scope",
            ),
        ] {
            let error = toml::from_str::<Secrets>(&format!("[secrets]\n{bad}"))
                .expect_err(bad)
                .to_string();
            assert!(error.contains(named), "{bad}: {error}");
        }
    }
}
