//! Reports: `GET /v1/reports/funnel` (rollups added up, JSON or CSV) and
//! `GET /v1/exports/conversations` (one row per conversation, NDJSON or CSV, by cursor).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::lookup;
use crate::app::App;
use crate::http_error::ApiError;
use crate::outcome::OutcomeRecord;
use crate::outcome::report::{self, ReportError};
use crate::outcome::rollup::{self, Dimension, Touch};
use crate::store::{StartedRef, Tracked};

fn invalid(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_field",
        format!("`{field}` {reason}"),
    )
}

fn report_error(error: ReportError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", error.to_string())
}

fn known(query: &HashMap<String, String>, fields: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|key| !fields.contains(&key.as_str())) {
        Some(unknown) => Err(invalid(unknown, "is not a parameter of this report")),
        None => Ok(()),
    }
}

/// The `[from, to)` range of a query, as instants (`tz` reads dates without offset).
fn range(query: &HashMap<String, String>) -> Result<(jiff::Timestamp, jiff::Timestamp), ApiError> {
    let tz = report::time_zone(query.get("tz").map(String::as_str)).map_err(report_error)?;
    let at = |field: &'static str| {
        let text = query
            .get(field)
            .ok_or_else(|| invalid(field, "is required"))?;
        report::instant(field, text, &tz).map_err(report_error)
    };
    Ok((at("from")?, at("to")?))
}

fn wants_csv(headers: &HeaderMap, format: Option<&String>) -> Result<bool, ApiError> {
    match format.map(String::as_str) {
        Some("csv") => return Ok(true),
        Some("json" | "ndjson") => return Ok(false),
        Some(other) => {
            return Err(invalid(
                "format",
                format!("`{other}` is not csv, json or ndjson"),
            ));
        }
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv")))
}

/// A funnel report's parameters, checked.
#[derive(Debug, Clone, Copy)]
pub struct FunnelQuery {
    /// Start of the range (conversations started at or after).
    pub from: jiff::Timestamp,
    /// End of the range (started before).
    pub to: jiff::Timestamp,
    /// Rows by channel, campaign, ad or source.
    pub dimension: Dimension,
    /// Keys of the first or the last touch.
    pub touch: Touch,
}

impl FunnelQuery {
    /// The parameters `from`, `to`, `tz`, `by` and `touch` of `query` (any other but
    /// those in `also` is refused by name).
    pub fn parse(query: &HashMap<String, String>, also: &[&str]) -> Result<Self, ApiError> {
        let fields: Vec<&str> = ["from", "to", "tz", "by", "touch"]
            .into_iter()
            .chain(also.iter().copied())
            .collect();
        known(query, &fields)?;
        let dimension = match query.get("by").map(String::as_str) {
            None | Some("campaign") => Dimension::Campaign,
            Some("channel") => Dimension::Channel,
            Some("ad") => Dimension::Ad,
            Some("source") => Dimension::Source,
            Some(other) => {
                return Err(invalid(
                    "by",
                    format!("`{other}` is not channel, campaign, ad or source"),
                ));
            }
        };
        let touch = match query.get("touch").map(String::as_str) {
            None | Some("first") => Touch::First,
            Some("last") => Touch::Last,
            Some(other) => {
                return Err(invalid("touch", format!("`{other}` is not first or last")));
            }
        };
        let (from, to) = range(query)?;
        Ok(Self {
            from,
            to,
            dimension,
            touch,
        })
    }
}

/// The funnel of `query`: the rollups of its hours added up, per key. What the API and
/// the console both call.
pub async fn funnel_report(app: &App, query: &FunnelQuery) -> Result<report::Funnel, ApiError> {
    let (from_hour, to_hour) = report::hours(query.from, query.to).map_err(report_error)?;
    let (buckets, signs): (Vec<String>, Vec<i64>) = rollup::cover(from_hour, to_hour)
        .into_iter()
        .map(|(bucket, sign)| (bucket.name(), sign))
        .unzip();
    // This instance's queued counter changes first: a caller reads its own writes.
    app.pipeline.flush_rollups().await;
    let counters = app
        .pipeline
        .store()
        .outcomes()
        .rollups(rollup::table(query.touch, query.dimension), &buckets)
        .await
        .map_err(lookup::unavailable)?;
    let signed: Vec<_> = counters.into_iter().zip(signs).collect();
    Ok(report::funnel(query.dimension, &signed))
}

/// `GET /v1/reports/funnel?from=…&to=…&tz=Europe/Madrid&by=campaign&touch=first`: the
/// conversations started in the range and what became of them, per key.
pub async fn funnel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let parsed = FunnelQuery::parse(&query, &["format"])?;
    let csv = wants_csv(&headers, query.get("format"))?;
    let funnel = funnel_report(&app, &parsed).await?;
    if csv {
        let text = report::csv(parsed.dimension, &funnel)
            .map_err(|error| ApiError::unavailable("report_failed", error.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(Json(json!({
        "from": parsed.from,
        "to": parsed.to,
        "by": parsed.dimension.name(),
        "touch": parsed.touch,
        "rows": funnel.rows,
        "totals": funnel.totals,
    }))
    .into_response())
}

/// Rows per export page when `limit` is not given.
const DEFAULT_EXPORT_LIMIT: usize = 1000;
/// Largest export page.
const MAX_EXPORT_LIMIT: usize = 10_000;
/// Conversations read at once while streaming a page.
const EXPORT_CHUNK: usize = 50;
/// The header carrying the next page's cursor.
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// `GET /v1/exports/conversations?from=…&to=…&cursor=…&limit=…`: one row per
/// conversation started in the range (attribution, stage, first response, value, lost
/// reasons), streamed as NDJSON (or CSV with `Accept: text/csv`); the header
/// `X-Next-Cursor` names the next page while there is one. Erased contacts are gone.
pub async fn conversations(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    known(&query, &["from", "to", "tz", "cursor", "limit", "format"])?;
    let csv = wants_csv(&headers, query.get("format"))?;
    let (from, to) = range(&query)?;
    if to <= from {
        return Err(invalid("to", "must be after `from`"));
    }
    let limit = match query.get("limit") {
        None => DEFAULT_EXPORT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_EXPORT_LIMIT).contains(limit))
            .ok_or_else(|| super::out_of_range("limit", 1, MAX_EXPORT_LIMIT as u64))?,
    };
    let after = query
        .get("cursor")
        .map(|cursor| parse_cursor(cursor))
        .transpose()?;
    let store = app.pipeline.store().clone();
    let page = store
        .outcomes()
        .started(
            from.as_millisecond(),
            to.as_millisecond(),
            after.as_ref(),
            limit,
        )
        .await
        .map_err(lookup::unavailable)?;
    let next = (page.len() == limit)
        .then(|| page.last().map(cursor))
        .flatten();
    let header_row = csv.then(|| csv_line(&CSV_COLUMNS.map(String::from)));
    let chunks: Vec<Vec<StartedRef>> = page.chunks(EXPORT_CHUNK).map(<[_]>::to_vec).collect();
    let rows = futures::stream::iter(chunks).then(move |chunk| {
        let store = store.clone();
        async move {
            let read = futures::future::join_all(
                chunk
                    .iter()
                    .map(|started| store.outcomes().tracked(&started.conversation_id)),
            )
            .await;
            let mut text = String::new();
            for tracked in read {
                let tracked = tracked.map_err(std::io::Error::other)?;
                let Some(row) = tracked.as_ref().and_then(export_row) else {
                    continue;
                };
                text.push_str(&if csv {
                    csv_row(&row)
                } else {
                    format!("{row}\n")
                });
            }
            Ok::<_, std::io::Error>(text)
        }
    });
    let body = futures::stream::iter(header_row.map(Ok)).chain(rows);
    let mut response = Response::new(Body::from_stream(body));
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(next) = next.and_then(|next| HeaderValue::from_str(&next).ok()) {
        response.headers_mut().insert(NEXT_CURSOR, next);
    }
    Ok(response)
}

use futures::StreamExt as _;

fn cursor(started: &StartedRef) -> String {
    format!("{}.{}", started.at_ms, started.conversation_id)
}

fn parse_cursor(text: &str) -> Result<StartedRef, ApiError> {
    let (ms, id) = text
        .split_once('.')
        .ok_or_else(|| invalid("cursor", "is not a cursor from `X-Next-Cursor`"))?;
    let at_ms = ms
        .parse::<i64>()
        .map_err(|_| invalid("cursor", "is not a cursor from `X-Next-Cursor`"))?;
    Ok(StartedRef {
        at_ms,
        conversation_id: id.to_owned(),
    })
}

/// One export row (JSON); `None` for a conversation never tracked.
fn export_row(tracked: &Tracked) -> Option<Value> {
    let conversation = &tracked.conversation;
    let record = tracked
        .record
        .as_deref()
        .and_then(|json| OutcomeRecord::from_json(json).ok())?;
    let value: HashMap<String, String> = record
        .value_by_currency()
        .into_iter()
        .map(|(currency, value)| (currency, value.to_string()))
        .collect();
    let mut lost: Vec<&str> = record
        .lost
        .iter()
        .map(|lost| lost.reason.as_str())
        .collect();
    lost.extend(record.lost_reason.as_deref());
    Some(json!({
        "conversation_id": conversation.id,
        "contact_id": conversation.contact_id,
        "started_at": conversation.started_at,
        "status": conversation.status,
        "channels": conversation.channels_used,
        "first_touch": conversation.attribution.first_touch,
        "last_touch": conversation.attribution.last_touch,
        "stage": record.stage,
        "first_response_at": record.first_response_at,
        "first_response_seconds": record.first_response_seconds,
        "within_sla": record.first_response_at.map(|_| record.within_sla),
        "conversions": record.conversions.len(),
        "value": value,
        "lost": lost,
    }))
}

const CSV_COLUMNS: [&str; 16] = [
    "conversation_id",
    "contact_id",
    "started_at",
    "status",
    "first_channel",
    "first_source",
    "first_campaign",
    "first_ad",
    "last_source",
    "last_campaign",
    "last_ad",
    "stage",
    "first_response_seconds",
    "within_sla",
    "value",
    "lost",
];

fn csv_row(row: &Value) -> String {
    let text = |value: &Value| match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let touch = |which: &str, field: &str| {
        let key = if field == "ad" { "ad_id" } else { field };
        text(&row[which][key])
    };
    let value = row["value"]
        .as_object()
        .map(|values| {
            values
                .iter()
                .map(|(currency, value)| format!("{} {currency}", text(value)))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default();
    let lost = row["lost"]
        .as_array()
        .map(|lost| lost.iter().map(text).collect::<Vec<_>>().join(";"))
        .unwrap_or_default();
    csv_line(&[
        text(&row["conversation_id"]),
        text(&row["contact_id"]),
        text(&row["started_at"]),
        text(&row["status"]),
        text(&row["channels"][0]),
        touch("first_touch", "source"),
        touch("first_touch", "campaign"),
        touch("first_touch", "ad"),
        touch("last_touch", "source"),
        touch("last_touch", "campaign"),
        touch("last_touch", "ad"),
        text(&row["stage"]),
        text(&row["first_response_seconds"]),
        text(&row["within_sla"]),
        value,
        lost,
    ])
}

fn csv_line(fields: &[String]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing strings to a Vec cannot fail.
    let _ = writer.write_record(fields);
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
