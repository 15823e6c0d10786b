//! The webhook request lent to a plugin: the contract's `http-request` as borrowed
//! strings and bytes, lowered straight into the guest's memory.
//!
//! Why: the owned [`HttpRequest`] makes the gateway copy every header name and value into
//! a `String` and the body into a new `Vec` before the call, and the call then copies
//! them again into linear memory. [`WebhookRequest`] borrows them from wherever they
//! already are (the HTTP server's header map and body buffer), so the only copy is the
//! one into the guest. What is still allocated per request: the vector of header
//! references, and a `String` for each header value that is not UTF-8 (the contract's
//! `string` must be; such values are rare and replaced lossily, as before).

use wasmtime::component::{ComponentType, Lower};

use super::contract::v0_2::types::HttpRequest;

/// One header, borrowed: the contract's `header` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub struct HeaderRef<'a> {
    /// Header name (lower-case when it comes from the HTTP server).
    pub name: &'a str,
    /// Header value.
    pub value: &'a str,
}

/// A webhook request, borrowed: the contract's `http-request` record, field for field
/// (the component model checks the match when an instance is made).
#[derive(Debug, Clone, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub struct WebhookRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// Path, e.g. `/webhooks/wa-main`.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: &'a str,
    /// Request headers, in order.
    pub headers: Vec<HeaderRef<'a>>,
    /// Raw body.
    pub body: &'a [u8],
}

impl HttpRequest {
    /// This request lent as a [`WebhookRequest`] (allocates only the header list).
    pub fn lend(&self) -> WebhookRequest<'_> {
        WebhookRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: self
                .headers
                .iter()
                .map(|header| HeaderRef {
                    name: &header.name,
                    value: &header.value,
                })
                .collect(),
            body: &self.body,
        }
    }
}

impl WebhookRequest<'_> {
    /// An owned copy (what code outside the sandbox that keeps a request needs).
    pub fn to_owned_request(&self) -> HttpRequest {
        HttpRequest {
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            query: self.query.to_owned(),
            headers: self
                .headers
                .iter()
                .map(|header| super::types::Header {
                    name: header.name.to_owned(),
                    value: header.value.to_owned(),
                })
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::types::Header;

    #[test]
    fn a_lent_request_borrows_every_field_and_copies_back_equal() {
        let owned = HttpRequest {
            method: "POST".into(),
            path: "/webhooks/web".into(),
            query: "a=1".into(),
            headers: vec![Header {
                name: "webhook-id".into(),
                value: "msg_1".into(),
            }],
            body: b"{}".to_vec(),
        };
        let lent = owned.lend();
        assert!(std::ptr::eq(lent.body, owned.body.as_slice()));
        assert!(std::ptr::eq(
            lent.headers[0].value,
            owned.headers[0].value.as_str()
        ));
        // The bindings have `Debug` but no `PartialEq`; `Debug` shows every field.
        assert_eq!(
            format!("{:?}", lent.to_owned_request()),
            format!("{owned:?}")
        );
    }
}
