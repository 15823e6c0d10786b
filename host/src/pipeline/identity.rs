//! Handle normalization: phone numbers to E.164, e-mails lowercased, channel users scoped
//! to their channel.

use phonenumber::country::Id as Region;

use crate::event::{Handle, HandleKind};
use crate::runtime::types;

/// Normalizes handles with a default region for numbers written without a country code.
#[derive(Debug, Clone, Copy)]
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

    /// A plugin's handle, normalized; `None` when it is not a valid phone/e-mail.
    pub fn handle(&self, channel: &str, handle: &types::Handle) -> Option<Handle> {
        let value = match handle.kind {
            types::HandleKind::Phone => self.phone(&handle.value)?,
            types::HandleKind::Email => email(&handle.value)?,
            types::HandleKind::ChannelUser => {
                return Some(Self::channel_user(channel, &handle.value));
            }
        };
        let kind = match handle.kind {
            types::HandleKind::Phone => HandleKind::Phone,
            _ => HandleKind::Email,
        };
        Some(Handle {
            kind,
            value,
            verified: handle.verified,
        })
    }

    /// `raw` in E.164, if it parses as a valid number. Providers such as WhatsApp give
    /// numbers without `+`; digits-only input of international length is tried with `+`.
    pub fn phone(&self, raw: &str) -> Option<String> {
        let trimmed = raw.trim();
        let candidates = [
            trimmed.to_owned(),
            format!("+{}", trimmed.trim_start_matches('+')),
        ];
        candidates.iter().find_map(|candidate| {
            let number = phonenumber::parse(self.region, candidate).ok()?;
            phonenumber::is_valid(&number)
                .then(|| number.format().mode(phonenumber::Mode::E164).to_string())
        })
    }
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
