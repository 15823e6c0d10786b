//! An HTTP request → the contract's `http-request`, with the channel's body cap.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use super::public_url::{HEADER as PUBLIC_URL, PublicUrl};
use crate::http_error::ApiError;
use crate::runtime::types::{Header, HttpRequest};

/// Read `request` whole, refusing bodies over `max_body` bytes with 413. The headers get
/// [`PUBLIC_URL`] as the host computed it (one the caller sent is dropped).
pub async fn read(
    request: Request<Body>,
    max_body: usize,
    public_url: &PublicUrl,
) -> Result<HttpRequest, ApiError> {
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
    let public = public_url.of(&parts.uri, &parts.headers);
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != PUBLIC_URL)
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .chain(public.map(|value| Header {
            name: PUBLIC_URL.to_owned(),
            value,
        }))
        .collect();
    Ok(HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body: body.to_vec(),
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

    fn read_now(request: Request<Body>, max_body: usize) -> Result<HttpRequest, ApiError> {
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
                    prop_assert_eq!(read.body, body);
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
