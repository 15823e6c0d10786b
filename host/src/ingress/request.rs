//! An HTTP request → the contract's `http-request`, with the channel's body cap.
//!
//! The request is kept as the HTTP server gave it (header map, body buffer) and lent to
//! the plugin as a [`WebhookRequest`] borrowing from it: no header is copied into a
//! `String` and the body is not copied into a new `Vec` before the plugin call.

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode, header};

use super::public_url::{HEADER as PUBLIC_URL, PublicUrl};
use crate::http_error::ApiError;
use crate::runtime::lent::{HeaderRef, WebhookRequest};

/// A webhook request read whole, ready to be lent to the plugin.
#[derive(Debug)]
pub struct ReadRequest {
    parts: Parts,
    /// The body, as received.
    pub body: Bytes,
    /// [`PUBLIC_URL`] as the host computed it, if it could.
    public_url: Option<String>,
    /// Lossy UTF-8 copies of the header values that are not UTF-8, in header order (the
    /// contract's strings must be UTF-8; such values are rare).
    lossy: Vec<String>,
}

impl ReadRequest {
    /// The request as the contract's `http-request`, borrowing from `self`. The caller's
    /// own [`PUBLIC_URL`] header is left out; the host's value is appended.
    pub fn lend(&self) -> WebhookRequest<'_> {
        let mut lossy = self.lossy.iter();
        let headers = self
            .parts
            .headers
            .iter()
            .filter(|(name, _)| name.as_str() != PUBLIC_URL)
            .map(|(name, value)| HeaderRef {
                name: name.as_str(),
                value: match std::str::from_utf8(value.as_bytes()) {
                    Ok(value) => value,
                    // `read` made one lossy copy per such value, in this order.
                    Err(_) => lossy.next().map(String::as_str).unwrap_or_default(),
                },
            })
            .chain(self.public_url.as_deref().map(|value| HeaderRef {
                name: PUBLIC_URL,
                value,
            }))
            .collect();
        WebhookRequest {
            method: self.parts.method.as_str(),
            path: self.parts.uri.path(),
            query: self.parts.uri.query().unwrap_or_default(),
            headers,
            body: &self.body,
        }
    }
}

/// Read `request` whole, refusing bodies over `max_body` bytes with 413. The headers get
/// [`PUBLIC_URL`] as the host computed it (one the caller sent is dropped).
pub async fn read(
    request: Request<Body>,
    max_body: usize,
    public_url: &PublicUrl,
) -> Result<ReadRequest, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds this channel's limit of {max_body} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, max_body)
        .await
        .map_err(|error| {
            if is_length_limit(&error) {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read body: {error}"),
                )
            }
        })?;
    let public_url = public_url.of(&parts.uri, &parts.headers);
    let lossy = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != PUBLIC_URL)
        .filter(|(_, value)| std::str::from_utf8(value.as_bytes()).is_err())
        .map(|(_, value)| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    Ok(ReadRequest {
        parts,
        body,
        public_url,
        lossy,
    })
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// Property tests: any body, declared length and header bytes are either read whole
/// within the cap or refused with 413/400, never a panic.
#[cfg(test)]
mod properties {
    use axum::http::HeaderValue;
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn read_now(request: Request<Body>, max_body: usize) -> Result<ReadRequest, ApiError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(read(request, max_body, &PublicUrl::default()))
    }

    proptest! {
        #[test]
        fn any_request_is_read_within_the_cap_or_refused(
            body in vec(any::<u8>(), 0..2048),
            declared in proptest::option::of(any::<u64>()),
            max_body in 0usize..1024,
            query in "[ -~]{0,40}",
            header in vec(any::<u8>(), 0..64),
        ) {
            let mut request = Request::builder().method("POST");
            if let Ok(uri) = format!("/webhooks/x?{query}").parse::<axum::http::Uri>() {
                request = request.uri(uri);
            }
            if let Some(length) = declared {
                request = request.header(header::CONTENT_LENGTH, length);
            }
            if let Ok(value) = HeaderValue::from_bytes(&header) {
                request = request.header("x-provider", value);
            }
            let request = request.body(Body::from(body.clone())).expect("request");
            match read_now(request, max_body) {
                Ok(read) => {
                    prop_assert!(body.len() <= max_body);
                    prop_assert!(declared.is_none_or(|length| length <= max_body as u64));
                    prop_assert_eq!(&read.body[..], &body[..]);
                    let lent = read.lend();
                    prop_assert_eq!(lent.body, &body[..]);
                    if let Ok(value) = HeaderValue::from_bytes(&header) {
                        let seen = lent.headers.iter().find(|h| h.name == "x-provider");
                        let expected = String::from_utf8_lossy(value.as_bytes());
                        prop_assert_eq!(seen.map(|h| h.value), Some(&*expected));
                    }
                }
                Err(error) => {
                    let too_large = body.len() > max_body
                        || declared.is_some_and(|length| length > max_body as u64);
                    prop_assert!(too_large, "{:?}", error);
                    prop_assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
                }
            }
        }
    }
}
