//! Contacts, plugins and delivery: what operators look at and the actions they take.
//! Plugin actions need an `[admin]` key besides the session, as on `/admin`.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::{Action, Signed, WithCsrf};
use super::views::{ConsoleError, NAV, Page, render};
use crate::app::App;

/// Dead letters shown at most (the newest).
const DEAD_LETTERS_SHOWN: usize = 100;

fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A live merge into the contact shown, which can be undone.
pub struct MergeLine {
    absorbed: String,
    evidence: String,
    at: String,
}

#[derive(Template)]
#[template(path = "console/contact.html")]
struct ContactPage {
    page: Page,
    nav: [(&'static str, &'static str, &'static str); 5],
    id: String,
    found: bool,
    handles: String,
    merges: Vec<MergeLine>,
    probable: String,
    conversations: Vec<String>,
    merged_into: String,
}

/// `?id=` of the contact page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactQuery {
    id: String,
}

/// `GET /console/contacts?id=…`: a contact's handles with their evidence, merges (with
/// unmerge), probable links and conversations, and erasure.
pub async fn contact(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
    Query(query): Query<ContactQuery>,
) -> Result<Response, ConsoleError> {
    let id = query.id.trim().to_owned();
    let mut page = ContactPage {
        page: Page::new("Contacts", "contacts", &session.csrf),
        nav: NAV,
        id: id.clone(),
        found: false,
        handles: String::new(),
        merges: Vec::new(),
        probable: String::new(),
        conversations: Vec::new(),
        merged_into: String::new(),
    };
    if !id.is_empty() {
        let details = crate::api::contacts::details(&app, &id).await?;
        page.found = true;
        page.handles = pretty(&details.contact);
        page.probable = pretty(&details.probable_links);
        page.merges = details
            .merges
            .iter()
            .filter(|merge| merge.survivor == id && merge.undone_at.is_none())
            .map(|merge| MergeLine {
                absorbed: merge.absorbed.clone(),
                evidence: merge.evidence.clone(),
                at: merge.at.to_string(),
            })
            .collect();
        page.conversations = details.conversations.clone();
        page.merged_into = details.merged_into.clone().unwrap_or_default();
    }
    Ok(render(StatusCode::OK, &page))
}

/// The unmerge form.
#[derive(Deserialize)]
pub struct UnmergeForm {
    #[serde(default)]
    csrf: String,
    absorbed: String,
}

impl WithCsrf for UnmergeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn contact_page(id: &str) -> Response {
    let query = serde_urlencoded::to_string([("id", id)]).unwrap_or_default();
    Redirect::to(&format!("/console/contacts?{query}")).into_response()
}

/// `POST /console/contacts/{id}/unmerge`: the API's unmerge.
pub async fn unmerge(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Action(_, form): Action<UnmergeForm>,
) -> Result<Response, ConsoleError> {
    crate::api::contacts::unmerge_contact(&app, &id, &form.absorbed).await?;
    Ok(contact_page(&id))
}

/// The erase form: the contact's id typed again confirms it.
#[derive(Deserialize)]
pub struct EraseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

impl WithCsrf for EraseForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/contacts/{id}/erase`: the API's erasure, once the id is typed again.
pub async fn erase(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Action(_, form): Action<EraseForm>,
) -> Result<Response, ConsoleError> {
    if form.confirm.trim() != id {
        return Err(ConsoleError::new(
            StatusCode::BAD_REQUEST,
            "erasure not confirmed: type the contact's id to erase it",
        ));
    }
    crate::api::contacts::erase_contact(&app, &id).await?;
    Ok(contact_page(""))
}

/// A channel's active plugin as shown.
pub struct ActiveLine {
    channel: String,
    plugin: String,
    digest: String,
    since: String,
    limits: String,
    previous: usize,
}

/// A recent plugin error as shown.
pub struct ErrorLine {
    channel: String,
    at: String,
    function: &'static str,
    kind: String,
    reason: String,
}

/// A known version as shown.
pub struct VersionLine {
    name: String,
    version: String,
    digest: String,
    signed: bool,
    channels: String,
}

#[derive(Template)]
#[template(path = "console/plugins.html")]
struct PluginsPage {
    page: Page,
    nav: [(&'static str, &'static str, &'static str); 5],
    active: Vec<ActiveLine>,
    versions: Vec<VersionLine>,
    /// Each active channel's recent errors (this instance), newest first.
    errors: Vec<ErrorLine>,
    /// Errors kept per channel.
    errors_kept: usize,
    /// What the last validation found.
    notice: String,
}

/// `GET /console/plugins`: each channel's active version, digest, limits and recent
/// errors, and the known versions.
pub async fn plugins(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
) -> Result<Response, ConsoleError> {
    plugins_page(&app, &session, String::new()).await
}

async fn plugins_page(
    app: &App,
    session: &super::session::Session,
    notice: String,
) -> Result<Response, ConsoleError> {
    let active: Vec<ActiveLine> = app
        .lifecycle
        .active()
        .await
        .into_iter()
        .map(|active| ActiveLine {
            channel: active.channel,
            plugin: active.plugin,
            digest: active.digest,
            since: active.active_since.to_string(),
            limits: active
                .limits
                .map(|limits| format!("{limits:?}"))
                .unwrap_or_default(),
            previous: active.previous.len(),
        })
        .collect();
    let errors = recent_errors(app, &active);
    let versions = app
        .lifecycle
        .versions()
        .await
        .into_iter()
        .map(|version| VersionLine {
            name: version.name,
            version: version.version,
            digest: version.digest,
            signed: version.signed,
            channels: version.channels.join(", "),
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &PluginsPage {
            page: Page::new("Plugins", "plugins", &session.csrf),
            nav: NAV,
            active,
            versions,
            errors,
            errors_kept: crate::runtime::recent::KEPT_PER_CHANNEL,
            notice,
        },
    ))
}

/// The recent errors of the active channels' plugins, channel by channel.
fn recent_errors(app: &App, active: &[ActiveLine]) -> Vec<ErrorLine> {
    active
        .iter()
        .flat_map(|line| {
            app.plugin_errors
                .of(&line.channel)
                .into_iter()
                .map(|error| ErrorLine {
                    channel: line.channel.clone(),
                    at: error.at.to_string(),
                    function: error.function,
                    kind: error.kind,
                    reason: error.reason,
                })
        })
        .collect()
}

/// The upload form's fields (multipart: the file does not fit a URL-encoded form).
#[derive(Default)]
struct UploadFields {
    csrf: String,
    admin_key: String,
    signature: Option<String>,
    activate: Option<String>,
    /// `validate` checks only; anything else adds the version.
    intent: String,
    wasm: Option<Vec<u8>>,
}

async fn upload_fields(headers: &HeaderMap, body: Bytes) -> Result<UploadFields, ConsoleError> {
    let bad = |error: multer::Error| {
        ConsoleError::new(
            StatusCode::BAD_REQUEST,
            format!("unreadable upload: {error}"),
        )
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = UploadFields::default();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "plugin" {
            fields.wasm =
                Some(field.bytes().await.map_err(bad)?.to_vec()).filter(|wasm| !wasm.is_empty());
            continue;
        }
        let text = field.text().await.map_err(bad)?.trim().to_owned();
        let optional = Some(text.clone()).filter(|text| !text.is_empty());
        match name.as_str() {
            "csrf" => fields.csrf = text,
            "admin_key" => fields.admin_key = text,
            "signature" => fields.signature = optional,
            "activate" => fields.activate = optional,
            "intent" => fields.intent = text,
            _ => {}
        }
    }
    Ok(fields)
}

/// `POST /console/plugins/upload` (multipart: `plugin`, `signature`, `activate`,
/// `admin_key`, `csrf`, `intent`): the admin API's validation (`intent=validate`) or
/// upload (and activation).
pub async fn upload(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    super::auth::same_origin(&headers)?;
    let fields = upload_fields(&headers, body).await?;
    super::auth::csrf(&session, &fields.csrf)?;
    require_admin(&app, &fields.admin_key)?;
    let wasm = fields.wasm.ok_or_else(|| {
        ConsoleError::new(StatusCode::BAD_REQUEST, "choose a plugin file (.wasm)")
    })?;
    if fields.intent == "validate" {
        let found = crate::api::admin::validate_version(&app, wasm).await?;
        let text = |key: &str| found[key].as_str().unwrap_or_default().to_owned();
        let notice = format!(
            "Valid: {} {} ({}), digest {}",
            text("name"),
            text("version"),
            text("kind"),
            text("digest")
        );
        return plugins_page(&app, &session, notice).await;
    }
    crate::api::admin::add_version(&app, wasm, fields.signature, fields.activate.as_deref())
        .await?;
    Ok(Redirect::to("/console/plugins").into_response())
}

/// A plugin action's form: the `[admin]` key, and the version for an activation.
#[derive(Deserialize)]
pub struct AdminForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    admin_key: String,
    #[serde(default)]
    digest: String,
}

impl WithCsrf for AdminForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The `[admin]` key check of `/admin`, for a key typed in a form.
fn require_admin(app: &App, presented: &str) -> Result<(), ConsoleError> {
    let presented = presented.trim();
    let known = !presented.is_empty()
        && app.admin_keys.iter().fold(false, |found, key| {
            found | bool::from(key.expose().as_bytes().ct_eq(presented.as_bytes()))
        });
    if known {
        Ok(())
    } else {
        Err(ConsoleError::new(
            StatusCode::UNAUTHORIZED,
            "plugin actions need an [admin] key",
        ))
    }
}

/// `POST /console/plugins/{channel}/activate`: the admin API's activation.
pub async fn activate(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    Action(_, form): Action<AdminForm>,
) -> Result<Response, ConsoleError> {
    require_admin(&app, &form.admin_key)?;
    crate::api::admin::activate_version(&app, &channel, form.digest.trim()).await?;
    Ok(Redirect::to("/console/plugins").into_response())
}

/// `POST /console/plugins/{channel}/rollback`: the admin API's rollback.
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    Action(_, form): Action<AdminForm>,
) -> Result<Response, ConsoleError> {
    require_admin(&app, &form.admin_key)?;
    crate::api::admin::rollback_channel(&app, &channel).await?;
    Ok(Redirect::to("/console/plugins").into_response())
}

/// A subscription as shown.
pub struct SubscriptionLine {
    id: String,
    url: String,
    /// `healthy`, `retrying` (failed attempts and a backlog) or `disabled: <why>`.
    state: String,
    backlog: String,
    attempts: u64,
    delivered: u64,
    dead_lettered: u64,
    /// Failed attempts by class (`http_5xx: 3, timeout: 1`).
    failures: String,
}

/// A recent delivery attempt as shown.
pub struct AttemptLine {
    subscription: String,
    at: String,
    event_type: String,
    event_id: String,
    attempt: u32,
    outcome: &'static str,
    /// The failure's class and detail, when it failed.
    error: String,
    duration_ms: u64,
}

/// A dead letter as shown.
pub struct LetterLine {
    id: String,
    subscription: String,
    event_type: String,
    conversation_id: String,
    attempts: u32,
    last_error: String,
    at: String,
}

#[derive(Template)]
#[template(path = "console/delivery.html")]
struct DeliveryPage {
    page: Page,
    nav: [(&'static str, &'static str, &'static str); 5],
    subscriptions: Vec<SubscriptionLine>,
    attempts: Vec<AttemptLine>,
    attempts_kept: usize,
    letters: Vec<LetterLine>,
}

/// `GET /console/delivery`: subscriptions with their state and backlog, their recent
/// attempts, and the newest dead letters with replay.
pub async fn delivery(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
) -> Result<Response, ConsoleError> {
    let metrics = app.delivery.metrics().await;
    let attempts = recent_attempts(&metrics);
    let subscriptions = app
        .delivery
        .subscriptions()
        .into_iter()
        .map(|view| {
            let counts = metrics
                .subscriptions
                .iter()
                .find(|snapshot| snapshot.subscription == view.id);
            let backlog = counts.and_then(|counts| counts.backlog);
            let failed = counts.is_some_and(|counts| !counts.failures.is_empty());
            let state = match (view.enabled, &view.disabled_reason) {
                (false, Some(reason)) => format!("disabled: {reason}"),
                (false, None) => "disabled".to_owned(),
                (true, _) if failed && backlog.unwrap_or(0) > 0 => "retrying".to_owned(),
                (true, _) => "healthy".to_owned(),
            };
            SubscriptionLine {
                id: view.id,
                url: view.url,
                state,
                backlog: backlog.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                attempts: counts.map_or(0, |counts| counts.attempts),
                delivered: counts.map_or(0, |counts| counts.delivered),
                dead_lettered: counts.map_or(0, |counts| counts.dead_lettered),
                failures: counts
                    .map(|counts| {
                        counts
                            .failures
                            .iter()
                            .map(|(class, n)| format!("{class}: {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let letters = app
        .delivery
        .dead_letters(
            &crate::delivery::DeadLetterFilter::default(),
            DEAD_LETTERS_SHOWN,
        )
        .await
        .map_err(|error| ConsoleError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))?
        .into_iter()
        .map(|letter| LetterLine {
            id: letter.id,
            subscription: letter.subscription,
            event_type: letter.event_type,
            conversation_id: letter.conversation_id,
            attempts: letter.attempts,
            last_error: letter.last_error,
            at: letter.at.to_string(),
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &DeliveryPage {
            page: Page::new("Delivery", "delivery", &session.csrf),
            nav: NAV,
            subscriptions,
            attempts,
            attempts_kept: crate::delivery::metrics::RECENT_ATTEMPTS,
            letters,
        },
    ))
}

/// Every subscription's recent attempts, subscription by subscription, newest first.
fn recent_attempts(metrics: &crate::delivery::metrics::MetricsSnapshot) -> Vec<AttemptLine> {
    metrics
        .subscriptions
        .iter()
        .flat_map(|snapshot| {
            snapshot.recent_attempts.iter().map(|attempt| AttemptLine {
                subscription: snapshot.subscription.clone(),
                at: attempt.at.to_string(),
                event_type: attempt.event_type.clone(),
                event_id: attempt.event_id.clone(),
                attempt: attempt.attempt,
                outcome: attempt.outcome,
                error: match (&attempt.class, &attempt.error) {
                    (Some(class), Some(error)) => format!("{class}: {error}"),
                    (class, error) => class.clone().or_else(|| error.clone()).unwrap_or_default(),
                },
                duration_ms: attempt.duration_ms,
            })
        })
        .collect()
}

/// The replay form.
#[derive(Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for ReplayForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/dead-letters/{id}/replay`: the API's replay.
pub async fn replay(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Action(_, _): Action<ReplayForm>,
) -> Result<Response, ConsoleError> {
    crate::api::dead_letters::replay_one(&app, &id).await?;
    Ok(Redirect::to("/console/delivery").into_response())
}
