//! Cross-channel link tokens: a short code the business hands to a known contact (as a
//! ready-made WhatsApp/Telegram deep link or an e-mail reply-to address); when it arrives
//! on another channel, that sender is merged into the contact.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The prefix of every token, so one is recognizable inside a message text.
const PREFIX: &str = "lk-";
/// Random characters after the prefix (Crockford base32, lowercase: 50 bits).
const LENGTH: usize = 10;
const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `[identity]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySettings {
    /// How long a link token can be redeemed.
    #[serde(with = "humantime_serde")]
    pub link_token_ttl: Duration,
    /// The business's WhatsApp number (E.164 or digits) for `https://wa.me/<number>?text=<token>`.
    pub whatsapp_number: Option<String>,
    /// The Telegram bot username for `https://t.me/<bot>?start=<token>`.
    pub telegram_bot: Option<String>,
    /// An address whose plus-address carries the token: `link@shop.example` gives
    /// `link+<token>@shop.example` as reply-to.
    pub email_address: Option<String>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            link_token_ttl: Duration::from_secs(24 * 3600),
            whatsapp_number: None,
            telegram_bot: None,
            email_address: None,
        }
    }
}

/// Deep links that deliver a token on another channel.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeepLinks {
    /// `https://wa.me/<number>?text=<token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<String>,
    /// `https://t.me/<bot>?start=<token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram: Option<String>,
    /// `<local>+<token>@<domain>`, to use as reply-to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl IdentitySettings {
    /// The deep links configured for `token`.
    pub fn deep_links(&self, token: &str) -> DeepLinks {
        DeepLinks {
            whatsapp: self.whatsapp_number.as_ref().map(|number| {
                let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                format!("https://wa.me/{digits}?text={token}")
            }),
            telegram: self
                .telegram_bot
                .as_ref()
                .map(|bot| format!("https://t.me/{}?start={token}", bot.trim_start_matches('@'))),
            email: self.email_address.as_ref().and_then(|address| {
                let (local, domain) = address.split_once('@')?;
                Some(format!("{local}+{token}@{domain}"))
            }),
        }
    }
}

/// A new random token, e.g. `lk-7k2m9q4xbd`.
pub fn new_token() -> String {
    let random = ulid::Ulid::generate().random();
    let mut token = String::with_capacity(PREFIX.len() + LENGTH);
    token.push_str(PREFIX);
    for i in 0..LENGTH {
        let index = ((random >> (5 * i)) & 0x1f) as usize;
        token.push(char::from(ALPHABET[index]));
    }
    token
}

/// The first token inside `text` (a message, a Telegram start payload, an address).
pub fn find_token(text: &str) -> Option<&str> {
    let lower_ok = |byte: &u8| ALPHABET.contains(&byte.to_ascii_lowercase());
    let bytes = text.as_bytes();
    text.match_indices(PREFIX).find_map(|(start, _)| {
        let begin = start + PREFIX.len();
        let end = begin + LENGTH;
        let candidate = bytes.get(begin..end)?;
        let boundary = bytes
            .get(end)
            .is_none_or(|next| !next.is_ascii_alphanumeric());
        (candidate.iter().all(lower_ok) && boundary).then(|| &text[start..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_texts() {
        let token = new_token();
        assert_eq!(token.len(), PREFIX.len() + LENGTH);
        assert_eq!(find_token(&token), Some(token.as_str()));
        let text = format!("Hola! mi código: {token}.");
        assert_eq!(find_token(&text), Some(token.as_str()));
        assert_eq!(find_token(&format!("/start {token}")), Some(token.as_str()));
        assert_eq!(find_token("lk-short"), None);
        assert_eq!(find_token(&format!("{token}extra")), None);
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn deep_links_carry_the_token() {
        let settings = IdentitySettings {
            whatsapp_number: Some("+34 600 111 222".into()),
            telegram_bot: Some("@shop_bot".into()),
            email_address: Some("link@shop.example".into()),
            ..IdentitySettings::default()
        };
        let links = settings.deep_links("lk-abc");
        assert_eq!(
            links.whatsapp.as_deref(),
            Some("https://wa.me/34600111222?text=lk-abc")
        );
        assert_eq!(
            links.telegram.as_deref(),
            Some("https://t.me/shop_bot?start=lk-abc")
        );
        assert_eq!(links.email.as_deref(), Some("link+lk-abc@shop.example"));
        assert_eq!(IdentitySettings::default().deep_links("x").whatsapp, None);
    }
}
