//! The funnel page: the report API's table for a date range, time zone, dimension and
//! touch, with an SVG funnel chart of its totals.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::Signed;
use super::views::{ConsoleError, NAV, Page, render};
use crate::api::reports::{FunnelQuery, funnel_report};
use crate::app::App;
use crate::outcome::report::Row;

/// Days shown when the form gives no range.
const DEFAULT_DAYS: i64 = 7;

/// One bar of the funnel chart.
pub struct Bar {
    label: &'static str,
    count: i64,
    /// Width in the SVG's 0–100 units.
    width: f64,
    /// The bar's top in the SVG.
    y: u32,
}

/// A table row as shown.
pub struct Line {
    label: String,
    conversations: i64,
    within_sla: i64,
    qualified: i64,
    won: i64,
    value: String,
    lost: String,
    /// The conversation list of this row.
    link: String,
}

#[derive(Template)]
#[template(path = "console/funnel.html")]
struct FunnelPage {
    page: Page,
    nav: [(&'static str, &'static str, &'static str); 5],
    from: String,
    to: String,
    tz: String,
    by: &'static str,
    touch: &'static str,
    bars: Vec<Bar>,
    lines: Vec<Line>,
    totals: Line,
}

/// `GET /console/funnel?from=…&to=…&tz=…&by=…&touch=…` (dates without an offset are read
/// in `tz`; by default the last 7 days in UTC by campaign, first touch).
pub async fn page(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    // An empty form field means "the default", as for the API's missing parameter.
    query.retain(|_, value| !value.trim().is_empty());
    let tz = query.get("tz").cloned().unwrap_or_else(|| "UTC".to_owned());
    let zone = crate::outcome::report::time_zone(Some(&tz))
        .map_err(|error| ConsoleError::new(StatusCode::BAD_REQUEST, error.to_string()))?;
    let today = jiff::Timestamp::now().to_zoned_datetime(zone).date();
    let day = |days: i64| {
        today
            .checked_add(jiff::Span::new().days(days))
            .map(|date| date.to_string())
            .unwrap_or_else(|_| today.to_string())
    };
    let from = query
        .entry("from".into())
        .or_insert_with(|| day(1 - DEFAULT_DAYS))
        .clone();
    let to = query.entry("to".into()).or_insert_with(|| day(1)).clone();
    query.insert("tz".into(), tz.clone());
    let parsed = FunnelQuery::parse(&query, &[])?;
    let funnel = funnel_report(&app, &parsed).await?;
    let by = parsed.dimension.name();
    let touch = match parsed.touch {
        crate::outcome::rollup::Touch::First => "first",
        crate::outcome::rollup::Touch::Last => "last",
    };
    let link = |row: &Row| {
        let key = row.key.get(by).cloned().flatten().unwrap_or_default();
        let query = serde_urlencoded::to_string([
            ("by", by),
            ("key", key.as_str()),
            ("touch", touch),
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("tz", tz.as_str()),
        ])
        .unwrap_or_default();
        format!("/console/conversations?{query}")
    };
    let line = |row: &Row, label: String| Line {
        label,
        conversations: row.conversations,
        within_sla: row.answered_within_sla,
        qualified: row.stages.get("qualified").copied().unwrap_or(0),
        won: row.won,
        value: joined(
            row.value
                .iter()
                .map(|(currency, value)| format!("{value} {currency}")),
        ),
        lost: joined(row.lost.iter().map(|(reason, n)| format!("{reason}: {n}"))),
        link: link(row),
    };
    let lines = funnel
        .rows
        .iter()
        .map(|row| {
            let label = row
                .key
                .get(by)
                .cloned()
                .flatten()
                .unwrap_or_else(|| format!("(no {by})"));
            line(row, label)
        })
        .collect();
    let mut totals = line(&funnel.totals, "Total".to_owned());
    totals.link = link_all(&from, &to, &tz);
    Ok(render(
        StatusCode::OK,
        &FunnelPage {
            page: Page::new("Funnel", "funnel", &session.csrf),
            nav: NAV,
            bars: bars(&funnel.totals),
            from,
            to,
            tz,
            by,
            touch,
            lines,
            totals,
        },
    ))
}

fn link_all(from: &str, to: &str, tz: &str) -> String {
    let query =
        serde_urlencoded::to_string([("from", from), ("to", to), ("tz", tz)]).unwrap_or_default();
    format!("/console/conversations?{query}")
}

fn joined(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// The chart: conversations → answered within SLA → qualified → won, widths relative to
/// the conversations.
fn bars(totals: &Row) -> Vec<Bar> {
    let steps = [
        ("Conversations", totals.conversations),
        ("Answered within SLA", totals.answered_within_sla),
        (
            "Qualified",
            totals.stages.get("qualified").copied().unwrap_or(0),
        ),
        ("Won", totals.won),
    ];
    let widest = steps.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    steps
        .into_iter()
        .zip(0u32..)
        .map(|((label, count), index)| Bar {
            label,
            count,
            // Counts are small enough that f64 is exact; a bar never drops below a sliver.
            width: (count.max(0) as f64 / widest as f64 * 100.0).max(0.5),
            y: index * 30,
        })
        .collect()
}
