//! `/admin`: the plugin lifecycle over HTTP (admin keys, separate from `/v1` keys).
//!
//! - `GET /admin/plugins`: known versions and which one serves each channel.
//! - `POST /admin/plugins`: add a version (raw wasm body, or a `multipart/form-data`
//!   body with the wasm as a file part, field `plugin` preferred); `?activate=<channel>`
//!   (or `?activate=destination:<id>`) also activates it. Its ed25519 signature (`omnigate plugin sign`) travels in the
//!   `x-omnigate-signature` header or the multipart field `signature`.
//! - `POST /admin/plugins/validate`: compile and check only; nothing is kept.
//! - `POST /admin/channels/{id}/activate` `{"digest": "…"}`: serve the channel with it.
//! - `POST /admin/channels/{id}/rollback`: back to the version before.
//! - `POST /admin/destinations/{id}/activate` and `/rollback`: the same for a destination
//!   plugin; listed under `channels` as `destination:<id>`.
//!
//! A refused plugin answers 422 with the exact reason; the active version keeps serving.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::http_error::ApiError;
use crate::lifecycle::{BindError, LifecycleError, SignatureError, Target};
use crate::store::StoreError;

/// `GET /admin/plugins`.
pub async fn list(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "plugins": app.lifecycle.versions().await,
        "channels": app.lifecycle.active().await,
    }))
}

/// Query of `POST /admin/plugins`.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// Activate the new version for this channel (or `destination:<id>`) right away.
    activate: Option<String>,
}

/// `POST /admin/plugins`.
pub async fn upload(
    State(app): State<Arc<App>>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let upload = upload_of(&headers, body).await?;
    let added = add_version(
        &app,
        upload.wasm,
        upload.signature,
        query.activate.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// Add an uploaded version (checked against the signing policy) and, with `activate`,
/// activate it for that channel: what the API and the console both call.
pub async fn add_version(
    app: &App,
    wasm: Vec<u8>,
    signature: Option<String>,
    activate: Option<&str>,
) -> Result<Value, ApiError> {
    let version = app
        .lifecycle
        .add_signed(wasm, crate::lifecycle::UPLOAD, signature)
        .await
        .map_err(refused)?;
    tracing::info!(plugin = %version.name, version = %version.version, digest = %version.digest, "plugin version added");
    let active = match activate {
        Some(channel) => Some(
            app.lifecycle
                .activate(&Target::from_key(channel), &version.digest)
                .await
                .map_err(refused)?,
        ),
        None => None,
    };
    Ok(json!({"plugin": version, "activated": active}))
}

/// `POST /admin/plugins/validate`.
pub async fn validate(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let wasm = upload_of(&headers, body).await?.wasm;
    validate_version(&app, wasm).await.map(Json)
}

/// Check a plugin without adding it: what the API and the console both call.
pub async fn validate_version(app: &App, wasm: Vec<u8>) -> Result<Value, ApiError> {
    let plugin = app.lifecycle.validate(wasm).await.map_err(refused)?;
    Ok(json!({
        "valid": true,
        "name": plugin.info.id,
        "version": plugin.info.version,
        "digest": plugin.digest,
        "world": format!("omnigate:channel/channel@{}", plugin.contract),
        "kind": crate::lifecycle::kind_name(plugin.info.kind),
    }))
}

/// Body of `POST /admin/channels/{id}/activate`.
#[derive(Debug, Deserialize)]
pub struct Activate {
    /// The version's digest (from the upload answer or the list).
    digest: String,
}

/// `POST /admin/channels/{id}/activate`.
pub async fn activate(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    Json(request): Json<Activate>,
) -> Result<Json<Value>, ApiError> {
    activate_version(&app, &channel, &request.digest)
        .await
        .map(Json)
}

/// Activate version `digest` for `channel` (or `destination:<id>`) across the fleet:
/// what the API and the console both call.
pub async fn activate_version(app: &App, channel: &str, digest: &str) -> Result<Value, ApiError> {
    // A listing's key: the console acts on destinations (`destination:<id>`) this way too.
    activate_target(app, &Target::from_key(channel), digest).await
}

/// `POST /admin/destinations/{id}/activate`.
pub async fn activate_destination(
    State(app): State<Arc<App>>,
    Path(destination): Path<String>,
    Json(request): Json<Activate>,
) -> Result<Json<Value>, ApiError> {
    activate_target(&app, &Target::Destination(destination), &request.digest)
        .await
        .map(Json)
}

async fn activate_target(app: &App, target: &Target, digest: &str) -> Result<Value, ApiError> {
    let active = app
        .lifecycle
        .activate(target, digest)
        .await
        .map_err(refused)?;
    Ok(json!({ "activated": active }))
}

/// `POST /admin/channels/{id}/rollback`.
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    rollback_channel(&app, &channel).await.map(Json)
}

/// Roll `channel` (or `destination:<id>`) back to its previous version: what the API and
/// the console both call.
pub async fn rollback_channel(app: &App, channel: &str) -> Result<Value, ApiError> {
    rollback_target(app, &Target::from_key(channel)).await
}

/// `POST /admin/destinations/{id}/rollback`.
pub async fn rollback_destination(
    State(app): State<Arc<App>>,
    Path(destination): Path<String>,
) -> Result<Json<Value>, ApiError> {
    rollback_target(&app, &Target::Destination(destination))
        .await
        .map(Json)
}

async fn rollback_target(app: &App, target: &Target) -> Result<Value, ApiError> {
    let active = app.lifecycle.rollback(target).await.map_err(refused)?;
    Ok(json!({ "activated": active }))
}

/// The header that carries an upload's signature.
pub const SIGNATURE_HEADER: &str = "x-omnigate-signature";

/// An uploaded version and the signature that came with it.
struct Upload {
    wasm: Vec<u8>,
    signature: Option<String>,
}

/// The wasm and signature of an upload: the raw body and the `x-omnigate-signature`
/// header, or from a `multipart/form-data` body the field `plugin` (else its first file
/// part) and the field `signature` (else the header).
async fn upload_of(headers: &HeaderMap, body: Bytes) -> Result<Upload, ApiError> {
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty());
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        return Ok(Upload {
            wasm: body.to_vec(),
            signature: header,
        });
    }
    let mut upload = multipart_upload(content_type, body).await?;
    upload.signature = upload.signature.or(header);
    Ok(upload)
}

/// The `plugin` (or first file) and `signature` fields of a multipart upload.
async fn multipart_upload(content_type: &str, body: Bytes) -> Result<Upload, ApiError> {
    let bad = |error: multer::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_multipart",
            format!("unreadable multipart body: {error}"),
        )
    };
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let (mut named, mut first_file, mut signature) = (None, None, None);
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        if field.name() == Some("signature") {
            let text = field.text().await.map_err(bad)?;
            signature = Some(text.trim().to_owned()).filter(|text| !text.is_empty());
        } else if field.name() == Some("plugin") {
            named = Some(field.bytes().await.map_err(bad)?.to_vec());
        } else if first_file.is_none() && field.file_name().is_some() {
            first_file = Some(field.bytes().await.map_err(bad)?.to_vec());
        }
    }
    let wasm = named.or(first_file).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_multipart",
            "the multipart body has no file part: send the wasm as field `plugin`",
        )
    })?;
    Ok(Upload { wasm, signature })
}

fn refused(error: LifecycleError) -> ApiError {
    let message = error.to_string();
    let (status, code) = match &error {
        LifecycleError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_refused"),
        LifecycleError::Bind(BindError::Requirements { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "channel_requirements")
        }
        LifecycleError::Bind(BindError::Warm { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "plugin_failed_to_start")
        }
        LifecycleError::UnknownVersion(_) => (StatusCode::NOT_FOUND, "unknown_plugin"),
        LifecycleError::UnknownChannel(_) => (StatusCode::NOT_FOUND, "unknown_channel"),
        LifecycleError::UnknownDestination(_) => (StatusCode::NOT_FOUND, "unknown_destination"),
        LifecycleError::NothingToRollBack(_) => (StatusCode::CONFLICT, "nothing_to_roll_back"),
        LifecycleError::KindMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "kind_mismatch"),
        LifecycleError::Signature(SignatureError::Required { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "signature_required")
        }
        LifecycleError::Signature(SignatureError::Bad { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "bad_signature")
        }
        LifecycleError::Registry(StoreError::Conflict(_)) => {
            (StatusCode::CONFLICT, "registry_conflict")
        }
        LifecycleError::Registry(_) | LifecycleError::DigestMismatch { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable")
        }
    };
    tracing::warn!(code, reason = %message, "admin action refused; the active version keeps serving");
    ApiError::new(status, code, message)
}
