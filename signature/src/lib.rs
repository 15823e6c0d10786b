//! Webhook signature schemes, computed natively and compared in constant time.
//!
//! The omnigate host uses this crate to answer a plugin's `verify` and `sign` imports (the
//! secret never enters the plugin) and to sign its own deliveries with Standard Webhooks;
//! the SDK's test harness uses it so plugins are tested against the same code.
//!
//! ```
//! use omnigate_signature::{sign, verify, Scheme};
//!
//! let header = sign(Scheme::HmacSha256Prefixed, b"secret", b"body")?;
//! assert!(header.starts_with("sha256="));
//! assert!(verify(Scheme::HmacSha256Prefixed, b"secret", b"body", &header)?);
//! assert!(!verify(Scheme::HmacSha256Prefixed, b"secret", b"other", &header)?);
//! # Ok::<(), omnigate_signature::SecretError>(())
//! ```

#![warn(missing_docs)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A signature scheme: how the MAC is computed and how it is written in a header.
///
/// The variants mirror `signature-scheme` in the plugin contract (`wit/0.1.0/channel.wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// HMAC-SHA256 as hex (Shopify-style, Slack without prefix). Verify accepts either case.
    HmacSha256Hex,
    /// HMAC-SHA256 as standard base64.
    HmacSha256Base64,
    /// HMAC-SHA256 as `sha256=<hex>` (Meta's `X-Hub-Signature-256`, GitHub).
    HmacSha256Prefixed,
    /// HMAC-SHA1 as standard base64 (Twilio's `X-Twilio-Signature`).
    HmacSha1Base64,
    /// Standard Webhooks: the secret is `whsec_<base64>` (or bare base64), the message is
    /// already `id.timestamp.body`, the signature is one or more space-separated
    /// `v1,<base64>` entries.
    StandardWebhooks,
    /// Slack: the message is already `v0:timestamp:body`, the signature is `v0=<hex>`.
    SlackV0,
    /// Constant-time equality of the presented value with the secret; the message is
    /// ignored. Only the *length* of the secret can leak through timing.
    Equals,
}

/// Why a secret cannot be used with a scheme.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret's value does not fit the scheme. The message never contains the secret.
    #[error("malformed secret: {0}")]
    Malformed(String),
}

/// Constant-time check of `signature` over `message` with `secret`.
///
/// Returns `Ok(false)` for a wrong or undecodable signature (bad hex or base64, missing
/// prefix) and `Err` only when the secret itself is unusable: empty, or for
/// [`Scheme::StandardWebhooks`] not a `whsec_<base64>` / base64 key. An empty secret is
/// refused for every scheme, so a missing configuration value can never make an empty
/// signature match.
pub fn verify(
    scheme: Scheme,
    secret: &[u8],
    message: &[u8],
    signature: &str,
) -> Result<bool, SecretError> {
    check_not_empty(secret)?;
    Ok(match scheme {
        Scheme::HmacSha256Hex => verify_hex::<Hmac<Sha256>>(secret, message, signature)?,
        Scheme::HmacSha256Base64 => verify_base64::<Hmac<Sha256>>(secret, message, signature)?,
        Scheme::HmacSha256Prefixed => match signature.strip_prefix("sha256=") {
            Some(hex) => verify_hex::<Hmac<Sha256>>(secret, message, hex)?,
            None => false,
        },
        Scheme::HmacSha1Base64 => verify_base64::<Hmac<Sha1>>(secret, message, signature)?,
        Scheme::StandardWebhooks => {
            let key = standard_webhooks::decode_secret(secret_str(secret)?)?;
            let mut matched = false;
            for entry in signature.split_whitespace() {
                if let Some(("v1", b64)) = entry.split_once(',') {
                    // No early exit: every entry costs the same whatever matched.
                    matched |= verify_base64::<Hmac<Sha256>>(&key, message, b64)?;
                }
            }
            matched
        }
        Scheme::SlackV0 => match signature.strip_prefix("v0=") {
            Some(hex) => verify_hex::<Hmac<Sha256>>(secret, message, hex)?,
            None => false,
        },
        // `subtle` compares equal-length slices in constant time and returns early on a
        // length mismatch: the secret's length may leak, its content does not.
        Scheme::Equals => bool::from(signature.as_bytes().ct_eq(secret)),
    })
}

/// The signature of `message` with `secret`, formatted as the scheme's header value:
/// lowercase hex, base64, `sha256=<hex>`, `v1,<base64>` or `v0=<hex>`.
///
/// [`Scheme::Equals`] cannot sign and returns [`SecretError::Malformed`].
pub fn sign(scheme: Scheme, secret: &[u8], message: &[u8]) -> Result<String, SecretError> {
    check_not_empty(secret)?;
    Ok(match scheme {
        Scheme::HmacSha256Hex => hex::encode(mac::<Hmac<Sha256>>(secret, message)?),
        Scheme::HmacSha256Base64 => BASE64.encode(mac::<Hmac<Sha256>>(secret, message)?),
        Scheme::HmacSha256Prefixed => {
            format!(
                "sha256={}",
                hex::encode(mac::<Hmac<Sha256>>(secret, message)?)
            )
        }
        Scheme::HmacSha1Base64 => BASE64.encode(mac::<Hmac<Sha1>>(secret, message)?),
        Scheme::StandardWebhooks => {
            let key = standard_webhooks::decode_secret(secret_str(secret)?)?;
            format!("v1,{}", BASE64.encode(mac::<Hmac<Sha256>>(&key, message)?))
        }
        Scheme::SlackV0 => format!("v0={}", hex::encode(mac::<Hmac<Sha256>>(secret, message)?)),
        Scheme::Equals => return Err(SecretError::Malformed("equals cannot sign".into())),
    })
}

/// The credentials of HTTP Basic authentication (RFC 7617): `base64(user:password)`, the
/// text after `Basic ` in an `Authorization` header. The host builds it for a plugin's
/// `{{basic:USER:NAME}}` placeholder, so the password (a channel secret) never enters the
/// plugin.
pub fn basic_credentials(user: &str, password: &[u8]) -> String {
    let mut plain = Vec::with_capacity(user.len() + 1 + password.len());
    plain.extend_from_slice(user.as_bytes());
    plain.push(b':');
    plain.extend_from_slice(password);
    BASE64.encode(plain)
}

/// Helpers for [Standard Webhooks](https://www.standardwebhooks.com/), also used by the
/// host to sign its deliveries.
pub mod standard_webhooks {
    use super::{BASE64, SecretError};
    use base64::Engine as _;

    /// The signed content: `"{id}.{timestamp}.{body}"`.
    pub fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut content = format!("{id}.{timestamp}.").into_bytes();
        content.extend_from_slice(body);
        content
    }

    /// Decodes a `whsec_<base64>` (or bare base64) secret into key bytes.
    pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64.decode(encoded).map_err(|_| {
            SecretError::Malformed("not a Standard Webhooks key (whsec_<base64>)".into())
        })?;
        if key.is_empty() {
            return Err(SecretError::Malformed(
                "Standard Webhooks key is empty".into(),
            ));
        }
        Ok(key)
    }
}

fn check_not_empty(secret: &[u8]) -> Result<(), SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Malformed("secret is empty".into()));
    }
    Ok(())
}

fn secret_str(secret: &[u8]) -> Result<&str, SecretError> {
    std::str::from_utf8(secret)
        .map_err(|_| SecretError::Malformed("Standard Webhooks secret is not UTF-8".into()))
}

fn keyed<M: Mac + KeyInit>(secret: &[u8], message: &[u8]) -> Result<M, SecretError> {
    let mut mac = <M as KeyInit>::new_from_slice(secret)
        .map_err(|_| SecretError::Malformed("key length not accepted".into()))?;
    mac.update(message);
    Ok(mac)
}

fn mac<M: Mac + KeyInit>(secret: &[u8], message: &[u8]) -> Result<Vec<u8>, SecretError> {
    Ok(keyed::<M>(secret, message)?
        .finalize()
        .into_bytes()
        .to_vec())
}

fn verify_hex<M: Mac + KeyInit>(
    secret: &[u8],
    message: &[u8],
    signature: &str,
) -> Result<bool, SecretError> {
    let Ok(tag) = hex::decode(signature) else {
        return Ok(false);
    };
    Ok(keyed::<M>(secret, message)?.verify_slice(&tag).is_ok())
}

fn verify_base64<M: Mac + KeyInit>(
    secret: &[u8],
    message: &[u8],
    signature: &str,
) -> Result<bool, SecretError> {
    let Ok(tag) = BASE64.decode(signature) else {
        return Ok(false);
    };
    Ok(keyed::<M>(secret, message)?.verify_slice(&tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Scheme; 7] = [
        Scheme::HmacSha256Hex,
        Scheme::HmacSha256Base64,
        Scheme::HmacSha256Prefixed,
        Scheme::HmacSha1Base64,
        Scheme::StandardWebhooks,
        Scheme::SlackV0,
        Scheme::Equals,
    ];
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn secret_for(scheme: Scheme) -> &'static [u8] {
        match scheme {
            Scheme::StandardWebhooks => WHSEC.as_bytes(),
            _ => b"It's a Secret to Everybody",
        }
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        let content = standard_webhooks::signed_content(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            sign(Scheme::StandardWebhooks, WHSEC.as_bytes(), &content),
            Ok(expected.into())
        );
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                WHSEC.as_bytes(),
                &content,
                expected
            ),
            Ok(true)
        );
        // The bare base64 key works too.
        let bare = WHSEC.trim_start_matches("whsec_").as_bytes();
        assert_eq!(
            verify(Scheme::StandardWebhooks, bare, &content, expected),
            Ok(true)
        );
    }

    #[test]
    fn standard_webhooks_rotation_and_other_versions() {
        let content = b"msg_1.1614265330.{}";
        let good = sign(Scheme::StandardWebhooks, WHSEC.as_bytes(), content).expect("sign");
        let b64 = good.trim_start_matches("v1,");
        let several = format!("v1,AAAA v1a,{b64} {good}");
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                WHSEC.as_bytes(),
                content,
                &several
            ),
            Ok(true)
        );
        // The right MAC under another version tag is ignored.
        let other = format!("v2,{b64} v1,bm90IGl0");
        assert_eq!(
            verify(Scheme::StandardWebhooks, WHSEC.as_bytes(), content, &other),
            Ok(false)
        );
        assert_eq!(
            verify(Scheme::StandardWebhooks, WHSEC.as_bytes(), content, ""),
            Ok(false)
        );
    }

    #[test]
    fn standard_webhooks_malformed_secret() {
        for bad in ["whsec_not base64!", "", "whsec_"] {
            let result = verify(Scheme::StandardWebhooks, bad.as_bytes(), b"m", "v1,AAAA");
            assert!(
                matches!(result, Err(SecretError::Malformed(_))),
                "{bad:?}: {result:?}"
            );
            assert!(matches!(
                sign(Scheme::StandardWebhooks, bad.as_bytes(), b"m"),
                Err(SecretError::Malformed(_))
            ));
        }
        // The error never echoes the secret.
        let Err(SecretError::Malformed(reason)) = standard_webhooks::decode_secret("whsec_s3cr3t!")
        else {
            panic!("expected malformed");
        };
        assert!(!reason.contains("s3cr3t"));
    }

    #[test]
    fn slack_documented_example() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let basestring = "v0:1531420618:token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(
            sign(Scheme::SlackV0, secret, basestring.as_bytes()),
            Ok(expected.into())
        );
        assert_eq!(
            verify(Scheme::SlackV0, secret, basestring.as_bytes(), expected),
            Ok(true)
        );
        let hex = expected.trim_start_matches("v0=");
        assert_eq!(
            verify(Scheme::SlackV0, secret, basestring.as_bytes(), hex),
            Ok(false)
        );
        assert_eq!(
            verify(Scheme::HmacSha256Hex, secret, basestring.as_bytes(), hex),
            Ok(true)
        );
    }

    #[test]
    fn twilio_documented_example() {
        // twilio.com/docs/usage/security: URL, then the POST parameters sorted by name,
        // each name followed by its value.
        let message = "https://mycompany.com/myapp.php?foo=1&bar=2\
                       CallSidCA1234567890ABCDECaller+12349013030Digits1234\
                       From+12349013030To+18005551212";
        let expected = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert_eq!(
            sign(Scheme::HmacSha1Base64, b"12345", message.as_bytes()),
            Ok(expected.into())
        );
        assert_eq!(
            verify(
                Scheme::HmacSha1Base64,
                b"12345",
                message.as_bytes(),
                expected
            ),
            Ok(true)
        );
    }

    #[test]
    fn basic_credentials_rfc7617_example() {
        // RFC 7617 section 2: user "Aladdin", password "open sesame".
        assert_eq!(
            basic_credentials("Aladdin", b"open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn github_documented_example() {
        // docs.github.com "Validating webhook deliveries".
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let secret = b"It's a Secret to Everybody";
        assert_eq!(
            sign(Scheme::HmacSha256Prefixed, secret, b"Hello, World!"),
            Ok(expected.into())
        );
        assert_eq!(
            verify(
                Scheme::HmacSha256Prefixed,
                secret,
                b"Hello, World!",
                expected
            ),
            Ok(true)
        );
        // Hex is compared as bytes, so upper case verifies too.
        let upper = format!("sha256={}", expected[7..].to_uppercase());
        assert_eq!(
            verify(Scheme::HmacSha256Prefixed, secret, b"Hello, World!", &upper),
            Ok(true)
        );
    }

    #[test]
    fn every_signing_scheme_round_trips_and_rejects_tampering() {
        for scheme in ALL.into_iter().filter(|s| *s != Scheme::Equals) {
            let secret = secret_for(scheme);
            let signature = sign(scheme, secret, b"payload").expect("sign");
            assert_eq!(
                verify(scheme, secret, b"payload", &signature),
                Ok(true),
                "{scheme:?}"
            );
            assert_eq!(
                verify(scheme, secret, b"payload!", &signature),
                Ok(false),
                "{scheme:?}"
            );
            let other_secret: &[u8] = match scheme {
                Scheme::StandardWebhooks => b"whsec_b3RoZXIga2V5",
                _ => b"another secret",
            };
            assert_eq!(
                verify(scheme, other_secret, b"payload", &signature),
                Ok(false)
            );
        }
    }

    #[test]
    fn garbage_signatures_are_false_not_errors() {
        for scheme in ALL {
            let secret = secret_for(scheme);
            for garbage in [
                "",
                "zz",
                "sha256=",
                "v0=xyz",
                "v1,%%%",
                "not base64!",
                "sha256=abc",
            ] {
                assert_eq!(
                    verify(scheme, secret, b"payload", garbage),
                    Ok(false),
                    "{scheme:?}"
                );
            }
        }
    }

    #[test]
    fn equals_compares_the_secret_and_cannot_sign() {
        assert_eq!(
            verify(Scheme::Equals, b"tok-123", b"ignored", "tok-123"),
            Ok(true)
        );
        assert_eq!(
            verify(Scheme::Equals, b"tok-123", b"", "tok-124"),
            Ok(false)
        );
        assert_eq!(
            verify(Scheme::Equals, b"tok-123", b"", "tok-1234"),
            Ok(false)
        );
        assert_eq!(
            sign(Scheme::Equals, b"tok-123", b""),
            Err(SecretError::Malformed("equals cannot sign".into()))
        );
    }

    #[test]
    fn empty_secret_is_refused() {
        for scheme in ALL {
            assert!(matches!(
                verify(scheme, b"", b"m", ""),
                Err(SecretError::Malformed(_))
            ));
            assert!(matches!(
                sign(scheme, b"", b"m"),
                Err(SecretError::Malformed(_))
            ));
        }
    }
}
