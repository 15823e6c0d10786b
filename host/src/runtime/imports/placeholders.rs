//! `{{secret:NAME}}` placeholders: filled in by the host after the allow-list check, and
//! the filled values redacted from whatever comes back.
//!
//! `{{basic:USER:NAME}}` is filled with the credentials of HTTP Basic authentication,
//! `base64(USER:<secret NAME>)`, for APIs that take a secret as a Basic password (Twilio,
//! Mailgun): the plugin cannot base64 a value it never sees. Every rule of a secret
//! placeholder (allow-list, `secrets_hosts`, redaction) applies to it alike.

use std::collections::BTreeMap;

use crate::secret::Secret;

const OPEN: &[u8] = b"{{secret:";
const BASIC_OPEN: &[u8] = b"{{basic:";
const CLOSE: &[u8] = b"}}";
const REDACTED: &[u8] = b"[redacted]";

/// Fills placeholders from a channel's secrets and remembers which values it used.
pub struct Filler<'a> {
    secrets: &'a BTreeMap<String, Secret>,
    used: Vec<&'a Secret>,
    names: Vec<String>,
}

impl<'a> Filler<'a> {
    /// A filler over `secrets`.
    pub fn new(secrets: &'a BTreeMap<String, Secret>) -> Self {
        Self {
            secrets,
            used: Vec::new(),
            names: Vec::new(),
        }
    }

    /// `input` with every placeholder replaced; `Err(name)` for an unknown secret (for a
    /// Basic placeholder without `USER:`, its whole inside).
    pub fn fill(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len());
        let mut rest = input;
        while let Some((start, open)) = next_placeholder(rest) {
            out.extend_from_slice(&rest[..start]);
            let after = &rest[start + open.len()..];
            let Some(end) = find(after, CLOSE) else {
                // An unterminated placeholder is ordinary text.
                out.extend_from_slice(&rest[start..]);
                return Ok(out);
            };
            let inside = String::from_utf8_lossy(&after[..end]).into_owned();
            let value = if open == BASIC_OPEN {
                let (user, name) = inside
                    .split_once(':')
                    .ok_or_else(|| format!("basic:{inside}"))?;
                let secret = self.secret(name)?;
                omnigate_signature::basic_credentials(user, secret.expose().as_bytes())
            } else {
                self.secret(&inside)?.expose().to_owned()
            };
            out.extend_from_slice(value.as_bytes());
            rest = &after[end + CLOSE.len()..];
        }
        out.extend_from_slice(rest);
        Ok(out)
    }

    /// The secret called `name`, remembered as used (for redaction and scope checks).
    fn secret(&mut self, name: &str) -> Result<&'a Secret, String> {
        let secret = self.secrets.get(name).ok_or_else(|| name.to_owned())?;
        if !self.used.contains(&secret) {
            self.used.push(secret);
        }
        if !self.names.iter().any(|have| have == name) {
            self.names.push(name.to_owned());
        }
        Ok(secret)
    }

    /// The names of the secrets filled in so far.
    pub fn filled_names(&self) -> &[String] {
        &self.names
    }

    /// [`Self::fill`] for text.
    pub fn fill_str(&mut self, input: &str) -> Result<String, String> {
        let filled = self.fill(input.as_bytes())?;
        // Secrets are UTF-8 (they come from config text), so this cannot fail in practice.
        String::from_utf8(filled).map_err(|_| "a secret is not valid UTF-8".to_owned())
    }

    /// `bytes` with every secret value used so far replaced by `[redacted]`, in each
    /// form a server could echo it back in (see [`encodings`]).
    pub fn redact(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.used.iter().fold(bytes, |acc, secret| {
            encodings(secret.expose().as_bytes())
                .iter()
                .fold(acc, |acc, form| replace_all(&acc, form, REDACTED))
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

/// Shortest encoded form worth redacting: shorter pieces (a base64 core of a tiny
/// secret) would blank out unrelated text.
const MIN_FORM: usize = 4;

/// The forms a secret may come back in, longest first: as is; JSON-escaped (also with
/// `\/`); percent-encoded (`%20` or `+` for spaces, upper- and lower-case hex); hex;
/// base64 and base64url, padded or not, and the part of the secret's encoding that is
/// the same wherever it sits inside a longer base64 text (e.g. `user:secret` in Basic
/// auth), at each of the three byte alignments.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms: Vec<Vec<u8>> = vec![secret.to_vec()];
    if let Ok(text) = std::str::from_utf8(secret) {
        let json = serde_json::to_string(text).unwrap_or_default();
        let json = json.trim_matches('"').to_owned();
        forms.push(json.replace('/', "\\/").into_bytes());
        forms.push(json.into_bytes());
    }
    let form: String = url::form_urlencoded::byte_serialize(secret).collect();
    let percent = form.replace('+', "%20");
    forms.push(lower_percent_hex(&percent).into_bytes());
    forms.push(percent.into_bytes());
    forms.push(form.into_bytes());
    forms.push(hex::encode(secret).into_bytes());
    forms.push(hex::encode_upper(secret).into_bytes());
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(secret).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = engine.encode(&shifted).into_bytes();
            // Characters mixing in bits of the bytes before or after are left out.
            let skip = [0, 2, 3][offset];
            let end = if shifted.len() % 3 == 0 {
                encoded.len()
            } else {
                encoded.len().saturating_sub(1)
            };
            if end > skip {
                forms.push(encoded[skip..end].to_vec());
            }
        }
    }
    forms.retain(|form| form.len() >= MIN_FORM.min(secret.len()) && !form.is_empty());
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    forms
}

/// `%2F` → `%2f`: servers echo either case.
fn lower_percent_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hex_left = 0;
    for c in text.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `input` holds a placeholder (either form).
pub fn contains_placeholder(input: &str) -> bool {
    next_placeholder(input.as_bytes()).is_some()
}

/// Where the first placeholder of either form starts, and its opening tag.
fn next_placeholder(input: &[u8]) -> Option<(usize, &'static [u8])> {
    [OPEN, BASIC_OPEN]
        .into_iter()
        .filter_map(|open| find(input, open).map(|at| (at, open)))
        .min_by_key(|(at, _)| *at)
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
    fn encoded_echoes_are_redacted() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let secrets =
            BTreeMap::from([("token".to_owned(), Secret::new("tok/en+with spaces&\"q\""))]);
        let mut filler = Filler::new(&secrets);
        filler.fill(b"{{secret:token}}").expect("known secret");
        let value = "tok/en+with spaces&\"q\"";
        let basic = STANDARD.encode(format!("user:{value}"));
        for echo in [
            serde_json::to_string(value).expect("json"),
            serde_json::to_string(value)
                .expect("json")
                .replace('/', "\\/"),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>(),
            "tok%2Fen%2Bwith%20spaces%26%22q%22".to_owned(),
            "tok%2fen%2bwith%20spaces%26%22q%22".to_owned(),
            hex::encode(value),
            hex::encode_upper(value),
            STANDARD.encode(value),
            basic.clone(),
        ] {
            let redacted =
                String::from_utf8(filler.redact(echo.clone().into_bytes())).expect("utf-8");
            assert!(redacted.contains("[redacted]"), "{echo} → {redacted}");
            assert!(!redacted.contains("with spaces"), "{echo} → {redacted}");
            let decoded = STANDARD.decode(redacted.as_bytes()).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&decoded).contains("with spaces"),
                "{echo} → {redacted}"
            );
        }
        // Text that merely resembles the secret is left alone.
        assert_eq!(
            filler.redact(b"token with spaces".to_vec()),
            b"token with spaces"
        );
    }

    #[test]
    fn basic_placeholders_fill_credentials_and_redact_them() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let secrets = secrets();
        let mut filler = Filler::new(&secrets);
        let filled = filler
            .fill_str("Basic {{basic:AC123:token}}")
            .expect("known secret");
        let expected = STANDARD.encode("AC123:s3cr3t-value");
        assert_eq!(filled, format!("Basic {expected}"));
        assert_eq!(filler.filled_names(), ["token".to_owned()]);
        // The credentials echoed back are redacted like the secret itself.
        let echoed = filler.redact(format!("auth {expected} failed").into_bytes());
        assert!(
            !String::from_utf8_lossy(&echoed).contains(&expected),
            "{echoed:?}"
        );
        assert!(contains_placeholder("x {{basic:u:token}}"));
        assert_eq!(
            filler.fill(b"{{basic:AC123:other}}"),
            Err("other".to_owned())
        );
        assert_eq!(
            filler.fill(b"{{basic:token}}"),
            Err("basic:token".to_owned())
        );
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
