//! Plugin signatures: ed25519 over the 32 bytes of a version's SHA-256 digest.
//!
//! `[admin] signing_keys` names the public keys an uploaded version may be signed by;
//! with keys configured, an uploaded version is activated only when its signature (sent
//! with the upload, kept with its record in the shared registry) verifies under one of
//! them, unless `[admin] allow_unsigned` says otherwise. Versions from the operator's own
//! config files are not checked: whoever edits the config already chooses the code.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// Why a version may not be activated under the signing policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature came with the version, and unsigned versions are not allowed.
    #[error(
        "plugin `{digest}` is not signed, and [admin] signing_keys requires a signature \
         (upload it with `x-omnigate-signature`, from `omnigate plugin sign`)"
    )]
    Required {
        /// The version's digest.
        digest: String,
    },
    /// A signature came with the version, but no configured key verifies it (or it is
    /// not an ed25519 signature at all).
    #[error("plugin `{digest}`: {reason}")]
    Bad {
        /// The version's digest.
        digest: String,
        /// What is wrong with the signature.
        reason: String,
    },
}

/// The configured keys and whether unsigned uploads may be activated.
#[derive(Debug, Clone)]
pub struct SigningPolicy {
    keys: Vec<VerifyingKey>,
    allow_unsigned: bool,
}

/// No keys, unsigned allowed: what an `[admin]` section without `signing_keys` means.
impl Default for SigningPolicy {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            allow_unsigned: true,
        }
    }
}

impl SigningPolicy {
    /// From `[admin] signing_keys` (base64 or hex public keys) and `allow_unsigned`
    /// (default: true with no keys, false with keys). `Err` names the bad key.
    pub fn new(keys: &[String], allow_unsigned: Option<bool>) -> Result<Self, String> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                public_key(key).map_err(|reason| format!("[admin] signing_keys[{index}]: {reason}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow_unsigned = allow_unsigned.unwrap_or(keys.is_empty());
        Ok(Self {
            keys,
            allow_unsigned,
        })
    }

    /// Whether version `digest` (SHA-256, hex) with `signature` (base64 or hex) may be
    /// activated.
    pub fn check(&self, digest: &str, signature: Option<&str>) -> Result<(), SignatureError> {
        let Some(signature) = signature else {
            return if self.allow_unsigned {
                Ok(())
            } else {
                Err(SignatureError::Required {
                    digest: digest.to_owned(),
                })
            };
        };
        if self.keys.is_empty() {
            // Nothing to verify against: a signature is kept, not trusted.
            return Ok(());
        }
        let bad = |reason: String| SignatureError::Bad {
            digest: digest.to_owned(),
            reason,
        };
        let message = digest_bytes(digest).map_err(bad)?;
        let signature = parse_signature(signature).map_err(bad)?;
        if self
            .keys
            .iter()
            .any(|key| key.verify(&message, &signature).is_ok())
        {
            Ok(())
        } else {
            Err(bad(
                "the signature does not verify under any of [admin] signing_keys".to_owned(),
            ))
        }
    }
}

/// Sign the wasm `bytes` with `key`: the base64 signature of their SHA-256 digest, as
/// `omnigate plugin sign` prints it.
pub fn sign_wasm(bytes: &[u8], key: &SigningKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    STANDARD.encode(key.sign(&digest[..]).to_bytes())
}

/// The public key of `key`, base64, as `[admin] signing_keys` takes it.
pub fn public_key_text(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}

/// Sign `digest` (SHA-256, hex) with `key`: the base64 signature.
pub fn sign(digest: &str, key: &SigningKey) -> Result<String, String> {
    let message = digest_bytes(digest)?;
    Ok(STANDARD.encode(key.sign(&message).to_bytes()))
}

/// A private key file's content: the 32-byte ed25519 seed, base64 or hex (surrounding
/// whitespace ignored).
pub fn private_key(text: &str) -> Result<SigningKey, String> {
    let bytes: [u8; 32] = key_bytes(text, "private key")?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A public key, base64 or hex of its 32 bytes.
pub fn public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = key_bytes(text, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 public key".to_owned())
}

/// A signature, base64 or hex of its 64 bytes.
fn parse_signature(text: &str) -> Result<Signature, String> {
    let bytes = decode(text).ok_or_else(|| "the signature is neither base64 nor hex".to_owned())?;
    Signature::from_slice(&bytes)
        .map_err(|_| format!("the signature has {} bytes, not 64", bytes.len()))
}

fn key_bytes<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = decode(text).ok_or_else(|| format!("the {what} is neither base64 nor hex"))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("the {what} has {len} bytes, not {N}"))
}

/// Hex first (a 64-character hex text is also valid base64, with another meaning).
fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    hex::decode(text)
        .ok()
        .or_else(|| STANDARD.decode(text).ok())
}

fn digest_bytes(digest: &str) -> Result<Vec<u8>, String> {
    hex::decode(digest)
        .ok()
        .filter(|bytes| bytes.len() == 32)
        .ok_or_else(|| format!("`{digest}` is not a SHA-256 digest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn policy(keys: &[&SigningKey], allow_unsigned: Option<bool>) -> SigningPolicy {
        let keys: Vec<String> = keys
            .iter()
            .map(|key| STANDARD.encode(key.verifying_key().to_bytes()))
            .collect();
        SigningPolicy::new(&keys, allow_unsigned).expect("valid keys")
    }

    #[test]
    fn a_signature_by_a_configured_key_verifies() {
        let signer = key(1);
        let signature = sign(DIGEST, &signer).expect("sign");
        let policy = policy(&[&key(2), &signer], None);
        assert_eq!(policy.check(DIGEST, Some(&signature)), Ok(()));
        // Hex works as well as base64.
        let hex_signature = hex::encode(STANDARD.decode(&signature).expect("base64"));
        assert_eq!(policy.check(DIGEST, Some(&hex_signature)), Ok(()));
    }

    #[test]
    fn signing_the_wasm_signs_its_digest() {
        use sha2::Digest as _;
        let signer = key(5);
        let wasm = b"\0asm not really";
        let digest = hex::encode(sha2::Sha256::digest(wasm));
        let policy = SigningPolicy::new(&[public_key_text(&signer)], None).expect("key");
        assert_eq!(
            policy.check(&digest, Some(&sign_wasm(wasm, &signer))),
            Ok(())
        );
    }

    #[test]
    fn another_key_another_digest_or_garbage_is_bad() {
        let policy = policy(&[&key(1)], None);
        let by_other = sign(DIGEST, &key(3)).expect("sign");
        let other_digest = sign(&"00".repeat(32), &key(1)).expect("sign");
        for signature in [
            by_other.as_str(),
            other_digest.as_str(),
            "not a signature",
            "AAAA",
        ] {
            assert!(
                matches!(
                    policy.check(DIGEST, Some(signature)),
                    Err(SignatureError::Bad { .. })
                ),
                "{signature}"
            );
        }
    }

    #[test]
    fn unsigned_is_refused_once_keys_are_configured_unless_allowed() {
        assert!(matches!(
            policy(&[&key(1)], None).check(DIGEST, None),
            Err(SignatureError::Required { .. })
        ));
        assert_eq!(policy(&[&key(1)], Some(true)).check(DIGEST, None), Ok(()));
        assert_eq!(policy(&[], None).check(DIGEST, None), Ok(()));
        assert_eq!(SigningPolicy::default().check(DIGEST, None), Ok(()));
        assert!(matches!(
            policy(&[], Some(false)).check(DIGEST, None),
            Err(SignatureError::Required { .. })
        ));
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_bad_ones_are_named() {
        let public = key(1).verifying_key().to_bytes();
        assert!(public_key(&hex::encode(public)).is_ok());
        assert!(public_key(&format!(" {}\n", STANDARD.encode(public))).is_ok());
        let error = SigningPolicy::new(&["abcd".to_owned()], None).expect_err("short key");
        assert!(error.contains("signing_keys[0]"), "{error}");
        let seed = hex::encode([7u8; 32]);
        assert_eq!(
            private_key(&seed).expect("seed").verifying_key(),
            key(7).verifying_key()
        );
    }
}
