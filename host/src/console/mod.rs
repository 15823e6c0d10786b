//! The web console at `/console` (docs/console.md): server-rendered HTML pages (askama
//! templates, checked at compile time), assets embedded in the binary, a signed session
//! cookie, a CSRF token on every action and a strict Content-Security-Policy.
//!
//! Every action calls the function the JSON API's handler calls (`crate::api::…`): a
//! reply, a stage change, a replay or an activation follows one rule, whichever surface
//! asked for it.

mod auth;
mod conversations;
mod funnel;
mod limit;
mod operations;
pub mod session;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;

/// The console's Content-Security-Policy: only this origin's own script, styles and
/// images; no inline script or style, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The routes under `/console` (the caller nests them there when `[console] enabled`);
/// a plugin upload may be `max_plugin_bytes` long, as on `/admin`.
pub fn router(max_plugin_bytes: usize) -> Router<Arc<App>> {
    Router::new()
        .route("/", get(auth::home))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/funnel", get(funnel::page))
        .route("/conversations", get(conversations::list))
        .route("/conversations/events", get(conversations::list_events))
        .route("/conversations/{id}", get(conversations::show))
        .route("/conversations/{id}/events", get(conversations::events))
        .route("/conversations/{id}/reply", post(conversations::reply))
        .route("/conversations/{id}/stage", post(conversations::stage))
        .route("/contacts", get(operations::contact))
        .route("/contacts/{id}/unmerge", post(operations::unmerge))
        .route("/contacts/{id}/erase", post(operations::erase))
        .route("/plugins", get(operations::plugins))
        .route(
            "/plugins/upload",
            post(operations::upload).layer(axum::extract::DefaultBodyLimit::max(max_plugin_bytes)),
        )
        .route("/plugins/{channel}/activate", post(operations::activate))
        .route("/plugins/{channel}/rollback", post(operations::rollback))
        .route("/delivery", get(operations::delivery))
        .route("/dead-letters/{id}/replay", post(operations::replay))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Headers every console answer carries: the CSP, no sniffing, no framing, no referrer
/// to other sites (`same-origin`, not `no-referrer`: with that, a browser sends a form
/// post's `Origin` as `null` and the same-origin check of actions would refuse it), and
/// no caching (pages hold conversations and the CSRF token).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The stylesheet, embedded at build time.
async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

/// The progressive enhancement (live timeline and conversation list), embedded at build
/// time.
async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}
