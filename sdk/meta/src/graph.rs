//! Graph API calls and what their errors mean for a reply.
//!
//! A failed Graph API call answers with a JSON body like
//! ```json
//! {"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
//!            "code": 131047, "error_subcode": 2494010,
//!            "error_data": {"messaging_product": "whatsapp", "details": "Message failed …"},
//!            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}}
//! ```
//! The `code` says more than the HTTP status (rate limits come as 400), so [`check`] maps
//! the code first and falls back on the status.

use omnigate_sdk::{Fetch, FetchResponse, Header, ProviderError, SendError, send_error_for_status};
use serde::Deserialize;

/// How long a Graph API call may take; the host caps it at its own limit.
pub const TIMEOUT_MS: u32 = 15_000;

/// Graph API error codes that mean "slow down" on any Meta channel: 4 (app), 17 (user),
/// 32 (page), 613 (call rate), 80007 (WhatsApp business account), 130429 (WhatsApp
/// throughput), 131056 (WhatsApp pair rate: too many messages to one user).
pub const RATE_LIMIT_CODES: [i64; 7] = [4, 17, 32, 613, 80007, 130429, 131056];

/// Graph API error codes for a temporary failure on Meta's side: 1 (unknown), 2
/// (service), 131000 (WhatsApp "something went wrong"), 131016 (service unavailable),
/// 133004 (server temporarily unavailable).
pub const TRANSIENT_CODES: [i64; 5] = [1, 2, 131000, 131016, 133004];

/// Graph API error codes for a token that is invalid or expired: 190, 102 (session).
pub const UNAUTHORIZED_CODES: [i64; 2] = [190, 102];

/// The `error` object of a failed Graph API call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GraphError {
    /// Human message, e.g. `(#131047) Re-engagement message`.
    pub message: String,
    /// Error type, e.g. `OAuthException`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error code, e.g. `131047`.
    pub code: i64,
    /// A finer code, e.g. `2018278` (Messenger: outside the messaging window).
    pub error_subcode: Option<i64>,
    /// WhatsApp puts `details` here; other APIs a string or nothing.
    pub error_data: Option<serde_json::Value>,
    /// Meta says a retry may work.
    pub is_transient: bool,
    /// Meta's trace id, for support requests.
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// `error_data.details`, if Meta gave one.
    pub fn details(&self) -> Option<String> {
        self.error_data
            .as_ref()?
            .get("details")?
            .as_str()
            .map(str::to_owned)
    }

    /// The error as a permanent [`SendError::Rejected`] with its code, titled `title`
    /// (Meta's message when `None`), Meta's details (or subcode) as detail.
    pub fn rejected(&self, title: Option<&str>) -> SendError {
        let detail = self.details().or_else(|| {
            self.error_subcode
                .map(|sub| format!("{} (subcode {sub})", self.message))
        });
        SendError::Rejected(ProviderError {
            code: self.code.to_string(),
            title: title.map_or_else(|| self.message.clone(), str::to_owned),
            detail: detail.or_else(|| title.map(|_| self.message.clone())),
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GraphError,
}

/// `POST url` with `body` as JSON and `authorization: Bearer {{secret:<token_secret>}}`
/// (the host fills the token in; it is never in the URL, so never in a log line).
pub fn post_json(
    url: &str,
    token_secret: &str,
    body: &serde_json::Value,
) -> Result<FetchResponse, SendError> {
    Ok(Fetch::post(url)
        .bearer_secret(token_secret)
        .json(body)?
        .timeout_ms(TIMEOUT_MS)
        .send()?)
}

/// `Ok(response)` for a 2xx answer, otherwise the [`SendError`] it means: first
/// `specific` (the plugin's own codes), then the codes every Meta API shares
/// ([`RATE_LIMIT_CODES`], [`UNAUTHORIZED_CODES`], [`TRANSIENT_CODES`], `is_transient`),
/// then the HTTP status (5xx transient, 401/403 unauthorized, other codes rejected).
pub fn check(
    response: FetchResponse,
    specific: impl Fn(&GraphError) -> Option<SendError>,
) -> Result<FetchResponse, SendError> {
    if response.is_success() {
        return Ok(response);
    }
    let Ok(ErrorBody { error }) = response.json::<ErrorBody>() else {
        // Not a Graph error body (a proxy's HTML page, an empty 502): the status decides.
        return Err(send_error_for_status(
            response.status,
            &response.headers,
            &response.body,
        ));
    };
    if let Some(mapped) = specific(&error) {
        return Err(mapped);
    }
    let code = error.code;
    Err(
        if RATE_LIMIT_CODES.contains(&code) || response.status == 429 {
            SendError::RateLimited(retry_after(&response.headers))
        } else if UNAUTHORIZED_CODES.contains(&code) {
            SendError::Unauthorized(format!("Graph API error {code}: {}", error.message))
        } else if error.is_transient || TRANSIENT_CODES.contains(&code) || response.status >= 500 {
            SendError::Transient(format!("Graph API error {code}: {}", error.message))
        } else if response.status == 401 {
            SendError::Unauthorized(format!("Graph API error {code}: {}", error.message))
        } else {
            error.rejected(None)
        },
    )
}

/// Seconds to wait, from `Retry-After` or Meta's usage headers
/// (`X-Business-Use-Case-Usage`: `estimated_time_to_regain_access`, in minutes).
pub fn retry_after(headers: &[Header]) -> Option<u32> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    };
    if let Some(secs) = find("retry-after").and_then(|v| v.trim().parse::<u32>().ok()) {
        return Some(secs);
    }
    // {"<business id>": [{"type": "messenger", "call_count": 100, …,
    //                     "estimated_time_to_regain_access": 5}]}
    let usage: serde_json::Value = serde_json::from_str(find("x-business-use-case-usage")?).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| u32::try_from(minutes * 60).unwrap_or(u32::MAX))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> FetchResponse {
        FetchResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn error(status: u16, code: i64) -> SendError {
        let body = format!(
            r#"{{"error":{{"message":"(#{code}) x","type":"OAuthException","code":{code},"fbtrace_id":"A"}}}}"#
        );
        check(answer(status, &[], &body), |_| None).expect_err("an error")
    }

    #[test]
    fn codes_decide_before_status() {
        assert_eq!(error(400, 613), SendError::RateLimited(None));
        assert_eq!(error(400, 4), SendError::RateLimited(None));
        assert!(matches!(error(401, 190), SendError::Unauthorized(_)));
        assert!(matches!(error(500, 1), SendError::Transient(_)));
        assert!(matches!(error(503, 12345), SendError::Transient(_)));
        let SendError::Rejected(e) = error(400, 100) else {
            panic!()
        };
        assert_eq!((e.code.as_str(), e.title.as_str()), ("100", "(#100) x"));
    }

    #[test]
    fn non_graph_bodies_fall_back_on_status() {
        let mapped = check(answer(502, &[], "<html>bad gateway</html>"), |_| None);
        assert!(matches!(mapped, Err(SendError::Transient(_))));
        let mapped = check(answer(429, &[("retry-after", "7")], ""), |_| None);
        assert_eq!(mapped.err(), Some(SendError::RateLimited(Some(7))));
    }

    #[test]
    fn usage_header_gives_retry_after() {
        let usage = r#"{"1234":[{"type":"messenger","call_count":100,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":5}]}"#;
        let body = r#"{"error":{"message":"(#32) Page request limit reached","type":"OAuthException","code":32}}"#;
        let mapped = check(
            answer(400, &[("X-Business-Use-Case-Usage", usage)], body),
            |_| None,
        );
        assert_eq!(mapped.err(), Some(SendError::RateLimited(Some(300))));
    }

    #[test]
    fn specific_mapping_wins() {
        let body = r#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_data":{"messaging_product":"whatsapp","details":"24 hours have passed"}}}"#;
        let mapped = check(answer(400, &[], body), |e| {
            (e.code == 131047).then(|| e.rejected(Some("outside the 24 h window")))
        });
        assert_eq!(
            mapped.err(),
            Some(SendError::Rejected(ProviderError {
                code: "131047".into(),
                title: "outside the 24 h window".into(),
                detail: Some("24 hours have passed".into()),
            }))
        );
    }
}
