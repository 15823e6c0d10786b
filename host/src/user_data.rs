//! Customer identifiers normalised and hashed the way ad platforms match them.
//!
//! Conversion APIs take e-mail addresses and phone numbers only as SHA-256 of a normalised
//! form, and each platform has its own normal form. The host does this for destination
//! plugins (the `hash` import), so a plugin never needs more of a customer's data than a
//! hash, and the rules live in one place.
//!
//! - Meta (Conversions API): e-mail trimmed and lower-cased; phone as digits with the
//!   country code, no `+`.
//! - Google (Data Manager API): e-mail lower-cased with all whitespace removed, and for
//!   `gmail.com`/`googlemail.com` the dots and any `+suffix` of the local part removed;
//!   phone in E.164 with the `+`.
//!
//! Digests are lower-case hex.

use phonenumber::Mode;
use sha2::{Digest, Sha256};

/// What kind of identifier a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identifier {
    /// An e-mail address.
    Email,
    /// A phone number with its country code (`+` optional).
    Phone,
}

/// Whose normal form to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Meta's Conversions API.
    Meta,
    /// Google's Data Manager API.
    Google,
}

/// Why a value cannot be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// Not an e-mail address.
    #[error("not an e-mail address (expected local@domain)")]
    Email,
    /// Not a valid phone number with a country code.
    #[error("not a valid phone number with a country code")]
    Phone,
}

/// `value` in `platform`'s normal form for `identifier`.
pub fn normalize(
    identifier: Identifier,
    platform: Platform,
    value: &str,
) -> Result<String, UserDataError> {
    match identifier {
        Identifier::Email => email(platform, value),
        Identifier::Phone => phone(platform, value),
    }
}

/// Lower-case hex SHA-256 of `value` in `platform`'s normal form.
pub fn hash(
    identifier: Identifier,
    platform: Platform,
    value: &str,
) -> Result<String, UserDataError> {
    let normal = normalize(identifier, platform, value)?;
    Ok(hex::encode(Sha256::digest(normal.as_bytes())))
}

fn email(platform: Platform, value: &str) -> Result<String, UserDataError> {
    let lower = match platform {
        Platform::Meta => value.trim().to_lowercase(),
        Platform::Google => value
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_lowercase(),
    };
    let (local, domain) = lower.split_once('@').ok_or(UserDataError::Email)?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') || !domain.contains('.') {
        return Err(UserDataError::Email);
    }
    if platform == Platform::Google && matches!(domain, "gmail.com" | "googlemail.com") {
        let local = local.split_once('+').map_or(local, |(kept, _)| kept);
        let local: String = local.chars().filter(|&c| c != '.').collect();
        if local.is_empty() {
            return Err(UserDataError::Email);
        }
        return Ok(format!("{local}@{domain}"));
    }
    Ok(lower)
}

fn phone(platform: Platform, value: &str) -> Result<String, UserDataError> {
    let digits = value.trim().trim_start_matches('+');
    // Without a region: the country code must be in the number, as both platforms require.
    let number =
        phonenumber::parse(None, format!("+{digits}")).map_err(|_| UserDataError::Phone)?;
    if !phonenumber::is_valid(&number) {
        return Err(UserDataError::Phone);
    }
    let e164 = number.format().mode(Mode::E164).to_string();
    Ok(match platform {
        Platform::Meta => e164.trim_start_matches('+').to_owned(),
        Platform::Google => e164,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected digests computed independently (Python's hashlib) from the normal forms.
    const ANA_EXAMPLE: &str = "77d801d6e9bd0b7dd5cdfd55666527c1da263574663a7fc5c05c1ea21647e449";
    const ANA_GMAIL: &str = "40a7a591b586da8ea75d049e8a9dfb984c075840dd3e9fed2e91a31c0dc2c51c";
    const PHONE_PLUS: &str = "a2996076d3ad4af5dc818b908b3d8e354f26ededf7df0e0aa6ac354143805ee0";
    const PHONE_DIGITS: &str = "6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599";

    #[test]
    fn meta_email_is_trimmed_and_lowercased_only() {
        let value = "  Ana.Lopez+Ads@Example.com ";
        assert_eq!(
            normalize(Identifier::Email, Platform::Meta, value),
            Ok("ana.lopez+ads@example.com".to_owned())
        );
        assert_eq!(
            hash(Identifier::Email, Platform::Meta, value),
            Ok(ANA_EXAMPLE.to_owned())
        );
    }

    #[test]
    fn google_email_drops_gmail_dots_and_plus_suffix_only_for_gmail() {
        assert_eq!(
            hash(
                Identifier::Email,
                Platform::Google,
                " Ana.Lopez+shop@GMail.com"
            ),
            Ok(ANA_GMAIL.to_owned())
        );
        assert_eq!(
            normalize(Identifier::Email, Platform::Google, "a.b+c@googlemail.com"),
            Ok("ab@googlemail.com".to_owned())
        );
        assert_eq!(
            hash(
                Identifier::Email,
                Platform::Google,
                "Ana.Lopez+Ads@ Example.com"
            ),
            Ok(ANA_EXAMPLE.to_owned())
        );
    }

    #[test]
    fn phones_in_each_platforms_form() {
        for given in ["+1 (650) 555-1234", "16505551234", " +1-650-555-1234 "] {
            assert_eq!(
                hash(Identifier::Phone, Platform::Google, given),
                Ok(PHONE_PLUS.to_owned()),
                "{given}"
            );
            assert_eq!(
                hash(Identifier::Phone, Platform::Meta, given),
                Ok(PHONE_DIGITS.to_owned()),
                "{given}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "",
            "ana",
            "@example.com",
            "ana@",
            "a@b@c.com",
            "ana@localhost",
        ] {
            assert_eq!(
                hash(Identifier::Email, Platform::Meta, bad),
                Err(UserDataError::Email),
                "{bad}"
            );
        }
        assert_eq!(
            hash(Identifier::Email, Platform::Google, "+x@gmail.com"),
            Err(UserDataError::Email)
        );
        for bad in ["", "12", "not a number", "+999 1234"] {
            assert_eq!(
                hash(Identifier::Phone, Platform::Google, bad),
                Err(UserDataError::Phone),
                "{bad}"
            );
        }
    }
}
