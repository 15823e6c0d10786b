//! `verify` and `sign`: signatures computed natively with the channel's secrets, so the
//! secret values never enter plugin memory (and the CPU's SHA instructions are used).

use omnigate_signature::Scheme;

use crate::runtime::contract::v0_2::host_api::{SecretError, SignatureScheme};
use crate::runtime::env::ChannelEnv;
use crate::secret::Secret;

fn scheme(scheme: SignatureScheme) -> Scheme {
    match scheme {
        SignatureScheme::HmacSha256Hex => Scheme::HmacSha256Hex,
        SignatureScheme::HmacSha256Base64 => Scheme::HmacSha256Base64,
        SignatureScheme::HmacSha256Prefixed => Scheme::HmacSha256Prefixed,
        SignatureScheme::HmacSha1Base64 => Scheme::HmacSha1Base64,
        SignatureScheme::StandardWebhooks => Scheme::StandardWebhooks,
        SignatureScheme::SlackV0 => Scheme::SlackV0,
        SignatureScheme::Equals => Scheme::Equals,
    }
}

fn secret<'a>(env: &'a ChannelEnv, name: &str) -> Result<&'a Secret, SecretError> {
    env.secrets.get(name).ok_or_else(|| {
        SecretError::Unknown(format!(
            "channel {} has no secret named `{name}`",
            env.channel_id
        ))
    })
}

/// Verify `signature` over `message` with the secret called `name`.
pub fn verify(
    env: &ChannelEnv,
    kind: SignatureScheme,
    name: &str,
    message: &[u8],
    signature: &str,
) -> Result<bool, SecretError> {
    let secret = secret(env, name)?;
    omnigate_signature::verify(scheme(kind), secret.expose().as_bytes(), message, signature)
        .map_err(|error| SecretError::Malformed(format!("secret `{name}`: {error}")))
}

/// Sign `message` with the secret called `name`.
pub fn sign(
    env: &ChannelEnv,
    kind: SignatureScheme,
    name: &str,
    message: &[u8],
) -> Result<String, SecretError> {
    let secret = secret(env, name)?;
    omnigate_signature::sign(scheme(kind), secret.expose().as_bytes(), message)
        .map_err(|error| SecretError::Malformed(format!("secret `{name}`: {error}")))
}
