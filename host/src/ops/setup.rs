//! `omnigate channel setup`: register a channel's webhook URL with its provider, for the
//! providers that have an API for it (Telegram's `setWebhook`, Twilio's
//! `IncomingPhoneNumbers`). Other providers are set up in their consoles
//! (`docs/channels/`).

use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// How long one provider call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The updates the Telegram plugin maps (`docs/channels/telegram.md`).
pub const TELEGRAM_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "callback_query",
    "my_chat_member",
    "message_reaction",
];

/// Why a setup call failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The provider could not be reached.
    #[error("cannot reach {what}: {source}")]
    Transport {
        /// What was being called.
        what: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The provider refused the call.
    #[error("{what} answered HTTP {status}: {body}")]
    Refused {
        /// What was being called.
        what: String,
        /// Its status.
        status: u16,
        /// Its answer (the start of it).
        body: String,
    },
    /// The provider's answer was not what its API documents.
    #[error("unexpected answer from {what}: {why}")]
    Unexpected {
        /// What was being called.
        what: String,
        /// What was wrong.
        why: String,
    },
    /// The account has no such number.
    #[error("the Twilio account has no incoming phone number {0}")]
    NoSuchNumber(String),
    /// An argument is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// `omnigate channel setup telegram`.
#[derive(Debug, Clone)]
pub struct TelegramSetup {
    /// Bot API base URL (`https://api.telegram.org`).
    pub api_base: String,
    /// The bot token.
    pub bot_token: String,
    /// The secret Telegram sends back in `X-Telegram-Bot-Api-Secret-Token`.
    pub secret_token: String,
    /// The webhook URL (`https://<gateway>/webhooks/<channel id>`).
    pub url: String,
}

/// `omnigate channel setup twilio`.
#[derive(Debug, Clone)]
pub struct TwilioSetup {
    /// API base URL (`https://api.twilio.com`).
    pub api_base: String,
    /// The Account SID (`AC…`).
    pub account_sid: String,
    /// The account's auth token.
    pub auth_token: String,
    /// The number, E.164 (`+15017250604`).
    pub number: String,
    /// The webhook URL (`<public_url>/webhooks/<channel id>`).
    pub url: String,
}

fn client() -> Result<reqwest::Client, SetupError> {
    crate::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|source| SetupError::Transport {
            what: "the HTTP client".into(),
            source,
        })
}

/// Calls `setWebhook` with the URL, the secret token and the updates the plugin maps;
/// returns Telegram's `description` ("Webhook was set").
pub async fn telegram(setup: &TelegramSetup) -> Result<String, SetupError> {
    let what = "Telegram setWebhook".to_owned();
    checked_url(&setup.url)?;
    let updates = serde_json::to_string(TELEGRAM_UPDATES).unwrap_or_default();
    let form = serde_urlencoded::to_string([
        ("url", setup.url.as_str()),
        ("secret_token", setup.secret_token.as_str()),
        ("allowed_updates", updates.as_str()),
    ])
    .map_err(|error| SetupError::Invalid(error.to_string()))?;
    let endpoint = format!(
        "{}/bot{}/setWebhook",
        setup.api_base.trim_end_matches('/'),
        setup.bot_token
    );
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
        #[serde(default)]
        description: Option<String>,
    }
    let request = client()?
        .post(endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let answer: Answer = call(&what, request).await?;
    let description = answer.description.unwrap_or_default();
    if !answer.ok {
        return Err(SetupError::Unexpected {
            what,
            why: description,
        });
    }
    Ok(description)
}

/// Points the number's "A message comes in" webhook (`SmsUrl`, `POST`) at `url`; returns
/// the number's SID and the URL Twilio now has.
pub async fn twilio(setup: &TwilioSetup) -> Result<(String, String), SetupError> {
    checked_url(&setup.url)?;
    let client = client()?;
    let numbers = format!(
        "{}/2010-04-01/Accounts/{}/IncomingPhoneNumbers",
        setup.api_base.trim_end_matches('/'),
        setup.account_sid
    );
    let mut lookup = Url::parse(&format!("{numbers}.json"))
        .map_err(|error| SetupError::Invalid(format!("bad --api-base: {error}")))?;
    lookup
        .query_pairs_mut()
        .append_pair("PhoneNumber", &setup.number);
    let what = "Twilio IncomingPhoneNumbers";
    #[derive(Deserialize)]
    struct Page {
        incoming_phone_numbers: Vec<Number>,
    }
    #[derive(Deserialize)]
    struct Number {
        sid: String,
        #[serde(default)]
        sms_url: Option<String>,
    }
    let lookup = client
        .get(lookup)
        .basic_auth(&setup.account_sid, Some(&setup.auth_token));
    let page: Page = call(what, lookup).await?;
    let number = page
        .incoming_phone_numbers
        .into_iter()
        .next()
        .ok_or_else(|| SetupError::NoSuchNumber(setup.number.clone()))?;
    let form = serde_urlencoded::to_string([("SmsUrl", setup.url.as_str()), ("SmsMethod", "POST")])
        .map_err(|error| SetupError::Invalid(error.to_string()))?;
    let update = client
        .post(format!("{numbers}/{}.json", number.sid))
        .basic_auth(&setup.account_sid, Some(&setup.auth_token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let updated: Number = call(what, update).await?;
    Ok((updated.sid, updated.sms_url.unwrap_or_default()))
}

/// A webhook URL must be absolute `https` (or `http` for local tests).
fn checked_url(raw: &str) -> Result<(), SetupError> {
    let url = Url::parse(raw)
        .map_err(|error| SetupError::Invalid(format!("--url {raw:?} is not a URL: {error}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(SetupError::Invalid(format!(
            "--url {raw:?} must be an https URL"
        )));
    }
    Ok(())
}

/// Send `request` to the provider (`what`); its 2xx answer's JSON, or the refusal with
/// the start of the body.
async fn call<T: serde::de::DeserializeOwned>(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, SetupError> {
    let response = request
        .send()
        .await
        // `without_url`: a URL may hold a token (Telegram's bot token is in its path).
        .map_err(|source| SetupError::Transport {
            what: what.to_owned(),
            source: source.without_url(),
        })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if !(200..300).contains(&status) {
        return Err(SetupError::Refused {
            what: what.to_owned(),
            status,
            body: body.chars().take(500).collect(),
        });
    }
    serde_json::from_str(&body).map_err(|error| SetupError::Unexpected {
        what: what.to_owned(),
        why: error.to_string(),
    })
}
