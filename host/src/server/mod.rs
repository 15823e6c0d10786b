//! The gateway process: application state, bootstrap from configuration, the HTTP router
//! (ingress + API + ops routes) and graceful serving.

mod bootstrap;
pub mod check;
mod listen;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;

use crate::http_error::ApiError;
pub use crate::lifecycle::{capability_name, kind_name};
pub use crate::ops::config::ServerLimits;
pub use bootstrap::{BootError, build};

pub use crate::app::App;

/// The HTTP surface (contract): webhooks, `/v1`, `/admin`, `/console`, health, metrics.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/conversations/{id}", get(crate::api::conversations::get))
        .route(
            "/conversations/{id}/timeline",
            get(crate::api::conversations::timeline),
        )
        .route(
            "/conversations/{id}/messages",
            post(crate::api::messages::send),
        )
        .route(
            "/conversations/{id}/stage",
            post(crate::api::outcomes::stage),
        )
        .route("/conversions", post(crate::api::outcomes::record))
        .route("/conversions/{id}", get(crate::api::outcomes::get))
        .route("/reports/funnel", get(crate::api::reports::funnel))
        .route(
            "/exports/conversations",
            get(crate::api::reports::conversations),
        )
        .route(
            "/contacts/{id}",
            get(crate::api::contacts::get).delete(crate::api::contacts::erase),
        )
        .route(
            "/contacts/{id}/link-tokens",
            post(crate::api::contacts::link_token),
        )
        .route(
            "/contacts/{id}/unmerge",
            post(crate::api::contacts::unmerge),
        )
        .route(
            "/subscriptions",
            get(crate::api::subscriptions::list).post(crate::api::subscriptions::create),
        )
        .route(
            "/subscriptions/{id}",
            get(crate::api::subscriptions::get)
                .patch(crate::api::subscriptions::update)
                .delete(crate::api::subscriptions::delete),
        )
        .route(
            "/subscriptions/{id}/enable",
            post(crate::api::subscriptions::enable),
        )
        .route(
            "/subscriptions/{id}/disable",
            post(crate::api::subscriptions::disable),
        )
        .route(
            "/subscriptions/{id}/test",
            post(crate::api::subscriptions::test),
        )
        .route("/dead-letters", get(crate::api::dead_letters::list))
        .route(
            "/dead-letters/replay",
            post(crate::api::dead_letters::replay_matching),
        )
        .route(
            "/dead-letters/{id}/replay",
            post(crate::api::dead_letters::replay),
        )
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::api::auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(1 << 20));
    let admin = Router::new()
        .route(
            "/plugins",
            get(crate::api::admin::list).post(crate::api::admin::upload),
        )
        .route("/plugins/validate", post(crate::api::admin::validate))
        .route("/channels/{id}/activate", post(crate::api::admin::activate))
        .route("/channels/{id}/rollback", post(crate::api::admin::rollback))
        .route(
            "/destinations/{id}/activate",
            post(crate::api::admin::activate_destination),
        )
        .route(
            "/destinations/{id}/rollback",
            post(crate::api::admin::rollback_destination),
        )
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::api::auth::require_admin_key,
        ))
        .layer(DefaultBodyLimit::max(app.max_plugin_bytes));
    let console = if app.console.is_some() {
        crate::console::router(app.max_plugin_bytes).layer(DefaultBodyLimit::max(1 << 20))
    } else {
        Router::new()
    };
    Router::new()
        // Body limits are per channel and enforced by the handler itself.
        .route(
            "/webhooks/{channel_id}",
            any(crate::ingress::webhook).layer(DefaultBodyLimit::disable()),
        )
        .nest("/v1", v1)
        .nest("/admin", admin)
        .nest("/console", console)
        .route("/healthz", get(crate::ops::health::healthz))
        .route("/readyz", get(crate::ops::health::readyz))
        .route(
            "/metrics",
            get(crate::ops::scrape::metrics).layer(axum::middleware::from_fn_with_state(
                app.clone(),
                crate::api::auth::require_metrics_key,
            )),
        )
        .fallback(|| async { ApiError::not_found("route", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            app.request_timeout,
            request_deadline,
        ))
        .with_state(app)
}

/// `[server] request_timeout`: a request still being read or handled after it gets
/// `408` (its work is dropped), so a slow body cannot hold a handler forever.
async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            use axum::response::IntoResponse;
            ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request took too long",
            )
            .into_response()
        }
    }
}

/// Serve `app` on `listener` with the `[server]` connection `limits` until `shutdown`
/// resolves, then stop intake, let requests in flight finish and give deliveries
/// `grace` to complete.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let delivery = app.delivery.clone();
    let pipeline = app.pipeline.clone();
    let console = app.console.clone();
    let shutdown = async move {
        shutdown.await;
        // Console streams never end by themselves: end them so connections drain.
        if let Some(console) = console {
            console.close_streams();
        }
    };
    listen::serve(listener, router(app), limits, shutdown).await?;
    pipeline.flush_settles().await;
    let pending = delivery.shutdown(grace).await;
    if pending > 0 {
        tracing::warn!(
            pending,
            "shut down with deliveries still pending (memory outbox: lost)"
        );
    } else {
        tracing::info!("shut down cleanly");
    }
    Ok(())
}
