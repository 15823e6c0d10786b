//! What every page shares: the layout's facts, rendering and the error page.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::http_error::ApiError;

/// The layout's facts: the title, the active section and the session's CSRF token (for
/// the sign-out form and every action on the page).
pub struct Page {
    /// The page's title.
    pub title: String,
    /// The navigation entry shown as current (`funnel`, `conversations`, …).
    pub active: &'static str,
    /// The session's CSRF token.
    pub csrf: String,
}

impl Page {
    /// A page of section `active` for a session with CSRF token `csrf`.
    pub fn new(title: impl Into<String>, active: &'static str, csrf: &str) -> Self {
        Self {
            title: title.into(),
            active,
            csrf: csrf.to_owned(),
        }
    }
}

/// The navigation: (section, path, label).
pub const NAV: [(&str, &str, &str); 5] = [
    ("funnel", "/console/funnel", "Funnel"),
    ("conversations", "/console/conversations", "Conversations"),
    ("contacts", "/console/contacts", "Contacts"),
    ("plugins", "/console/plugins", "Plugins"),
    ("delivery", "/console/delivery", "Delivery"),
];

/// `template` rendered with `status`, or a plain 500 if it cannot be.
pub fn render<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A refused or failed console request, shown as a page naming what is wrong.
#[derive(Debug)]
pub struct ConsoleError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the reader.
    pub message: String,
}

impl ConsoleError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> Self {
        Self::new(error.status, error.message)
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        render(
            self.status,
            &ErrorPage {
                status: self.status.as_u16(),
                message: &self.message,
            },
        )
    }
}
