//! `{{secret:NAME}}` placeholders: filled in by the host after the allow-list check, and
//! the filled values redacted from whatever comes back.

use std::collections::BTreeMap;

use crate::secret::Secret;

const OPEN: &[u8] = b"{{secret:";
const CLOSE: &[u8] = b"}}";
const REDACTED: &[u8] = b"[redacted]";

/// Fills placeholders from a channel's secrets and remembers which values it used.
pub struct Filler<'a> {
    secrets: &'a BTreeMap<String, Secret>,
    used: Vec<&'a Secret>,
}

impl<'a> Filler<'a> {
    /// A filler over `secrets`.
    pub fn new(secrets: &'a BTreeMap<String, Secret>) -> Self {
        Self {
            secrets,
            used: Vec::new(),
        }
    }

    /// `input` with every placeholder replaced; `Err(name)` for an unknown secret.
    pub fn fill(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len());
        let mut rest = input;
        while let Some(start) = find(rest, OPEN) {
            out.extend_from_slice(&rest[..start]);
            let after = &rest[start + OPEN.len()..];
            let Some(end) = find(after, CLOSE) else {
                // An unterminated placeholder is ordinary text.
                out.extend_from_slice(&rest[start..]);
                return Ok(out);
            };
            let name = String::from_utf8_lossy(&after[..end]).into_owned();
            let secret = self.secrets.get(name.as_str()).ok_or(name)?;
            out.extend_from_slice(secret.expose().as_bytes());
            if !self.used.contains(&secret) {
                self.used.push(secret);
            }
            rest = &after[end + CLOSE.len()..];
        }
        out.extend_from_slice(rest);
        Ok(out)
    }

    /// [`Self::fill`] for text.
    pub fn fill_str(&mut self, input: &str) -> Result<String, String> {
        let filled = self.fill(input.as_bytes())?;
        // Secrets are UTF-8 (they come from config text), so this cannot fail in practice.
        String::from_utf8(filled).map_err(|_| "a secret is not valid UTF-8".to_owned())
    }

    /// `bytes` with every secret value used so far replaced by `[redacted]`.
    pub fn redact(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.used.iter().fold(bytes, |acc, secret| {
            replace_all(&acc, secret.expose().as_bytes(), REDACTED)
        })
    }

    /// [`Self::redact`] for text.
    pub fn redact_str(&self, text: String) -> String {
        if self.used.is_empty() {
            return text;
        }
        String::from_utf8_lossy(&self.redact(text.into_bytes())).into_owned()
    }
}

/// Whether `input` holds a placeholder.
pub fn contains_placeholder(input: &str) -> bool {
    find(input.as_bytes(), OPEN).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> BTreeMap<String, Secret> {
        BTreeMap::from([("token".to_owned(), Secret::new("s3cr3t-value"))])
    }

    #[test]
    fn fills_and_redacts() {
        let secrets = secrets();
        let mut filler = Filler::new(&secrets);
        let filled = filler
            .fill_str("https://api.example/bot{{secret:token}}/send")
            .expect("known secret");
        assert_eq!(filled, "https://api.example/bots3cr3t-value/send");
        let echoed = filler.redact(b"you sent s3cr3t-value twice: s3cr3t-value".to_vec());
        assert_eq!(echoed, b"you sent [redacted] twice: [redacted]");
    }

    #[test]
    fn unknown_secret_is_refused() {
        let secrets = secrets();
        let mut filler = Filler::new(&secrets);
        assert_eq!(filler.fill(b"{{secret:other}}"), Err("other".to_owned()));
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let secrets = secrets();
        let mut filler = Filler::new(&secrets);
        assert_eq!(
            filler.fill(b"{{secret:token").expect("ok"),
            b"{{secret:token"
        );
        assert_eq!(filler.redact(b"s3cr3t-value".to_vec()), b"s3cr3t-value");
    }
}
