//! `omnigate dev receiver`: a local downstream tool that verifies each delivery's
//! Standard Webhooks signature and prints the event, for trying omnigate out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use omnigate_signature::{Scheme, standard_webhooks};

/// Serve on `listen`, accepting deliveries signed with any of `secrets` (`whsec_…`).
pub async fn run(listen: SocketAddr, secrets: Vec<String>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "dev receiver on http://{listen}/ (any path), verifying {} secret(s)",
        secrets.len()
    );
    let app = Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(Arc::new(secrets));
    axum::serve(listener, app).await
}

async fn receive(
    State(secrets): State<Arc<Vec<String>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        println!("REJECTED: missing or bad webhook-timestamp");
        return StatusCode::UNAUTHORIZED;
    };
    let content = standard_webhooks::signed_content(id, timestamp, &body);
    let verified = secrets.iter().any(|secret| {
        omnigate_signature::verify(
            Scheme::StandardWebhooks,
            secret.as_bytes(),
            &content,
            signature,
        ) == Ok(true)
    });
    if !verified {
        println!("REJECTED {id}: signature does not match any configured secret");
        return StatusCode::UNAUTHORIZED;
    }
    let pretty = serde_json::from_slice::<serde_json::Value>(&body)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    println!("verified delivery {id}:\n{pretty}");
    StatusCode::NO_CONTENT
}
