//! Handle normalization: phone numbers to E.164, e-mails lowercased, channel users scoped
//! to their channel.

use phonenumber::PhoneNumber;
use phonenumber::country::Id as Region;
use phonenumber::metadata::{DATABASE, Descriptors};

use crate::event::{Handle, HandleKind};
use crate::runtime::types;

/// Normalizes handles with a default region for numbers written without a country code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Normalizer {
    region: Option<Region>,
}

impl Normalizer {
    /// A normalizer whose national numbers belong to `region` (ISO 3166 code, e.g. `ES`).
    pub fn new(region: Option<&str>) -> Result<Self, String> {
        let region = match region {
            None => None,
            Some(code) => Some(
                code.to_ascii_uppercase()
                    .parse::<Region>()
                    .map_err(|_| format!("unknown region `{code}`"))?,
            ),
        };
        Ok(Self { region })
    }

    /// The `channel-user` handle of `user_id` on `channel`.
    pub fn channel_user(channel: &str, user_id: &str) -> Handle {
        Handle {
            kind: HandleKind::ChannelUser,
            value: format!("{channel}:{user_id}"),
            verified: true,
        }
    }

    /// A plugin's handle, normalized; `None` when it is not a usable phone/e-mail.
    ///
    /// A phone number the provider verified (WhatsApp's `wa_id`, Twilio's `From`) is kept
    /// when it is merely *possible* (a known country code and a length that country
    /// uses) even if libphonenumber's number ranges do not list it: the provider has
    /// seen the number work, and the metadata lags behind real allocations (the `wa_id`
    /// `972987654321` of public WhatsApp examples is one). Each handle is counted in
    /// `omnigate_handles_total`; a dropped one is logged, without its value.
    pub fn handle(&self, channel: &str, handle: &types::Handle) -> Option<Handle> {
        let (kind, label, reading) = match handle.kind {
            types::HandleKind::Phone => (
                HandleKind::Phone,
                "phone",
                self.read_phone(&handle.value)
                    .filter(|reading| handle.verified || reading.listed),
            ),
            types::HandleKind::Email => (
                HandleKind::Email,
                "email",
                email(&handle.value).map(|value| HandleReading {
                    value,
                    listed: true,
                }),
            ),
            types::HandleKind::ChannelUser => {
                return Some(Self::channel_user(channel, &handle.value));
            }
        };
        let Some(reading) = reading else {
            crate::metrics::handle_normalized(label, "dropped");
            tracing::info!(
                channel,
                kind = label,
                verified = handle.verified,
                "contact handle dropped: not a usable {label}"
            );
            return None;
        };
        let outcome = if reading.listed {
            "kept"
        } else {
            // The flag operators see: a number linked on the provider's word alone.
            tracing::info!(
                channel,
                "provider-verified phone number kept although libphonenumber does not list it"
            );
            "kept_unlisted"
        };
        crate::metrics::handle_normalized(label, outcome);
        Some(Handle {
            kind,
            value: reading.value,
            verified: handle.verified,
        })
    }

    /// `raw` in E.164, if it parses as a valid number. Providers such as WhatsApp give
    /// numbers without `+`; digits-only input of international length is tried with `+`.
    pub fn phone(&self, raw: &str) -> Option<String> {
        self.read_phone(raw)
            .filter(|reading| reading.listed)
            .map(|reading| reading.value)
    }

    /// `raw` in E.164 when it is a valid number (`listed`), or else a possible one
    /// (`listed: false`); `None` when it is neither.
    pub fn read_phone(&self, raw: &str) -> Option<HandleReading> {
        let trimmed = raw.trim();
        let national = phonenumber::parse(self.region, trimmed).ok();
        let international =
            phonenumber::parse(self.region, format!("+{}", trimmed.trim_start_matches('+'))).ok();
        let e164 = |number: &PhoneNumber| number.format().mode(phonenumber::Mode::E164).to_string();
        // A valid reading as written first (with the default region, `2025550123` is a US
        // number, not Egypt's +20); then digits read as international, as providers send.
        if let Some(valid) = [&national, &international]
            .into_iter()
            .flatten()
            .find(|number| phonenumber::is_valid(number))
        {
            return Some(HandleReading {
                value: e164(valid),
                listed: true,
            });
        }
        // Only possible: the international reading first, since only a provider-verified
        // number is kept this way, and providers send numbers in international form.
        [&international, &national]
            .into_iter()
            .flatten()
            .find(|number| is_possible(number))
            .map(|number| HandleReading {
                value: e164(number),
                listed: false,
            })
    }
}

/// A handle value as the normalizer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleReading {
    /// The normalized value (E.164 for a phone number).
    pub value: String,
    /// Whether libphonenumber's metadata lists the number as valid; `false` for a number
    /// that is only possible.
    pub listed: bool,
}

/// E.164 allows at most 15 digits, country code included.
const E164_MAX_DIGITS: usize = 15;

/// Whether `number` has a known country calling code and a national length that one of
/// the code's regions uses (libphonenumber's "possible number", which the crate does not
/// export for parsed numbers).
fn is_possible(number: &PhoneNumber) -> bool {
    let code = number.code().value();
    let national = number.national().to_string();
    if code.to_string().len() + national.len() > E164_MAX_DIGITS {
        return false;
    }
    let Ok(length) = u16::try_from(national.len()) else {
        return false;
    };
    DATABASE.by_code(&code).is_some_and(|regions| {
        regions
            .iter()
            .any(|meta| possible_lengths(meta.descriptors()).any(|l| l == length))
    })
}

/// Every national length the region's number types use. The crate's metadata leaves the
/// general descriptor's lengths empty for many regions (Israel among them), so the
/// per-type descriptors are read too.
fn possible_lengths(descriptors: &Descriptors) -> impl Iterator<Item = u16> + '_ {
    let types = [
        descriptors.fixed_line(),
        descriptors.mobile(),
        descriptors.toll_free(),
        descriptors.premium_rate(),
        descriptors.shared_cost(),
        descriptors.personal_number(),
        descriptors.voip(),
        descriptors.pager(),
        descriptors.uan(),
        descriptors.voicemail(),
    ];
    std::iter::once(descriptors.general())
        .chain(types.into_iter().flatten())
        .flat_map(|descriptor| descriptor.possible_length().iter().copied())
}

fn email(raw: &str) -> Option<String> {
    let value = raw.trim().to_lowercase();
    let (local, domain) = value.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.starts_with('.')).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_become_e164() {
        let spain = Normalizer::new(Some("es")).expect("region");
        assert_eq!(
            spain.phone("+34 600 11 12 22").as_deref(),
            Some("+34600111222")
        );
        assert_eq!(spain.phone("34600111222").as_deref(), Some("+34600111222"));
        assert_eq!(spain.phone("600 111 222").as_deref(), Some("+34600111222"));
        assert_eq!(spain.phone("not a number"), None);
        let none = Normalizer::new(None).expect("no region");
        assert_eq!(none.phone("16315551234").as_deref(), Some("+16315551234"));
        // As written first: with the default region, a national number stays national
        // (read as international, Florida's `3522345678` is a valid Luxembourg number).
        let us = Normalizer::new(Some("us")).expect("region");
        assert_eq!(us.phone("(352) 234-5678").as_deref(), Some("+13522345678"));
        assert_eq!(us.phone("3522345678").as_deref(), Some("+13522345678"));
    }

    #[test]
    fn provider_verified_possible_numbers_are_kept_unlisted() {
        let none = Normalizer::new(None).expect("no region");
        // The wa_id of public WhatsApp webhook examples: Israel's code and length, but
        // outside the ranges libphonenumber's metadata lists.
        assert_eq!(none.phone("972987654321"), None);
        assert_eq!(
            none.read_phone("972987654321"),
            Some(HandleReading {
                value: "+972987654321".into(),
                listed: false
            })
        );
        let handle = |value: &str, verified| types::Handle {
            kind: types::HandleKind::Phone,
            value: value.into(),
            verified,
        };
        let kept = none
            .handle("wa", &handle("972987654321", true))
            .expect("verified and possible: kept");
        assert_eq!(kept.value, "+972987654321");
        assert!(kept.verified);
        // Only a provider's word makes an unlisted number worth keeping.
        assert_eq!(none.handle("wa", &handle("972987654321", false)), None);
        // Impossible lengths and unknown country codes are dropped even when verified.
        assert_eq!(none.handle("wa", &handle("97298", true)), None);
        assert_eq!(none.handle("wa", &handle("99912345678", true)), None);
        assert_eq!(none.handle("wa", &handle("1234567890123456", true)), None);
        // Valid numbers are unaffected.
        assert_eq!(
            none.handle("wa", &handle("16315551234", true))
                .map(|handle| handle.value),
            Some("+16315551234".into())
        );
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            email("  Ana@Example.COM ").as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(email("nope"), None);
        assert_eq!(email("a@b"), None);
    }

    #[test]
    fn unknown_region_is_refused() {
        assert!(Normalizer::new(Some("XX")).is_err());
    }
}
