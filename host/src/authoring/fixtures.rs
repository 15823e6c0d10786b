//! `omnigate plugin test`: recorded webhooks replayed through a plugin in the real
//! runtime, each compared with the outcome its fixture file expects.
//!
//! A fixture directory holds one TOML file per case (`*.toml`), plus optionally
//! `channel.toml` with what every case shares (`channel`, `now`, `[config]`, `[secrets]`;
//! a case's own values win). The format is documented in docs/writing-a-plugin.md
//! ("Testing with recorded webhooks"); in short:
//!
//! ```toml
//! description = "a signed visitor message"
//! now = "2026-11-24T10:00:30Z"          # the plugin's clock (recorded signatures)
//! [secrets]
//! signing_secret = "whsec_…"
//! [request]
//! method = "POST"
//! headers = { "webhook-id" = "msg_1", "webhook-timestamp" = "1795514400" }
//! body_file = "message.json"            # or body = '''…'''
//! [expect]
//! status = 200
//! events = 1
//! [[expect.event]]
//! type = "message.received"
//! message.text = "Hola"
//! ```
//!
//! The request goes through [`crate::runtime::ChannelRuntime::handle_webhook`] and its
//! events through the gateway's own normalization and limits ([`crate::pipeline::normalize`],
//! [`crate::pipeline::within_limits`], with the default `[channels] limits`), so a case
//! passes exactly when the gateway would answer and record the same.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::lifecycle::binding::kind_name;
use crate::pipeline::identity::Normalizer;
use crate::pipeline::normalize::{self, Normalized};
use crate::pipeline::{ChannelMeta, PipelineError, within_limits};
use crate::runtime::types::{Header, HttpRequest, WebhookError};
use crate::runtime::{ChannelEnv, Plugin, Role, Runtime};
use crate::secret::Secret;

/// The file of a fixture directory that holds what every case shares.
pub const SHARED_FILE: &str = "channel.toml";

/// Why the fixtures could not be run (not a failing case: those are [`CaseReport`]s).
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The directory or a file in it cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was read.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
    /// A fixture file is not valid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// The directory holds no case.
    #[error("{0} holds no fixture (`*.toml` files other than `channel.toml`)")]
    Empty(String),
    /// The plugin is not a channel plugin.
    #[error("{0} is a destination plugin; `plugin test` replays webhooks through channel plugins")]
    NotAChannel(String),
}

/// What every case of a directory shares (`channel.toml`), and what a case may override.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shared {
    /// The channel id (the request path defaults to `/webhooks/<channel>`).
    channel: Option<String>,
    /// The plugin's clock during the call, RFC 3339.
    now: Option<String>,
    /// The channel's `config`.
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// The channel's secrets, as values.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

/// One case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// What the case is about (printed with its result).
    description: Option<String>,
    /// As in [`Shared`]; the case's own value wins.
    channel: Option<String>,
    now: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    request: RequestSpec,
    expect: Expect,
}

/// The recorded request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    /// `POST` unless given.
    method: Option<String>,
    /// `/webhooks/<channel>` unless given.
    path: Option<String>,
    /// The raw query string, without `?`.
    #[serde(default)]
    query: String,
    /// Header values by name; an array for a repeated header.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    /// The body as text.
    body: Option<String>,
    /// The body from a file, relative to the fixture file.
    body_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

/// What the case expects. Only what is given is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The HTTP status the provider gets.
    status: Option<u16>,
    /// The refusal's error code: `unauthorized`, `forbidden`, `bad_request`,
    /// `plugin_invalid_event` or `plugin_failed`; `"none"` for an accepted webhook.
    error: Option<String>,
    /// Text the refusal's reason contains.
    error_contains: Option<String>,
    /// The response body, exactly (a handshake's challenge).
    body: Option<String>,
    /// Response headers (names case-insensitive).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// How many events the webhook produces.
    events: Option<usize>,
    /// Fields of each event, in order: a partial event (see [`event_view`]).
    #[serde(default)]
    event: Vec<Value>,
}

/// A case ready to run.
#[derive(Debug)]
pub struct Case {
    /// The file name without `.toml`.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    channel: String,
    now_ms: Option<i64>,
    config: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    request: HttpRequest,
    expect: Expect,
}

/// What the plugin made of a case's request, as the gateway would answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Actual {
    /// The HTTP status the provider gets.
    pub status: u16,
    /// The error code of a refusal (as in the gateway's JSON error), `None` when accepted.
    pub error: Option<String>,
    /// The refusal's reason.
    pub reason: Option<String>,
    /// The plugin's response headers (accepted webhooks).
    pub headers: Vec<(String, String)>,
    /// The plugin's response body (accepted webhooks).
    pub body: Vec<u8>,
    /// The events, normalized, as [`event_view`] shows them.
    pub events: Vec<Value>,
}

/// One difference between what a case expects and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The field, e.g. `status` or `event[0].message.text`.
    pub field: String,
    /// What the case expects.
    pub expected: String,
    /// What the plugin gave.
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.field, self.expected, self.actual
        )
    }
}

/// The result of one case.
#[derive(Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// What differs; empty when the case passed.
    pub mismatches: Vec<Mismatch>,
    /// What the plugin did, as JSON (for `--show` and failures).
    pub actual: Value,
}

impl CaseReport {
    /// Whether the plugin did what the case expects.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Read every case of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, FixtureError> {
    let read_error = |path: &Path, source| FixtureError::Read {
        path: path.display().to_string(),
        source,
    };
    let shared_path = dir.join(SHARED_FILE);
    let shared: Shared = if shared_path.exists() {
        let text = std::fs::read_to_string(&shared_path)
            .map_err(|source| read_error(&shared_path, source))?;
        toml::from_str(&text).map_err(|error| invalid(&shared_path, toml_error(&error)))?
    } else {
        Shared::default()
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| read_error(dir, source))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "toml")
                && path.file_name().is_some_and(|name| name != SHARED_FILE)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(FixtureError::Empty(dir.display().to_string()));
    }
    files.iter().map(|path| load_case(path, &shared)).collect()
}

/// A TOML error on one line: what is wrong and where (`unknown field `x`, at line 3`).
fn toml_error(error: &toml::de::Error) -> String {
    let text = error.to_string();
    let mut lines = text.lines();
    let location = lines
        .next()
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_owned();
    match error.message() {
        message if location.is_empty() => message.to_owned(),
        message => format!("{message} ({location})"),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> FixtureError {
    FixtureError::Invalid {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn load_case(path: &Path, shared: &Shared) -> Result<Case, FixtureError> {
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let file: CaseFile =
        toml::from_str(&text).map_err(|error| invalid(path, toml_error(&error)))?;
    let expect = &file.expect;
    if expect.status.is_none() && expect.error.is_none() && expect.events.is_none() {
        return Err(invalid(
            path,
            "[expect] checks nothing: give at least `status`, `error` or `events`",
        ));
    }
    let channel = file
        .channel
        .or_else(|| shared.channel.clone())
        .unwrap_or_else(|| "fixture".to_owned());
    let now_ms = match file.now.as_ref().or(shared.now.as_ref()) {
        Some(text) => Some(
            text.parse::<jiff::Timestamp>()
                .map_err(|error| invalid(path, format!("`now` is not an RFC 3339 time: {error}")))?
                .as_millisecond(),
        ),
        None => None,
    };
    let mut config = shared.config.clone();
    config.extend(file.config);
    let mut secrets = shared.secrets.clone();
    secrets.extend(file.secrets);
    let request = request(path, &channel, file.request)?;
    Ok(Case {
        name: path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
        description: file.description,
        channel,
        now_ms,
        config,
        secrets,
        request,
        expect: file.expect,
    })
}

fn request(path: &Path, channel: &str, spec: RequestSpec) -> Result<HttpRequest, FixtureError> {
    let body = match (spec.body, spec.body_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                path,
                "[request] has both `body` and `body_file`; give one",
            ));
        }
        (Some(body), None) => body.into_bytes(),
        (None, Some(file)) => {
            let file = path.parent().unwrap_or(Path::new(".")).join(file);
            std::fs::read(&file).map_err(|source| FixtureError::Read {
                path: file.display().to_string(),
                source,
            })?
        }
        (None, None) => Vec::new(),
    };
    let headers = spec
        .headers
        .into_iter()
        .flat_map(|(name, values)| {
            let values = match values {
                HeaderValues::One(value) => vec![value],
                HeaderValues::Many(values) => values,
            };
            values.into_iter().map(move |value| Header {
                name: name.clone(),
                value,
            })
        })
        .collect();
    Ok(HttpRequest {
        method: spec
            .method
            .unwrap_or_else(|| "POST".to_owned())
            .to_ascii_uppercase(),
        path: spec.path.unwrap_or_else(|| format!("/webhooks/{channel}")),
        query: spec.query,
        headers,
        body,
    })
}

/// Run `case` through `plugin` (loaded by `runtime`) and compare with what it expects.
pub async fn run_case(
    runtime: &Runtime,
    plugin: &Arc<Plugin>,
    case: &Case,
) -> Result<CaseReport, FixtureError> {
    if plugin.role != Role::Channel {
        return Err(FixtureError::NotAChannel(plugin.label.to_string()));
    }
    let mut env = ChannelEnv::empty(&case.channel, runtime.fetch_client());
    env.config = case.config.clone();
    env.secrets = case
        .secrets
        .iter()
        .map(|(name, value)| (name.clone(), Secret::new(value.as_str())))
        .collect();
    env.fixed_now_ms = case.now_ms;
    let channel = runtime.bind_unmetered(plugin.clone(), Arc::new(env));
    let answer = channel.handle_webhook(&case.request).await;
    let received_at = case
        .now_ms
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let actual = match answer {
        Err(error) => refusal(502, "plugin_failed", error.to_string()),
        Ok(Err(error)) => refused(error),
        Ok(Ok(outcome)) => {
            let limits = crate::runtime::Limits::default();
            let meta = ChannelMeta {
                id: case.channel.clone(),
                kind: kind_name(plugin.info.kind).to_owned(),
                reply_window: None,
                max_text_bytes: limits.max_text_bytes,
                max_parts: limits.max_parts,
            };
            let normalizer = Normalizer::default();
            let mut events = Vec::with_capacity(outcome.events.len());
            let mut refused_event = None;
            for event in outcome.events {
                let contact_id = event.contact.id.clone();
                let normalized =
                    normalize::normalize(&meta.id, &meta.kind, &normalizer, event, received_at);
                match normalized {
                    Ok(normalized) => match within_limits(&meta, &normalized) {
                        Ok(()) => events.push(event_view(&contact_id, &normalized)),
                        Err(error) => {
                            let reason = match error {
                                PipelineError::TooLarge(reason) => reason,
                                other => other.to_string(),
                            };
                            refused_event = Some((413, "message_too_large", reason));
                            break;
                        }
                    },
                    Err(error) => {
                        refused_event = Some((502, "plugin_invalid_event", error.to_string()));
                        break;
                    }
                }
            }
            match refused_event {
                Some((status, code, reason)) => refusal(status, code, reason),
                None => Actual {
                    status: outcome.response.status,
                    error: None,
                    reason: None,
                    headers: outcome
                        .response
                        .headers
                        .into_iter()
                        .map(|header| (header.name, header.value))
                        .collect(),
                    body: outcome.response.body,
                    events,
                },
            }
        }
    };
    Ok(CaseReport {
        name: case.name.clone(),
        description: case.description.clone(),
        mismatches: compare(&case.expect, &actual),
        actual: actual_json(&actual),
    })
}

fn refusal(status: u16, code: &str, reason: String) -> Actual {
    Actual {
        status,
        error: Some(code.to_owned()),
        reason: Some(reason),
        headers: Vec::new(),
        body: Vec::new(),
        events: Vec::new(),
    }
}

/// A plugin's refusal as the gateway answers it (`ingress::refused`).
fn refused(error: WebhookError) -> Actual {
    match error {
        WebhookError::Unauthorized(reason) => refusal(401, "unauthorized", reason),
        WebhookError::Forbidden(reason) => refusal(403, "forbidden", reason),
        WebhookError::BadRequest(reason) => refusal(400, "bad_request", reason),
    }
}

/// An event as fixtures see it: the normalized event's fields under the names the
/// delivered events use (`type`, `external_id`, `occurred_at`, `account`, `contact.id`,
/// `contact.name`, `contact.handles`, `message`, `status`, `reaction`,
/// `target_message_id`, `referral`, `raw`).
pub fn event_view(contact_id: &str, event: &Normalized) -> Value {
    json!({
        "type": event.kind,
        "external_id": event.external_id,
        "occurred_at": event.at.to_string(),
        "account": event.account,
        "contact": {
            "id": contact_id,
            "name": event.person.name,
            "handles": event.person.handles,
        },
        "message": event.message,
        "status": event.status,
        "reaction": event.reaction,
        "target_message_id": event.target_message_id,
        "referral": event.referral,
        "raw": event.raw,
    })
}

fn actual_json(actual: &Actual) -> Value {
    json!({
        "status": actual.status,
        "error": actual.error,
        "reason": actual.reason,
        "headers": actual.headers.iter().map(|(name, value)| json!([name, value])).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&actual.body),
        "events": actual.events,
    })
}

/// Every difference between `expect` and `actual`.
fn compare(expect: &Expect, actual: &Actual) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut differ = |field: &str, expected: String, got: String| {
        out.push(Mismatch {
            field: field.to_owned(),
            expected,
            actual: got,
        });
    };
    let shown = |value: &Option<String>| match value {
        Some(text) => format!("{text:?}"),
        None => "none (accepted)".to_owned(),
    };
    if let Some(status) = expect.status
        && status != actual.status
    {
        let got = match &actual.error {
            Some(code) => format!("{} ({code}: {})", actual.status, shown(&actual.reason)),
            None => actual.status.to_string(),
        };
        differ("status", status.to_string(), got);
    }
    if let Some(error) = &expect.error {
        let wanted = (error != "none").then(|| error.clone());
        if wanted != actual.error {
            differ("error", shown(&wanted), shown(&actual.error));
        }
    }
    if let Some(part) = &expect.error_contains
        && !actual
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains(part.as_str()))
    {
        differ(
            "error_contains",
            format!("a reason containing {part:?}"),
            shown(&actual.reason),
        );
    }
    if let Some(body) = &expect.body {
        let got = String::from_utf8_lossy(&actual.body);
        if body.as_str() != got {
            differ("body", format!("{body:?}"), format!("{got:?}"));
        }
    }
    for (name, value) in &expect.headers {
        let got: Vec<&str> = actual
            .headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect();
        if !got.contains(&value.as_str()) {
            differ(
                &format!("headers.{name}"),
                format!("{value:?}"),
                format!("{got:?}"),
            );
        }
    }
    if let Some(count) = expect.events
        && count != actual.events.len()
    {
        differ("events", count.to_string(), actual.events.len().to_string());
    }
    for (index, expected) in expect.event.iter().enumerate() {
        let field = format!("event[{index}]");
        match actual.events.get(index) {
            Some(event) => compare_value(&field, expected, Some(event), &mut out),
            None => out.push(Mismatch {
                field,
                expected: "an event".to_owned(),
                actual: format!("{} event(s)", actual.events.len()),
            }),
        }
    }
    out
}

/// Compare `expected` (partial) with `actual` below `path`: tables are matched key by key,
/// arrays element by element, anything else exactly.
fn compare_value(path: &str, expected: &Value, actual: Option<&Value>, out: &mut Vec<Mismatch>) {
    match expected {
        Value::Object(fields) => {
            for (key, value) in fields {
                compare_value(
                    &format!("{path}.{key}"),
                    value,
                    actual.and_then(|actual| actual.get(key)),
                    out,
                );
            }
        }
        Value::Array(items) => {
            let got = actual.and_then(Value::as_array);
            if got.is_none_or(|got| got.len() < items.len()) {
                out.push(Mismatch {
                    field: path.to_owned(),
                    expected: format!("{} item(s) like {expected}", items.len()),
                    actual: actual.map_or("nothing".to_owned(), Value::to_string),
                });
                return;
            }
            for (index, item) in items.iter().enumerate() {
                compare_value(
                    &format!("{path}[{index}]"),
                    item,
                    got.and_then(|got| got.get(index)),
                    out,
                );
            }
        }
        scalar => {
            if !same_scalar(scalar, actual) {
                out.push(Mismatch {
                    field: path.to_owned(),
                    expected: scalar.to_string(),
                    actual: actual.map_or("nothing".to_owned(), Value::to_string),
                });
            }
        }
    }
}

/// Numbers compare by value (TOML integers against JSON floats and back).
fn same_scalar(expected: &Value, actual: Option<&Value>) -> bool {
    match (expected, actual) {
        (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
        (expected, Some(actual)) => expected == actual,
        (_, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(events: Vec<Value>) -> Actual {
        Actual {
            status: 200,
            error: None,
            reason: None,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"ok".to_vec(),
            events,
        }
    }

    fn expect(text: &str) -> Expect {
        toml::from_str(text).expect("expect table")
    }

    #[test]
    fn a_partial_event_matches_and_a_wrong_field_is_named() {
        let actual = accepted(vec![json!({
            "type": "message.received",
            "message": {"text": "Hola", "parts": []},
            "referral": {"utm": {"source": "instagram"}},
        })]);
        let good = expect(
            "status = 200\nevents = 1\n[[event]]\ntype = \"message.received\"\nmessage.text = \"Hola\"\n",
        );
        assert_eq!(compare(&good, &actual), vec![]);
        let wrong = expect("events = 1\n[[event]]\nreferral.utm.source = \"tiktok\"\n");
        assert_eq!(
            compare(&wrong, &actual),
            vec![Mismatch {
                field: "event[0].referral.utm.source".into(),
                expected: "\"tiktok\"".into(),
                actual: "\"instagram\"".into(),
            }]
        );
    }

    #[test]
    fn a_refusal_is_compared_by_status_code_and_reason() {
        let actual = refused(WebhookError::Unauthorized("bad signature".into()));
        let good = expect("status = 401\nerror = \"unauthorized\"\nerror_contains = \"signature\"");
        assert_eq!(compare(&good, &actual), vec![]);
        let wrong = expect("status = 200\nerror = \"none\"\nevents = 1");
        let fields: Vec<String> = compare(&wrong, &actual)
            .into_iter()
            .map(|m| m.field)
            .collect();
        assert_eq!(fields, ["status", "error", "events"]);
    }

    #[test]
    fn body_headers_and_missing_events_are_checked() {
        let actual = accepted(vec![]);
        let wrong = expect(
            "body = \"challenge\"\nheaders = { Content-Type = \"text/plain\" }\n[[event]]\ntype = \"x\"",
        );
        let fields: Vec<String> = compare(&wrong, &actual)
            .into_iter()
            .map(|m| m.field)
            .collect();
        assert_eq!(fields, ["body", "event[0]"]);
    }
}
