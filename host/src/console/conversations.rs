//! Conversations: the list with filters, one conversation's timeline (live through
//! server-sent events), the reply box and stage changes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures::Stream;
use serde::Deserialize;

use super::auth::{Action, Signed, WithCsrf};
use super::views::{ConsoleError, NAV, Page, render};
use crate::api::lookup;
use crate::app::App;
use crate::outcome::rollup::Dimension;
use crate::outcome::{ConversionRef, OutcomeRecord, StageMove};
use crate::store::{TimelineEntry, Tracked};

/// Conversations listed at most (the newest of the range).
const MAX_LISTED: usize = 200;
/// Started conversations read from the index at most for one list.
const MAX_SCANNED: usize = 2000;
/// Days listed when the filter gives no range.
const DEFAULT_DAYS: i64 = 7;
/// A reply window closing within this is "about to close".
const WINDOW_CLOSING: i64 = 2 * 3600;
/// Timeline entries shown at most.
const MAX_TIMELINE: usize = 500;
/// How often the live timeline looks for new entries.
const LIVE_POLL: Duration = Duration::from_millis(500);
/// How often the live list reads the list again (a read is one store call per listed
/// conversation, so less often than a timeline).
const LIST_POLL: Duration = Duration::from_secs(2);

/// One conversation of the list.
pub struct Item {
    id: String,
    started_at: String,
    channel: String,
    stage: String,
    campaign: String,
    lost: String,
    waiting: bool,
    messages: u64,
}

/// The list's filters (every one optional).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    stage: String,
    channel: String,
    campaign: String,
    lost: String,
    /// `on`: only conversations waiting for an answer now.
    waiting: String,
    /// `on`: only conversations whose reply window closes within two hours.
    window: String,
    /// From the funnel: the dimension and key of a row, and the touch.
    by: String,
    key: Option<String>,
    touch: String,
    from: String,
    to: String,
    tz: String,
}

#[derive(Template)]
#[template(path = "console/conversations.html")]
struct ListPage {
    page: Page,
    nav: [(&'static str, &'static str, &'static str); 5],
    filters: Filters,
    count: usize,
    /// Each row's HTML (rendered by the `row` template, as the live stream's).
    rows: Vec<String>,
    truncated: bool,
    /// The live stream of this list (the same filters).
    events: String,
}

fn bad(message: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::new(StatusCode::BAD_REQUEST, message.to_string())
}

/// The `[from, to)` of the filters, as the funnel reads them (default: the last 7 days).
fn range(filters: &Filters) -> Result<(jiff::Timestamp, jiff::Timestamp), ConsoleError> {
    let tz =
        crate::outcome::report::time_zone(Some(filters.tz.as_str()).filter(|tz| !tz.is_empty()))
            .map_err(bad)?;
    let now = jiff::Timestamp::now();
    let at = |field: &'static str, text: &str, default: jiff::Timestamp| {
        if text.is_empty() {
            Ok(default)
        } else {
            crate::outcome::report::instant(field, text, &tz).map_err(bad)
        }
    };
    let week = jiff::SignedDuration::from_hours(24 * DEFAULT_DAYS);
    Ok((
        at("from", &filters.from, now - week)?,
        at("to", &filters.to, now + jiff::SignedDuration::from_hours(1))?,
    ))
}

/// Whether a conversation passes the filters (`dimension`: the funnel row's).
fn passes(
    filters: &Filters,
    dimension: Option<Dimension>,
    tracked: &Tracked,
    record: Option<&OutcomeRecord>,
    now: jiff::Timestamp,
) -> bool {
    let conversation = &tracked.conversation;
    let stage = record.map(|record| record.stage.as_str()).unwrap_or("");
    let lost = |reason: &str| {
        record.is_some_and(|record| {
            record.has_lost(reason) || record.lost_reason.as_deref() == Some(reason)
        })
    };
    let touch = record.map(|record| match filters.touch.as_str() {
        "last" => &record.last,
        _ => &record.first,
    });
    let closing = conversation
        .reply_window_until
        .is_some_and(|until| until > now && (until - now).as_secs() <= WINDOW_CLOSING);
    (filters.stage.is_empty() || stage == filters.stage)
        && (filters.channel.is_empty() || conversation.current_channel == filters.channel)
        && (filters.campaign.is_empty()
            || touch.and_then(|keys| keys.campaign.as_deref()) == Some(filters.campaign.as_str()))
        && (filters.lost.is_empty() || lost(&filters.lost))
        && (filters.waiting.is_empty() || conversation.awaiting_since.is_some())
        && (filters.window.is_empty() || closing)
        && match (dimension, &filters.key) {
            // The funnel's own rule picks the row's conversations (an empty key: "none").
            (Some(dimension), Some(key)) => {
                touch.is_some_and(|keys| dimension.of(keys).unwrap_or("") == key.as_str())
            }
            _ => true,
        }
}

/// `GET /console/conversations?…`: conversations started in the range, newest first;
/// the list follows new conversations and messages through
/// `/console/conversations/events` with the same filters.
pub async fn list(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
    Query(filters): Query<Filters>,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let (items, truncated) = listed(&app, &filters).await?;
    let rows = items
        .iter()
        .filter_map(|item| row_html(item).ok())
        .collect();
    let events = match query.filter(|query| !query.is_empty()) {
        Some(query) => format!("/console/conversations/events?{query}"),
        None => "/console/conversations/events".to_owned(),
    };
    Ok(render(
        StatusCode::OK,
        &ListPage {
            page: Page::new("Conversations", "conversations", &session.csrf),
            nav: NAV,
            filters,
            count: items.len(),
            rows,
            truncated,
            events,
        },
    ))
}

/// The funnel dimension a list filters by (`by`), if any.
fn dimension(filters: &Filters) -> Result<Option<Dimension>, ConsoleError> {
    Ok(match filters.by.as_str() {
        "" => None,
        "channel" => Some(Dimension::Channel),
        "campaign" => Some(Dimension::Campaign),
        "ad" => Some(Dimension::Ad),
        "source" => Some(Dimension::Source),
        other => {
            return Err(bad(format!(
                "`by` `{other}` is not channel, campaign, ad or source"
            )));
        }
    })
}

/// The conversations the filters list, newest first, and whether there were more.
async fn listed(app: &App, filters: &Filters) -> Result<(Vec<Item>, bool), ConsoleError> {
    let dimension = dimension(filters)?;
    let (from, to) = range(filters)?;
    let store = app.pipeline.store();
    let started = store
        .outcomes()
        .started(
            from.as_millisecond(),
            to.as_millisecond(),
            None,
            MAX_SCANNED,
        )
        .await
        .map_err(lookup::unavailable)?;
    let now = jiff::Timestamp::now();
    let mut items = Vec::new();
    for started in started.iter().rev() {
        if items.len() == MAX_LISTED {
            break;
        }
        let Some(tracked) = store
            .outcomes()
            .tracked(&started.conversation_id)
            .await
            .map_err(lookup::unavailable)?
        else {
            continue;
        };
        let record = tracked
            .record
            .as_deref()
            .and_then(|json| OutcomeRecord::from_json(json).ok());
        if !passes(filters, dimension, &tracked, record.as_ref(), now) {
            continue;
        }
        items.push(item(&tracked, record.as_ref()));
    }
    let truncated = items.len() == MAX_LISTED || started.len() == MAX_SCANNED;
    Ok((items, truncated))
}

/// One row of the list (the page's and the live stream's).
#[derive(Template)]
#[template(path = "console/row.html")]
struct Row<'a> {
    item: &'a Item,
}

fn row_html(item: &Item) -> Result<String, askama::Error> {
    Row { item }.render()
}

/// `GET /console/conversations/events?<the list's filters>`: server-sent events, one
/// `row` (its HTML, `id="row-<conversation>"`) per conversation of the list that is new
/// or changed since the stream began (the first read sends every row, so nothing written
/// between the page and the stream is missed; the page replaces a row by its id). The
/// list is read again every [`LIST_POLL`] from the store, so conversations of any
/// instance of a fleet appear. The stream ends when the gateway shuts down.
pub async fn list_events(
    State(app): State<Arc<App>>,
    Signed(_): Signed,
    Query(filters): Query<Filters>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    dimension(&filters)?;
    range(&filters)?;
    let closed = app
        .console
        .as_ref()
        .map(|console| console.closed())
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "the console is disabled"))?;
    let live = LiveList {
        app,
        filters,
        sent: std::collections::HashMap::new(),
        queued: Vec::new(),
        first: true,
        closed: Box::pin(closed),
    };
    let stream = futures::stream::unfold(live, |mut live| async move {
        let event = live.next().await?;
        Some((Ok(event), live))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The state of one live conversation list.
struct LiveList {
    app: Arc<App>,
    filters: Filters,
    /// Each row sent, by conversation: a row is sent again only when it changed.
    sent: std::collections::HashMap<String, String>,
    /// Events read but not sent yet, the next last.
    queued: Vec<Event>,
    /// No read yet: the first one is sent at once.
    first: bool,
    closed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl LiveList {
    /// The next changed row's event; `None` once the gateway shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop() {
                return Some(event);
            }
            if !std::mem::take(&mut self.first) {
                tokio::select! {
                    () = tokio::time::sleep(LIST_POLL) => {}
                    () = &mut self.closed => return None,
                }
            }
            match listed(&self.app, &self.filters).await {
                // The queue is sent from its end: the oldest row first. The page
                // puts each new row on top, so the newest ends up first.
                Ok((items, _)) => self.queued = self.changed(&items),
                Err(error) => {
                    tracing::warn!(error = %error.message, "console live list: not read");
                }
            }
        }
    }

    /// The events of the rows that changed, in the list's order (newest first).
    fn changed(&mut self, items: &[Item]) -> Vec<Event> {
        let mut events = Vec::new();
        for item in items {
            let Ok(html) = row_html(item) else { continue };
            if self.sent.get(&item.id) == Some(&html) {
                continue;
            }
            self.sent.insert(item.id.clone(), html.clone());
            events.push(Event::default().event("row").data(html));
        }
        events
    }
}

fn item(tracked: &Tracked, record: Option<&OutcomeRecord>) -> Item {
    let conversation = &tracked.conversation;
    Item {
        id: conversation.id.clone(),
        started_at: short_time(conversation.started_at),
        channel: conversation.current_channel.clone(),
        stage: record
            .map(|record| record.stage.clone())
            .unwrap_or_default(),
        campaign: record
            .and_then(|record| record.first.campaign.clone())
            .unwrap_or_default(),
        lost: record
            .map(|record| {
                let mut reasons: Vec<&str> = record
                    .lost
                    .iter()
                    .map(|lost| lost.reason.as_str())
                    .collect();
                reasons.extend(record.lost_reason.as_deref());
                reasons.join(", ")
            })
            .unwrap_or_default(),
        waiting: conversation.awaiting_since.is_some(),
        messages: conversation.messages,
    }
}

fn short_time(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One timeline entry as shown.
#[derive(Template)]
#[template(path = "console/entry.html")]
pub struct Shown {
    at: String,
    kind: String,
    channel: String,
    /// `inbound`, `outbound` or empty.
    direction: String,
    text: String,
}

fn shown(entry: &TimelineEntry) -> Shown {
    let (direction, text) = match (&entry.message, &entry.referral) {
        (Some(message), _) => (
            serde_json::to_value(message.direction)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default(),
            message
                .text
                .clone()
                .unwrap_or_else(|| message.parts.join(", ")),
        ),
        (None, Some(referral)) => (String::new(), referral_text(referral)),
        (None, None) => (
            String::new(),
            entry
                .previous_channel
                .as_ref()
                .map(|previous| format!("from {previous} to {}", entry.channel))
                .unwrap_or_default(),
        ),
    };
    Shown {
        at: short_time(entry.at),
        kind: entry.kind.clone(),
        channel: entry.channel.clone(),
        direction,
        text,
    }
}

/// A stage change as a timeline entry (`lead → lost: price, by console`).
fn shown_move(moved: &StageMove) -> Shown {
    let mut text = format!("{} → {}", moved.from, moved.to);
    if let Some(reason) = &moved.reason {
        text.push_str(&format!(": {reason}"));
    }
    if let Some(by) = &moved.by {
        text.push_str(&format!(", by {by}"));
    }
    Shown {
        at: short_time(moved.at),
        kind: "conversation.stage_changed".to_owned(),
        channel: String::new(),
        direction: String::new(),
        text,
    }
}

/// A conversion as a timeline entry (`purchase order-1 129.90 EUR`).
fn shown_conversion(conversion: &ConversionRef) -> Shown {
    Shown {
        at: short_time(conversion.occurred_at),
        kind: "conversion.recorded".to_owned(),
        channel: String::new(),
        direction: String::new(),
        text: conversion_text(conversion),
    }
}

fn conversion_text(conversion: &ConversionRef) -> String {
    let value = match (&conversion.value, &conversion.currency) {
        (Some(value), Some(currency)) => format!(" {value} {currency}"),
        _ => String::new(),
    };
    format!("{} {}{value}", conversion.name, conversion.id)
}

/// The timeline as shown: the store's entries with the outcome's stage changes and
/// conversions among them, in time order (ties keep the store's entries first).
fn merged(entries: &[TimelineEntry], record: Option<&OutcomeRecord>) -> Vec<String> {
    let mut all: Vec<(jiff::Timestamp, Shown)> = entries
        .iter()
        .map(|entry| (entry.at, shown(entry)))
        .collect();
    if let Some(record) = record {
        all.extend(
            record
                .moves
                .iter()
                .map(|moved| (moved.at, shown_move(moved))),
        );
        all.extend(
            record
                .conversions
                .iter()
                .map(|conversion| (conversion.occurred_at, shown_conversion(conversion))),
        );
    }
    // A stable sort: entries at the same instant keep the order they were added in.
    all.sort_by_key(|(at, _)| *at);
    all.into_iter()
        .filter_map(|(_, shown)| shown.render().ok())
        .collect()
}

/// A referral's plain fields (`source: link · campaign: spring · url: …`).
fn referral_text(referral: &impl serde::Serialize) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(referral) else {
        return String::new();
    };
    fields
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "at" | "channel"))
        .filter_map(|(name, value)| value.as_str().map(|text| format!("{name}: {text}")))
        .collect::<Vec<_>>()
        .join(" · ")
}

#[derive(Template)]
#[template(path = "console/conversation.html")]
struct ConversationPage {
    page: Page,
    nav: [(&'static str, &'static str, &'static str); 5],
    id: String,
    contact_id: String,
    channel: String,
    status: String,
    reply_window: String,
    stage: String,
    lost_reason: String,
    reached: String,
    conversions: Vec<String>,
    first_response: String,
    /// The entries' HTML (each rendered by the `entry` template, as the live stream's).
    entries: Vec<String>,
    /// Where the live stream starts (`timeline.moves.conversions`).
    cursor: String,
    stages: Vec<String>,
}

/// `GET /console/conversations/{id}`: the timeline, the outcome, the reply box and the
/// stage form.
pub async fn show(
    State(app): State<Arc<App>>,
    Signed(session): Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let store = app.pipeline.store();
    let conversation = lookup::conversation(store, &id).await?;
    let page = store
        .timeline(&id, 0, MAX_TIMELINE)
        .await
        .map_err(lookup::unavailable)?;
    let record = store
        .outcomes()
        .tracked(&id)
        .await
        .map_err(lookup::unavailable)?
        .and_then(|tracked| tracked.record)
        .and_then(|json| OutcomeRecord::from_json(&json).ok());
    let now = jiff::Timestamp::now();
    let reply_window = match conversation.reply_window_until {
        None => "no window on this channel".to_owned(),
        Some(until) if until <= now => format!("closed since {}", short_time(until)),
        Some(until) => format!("open until {}", short_time(until)),
    };
    let cursor = Cursor {
        timeline: page.entries.len() as u64,
        moves: record.as_ref().map_or(0, |record| record.moves.len()),
        conversions: record.as_ref().map_or(0, |record| record.conversions.len()),
    };
    let record_text =
        |pick: fn(&OutcomeRecord) -> String| record.as_ref().map(pick).unwrap_or_default();
    Ok(render(
        StatusCode::OK,
        &ConversationPage {
            page: Page::new(format!("Conversation {id}"), "conversations", &session.csrf),
            nav: NAV,
            contact_id: conversation.contact_id.clone(),
            channel: conversation.current_channel.clone(),
            status: serde_json::to_value(conversation.status)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default(),
            reply_window,
            stage: record_text(|record| {
                format!("{} since {}", record.stage, short_time(record.stage_at))
            }),
            lost_reason: record_text(|record| record.lost_reason.clone().unwrap_or_default()),
            reached: record_text(|record| record.reached.join(" → ")),
            conversions: record
                .as_ref()
                .map(|record| {
                    record
                        .conversions
                        .iter()
                        .map(|conversion| {
                            format!(
                                "{} at {}",
                                conversion_text(conversion),
                                short_time(conversion.occurred_at)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            first_response: record_text(|record| {
                match (record.first_response_seconds, record.first_response_at) {
                    (Some(seconds), Some(_)) => format!(
                        "{seconds} s{}",
                        if record.within_sla {
                            " (within SLA)"
                        } else {
                            " (over SLA)"
                        }
                    ),
                    _ => "not answered yet".to_owned(),
                }
            }),
            entries: merged(&page.entries, record.as_ref()),
            cursor: cursor.to_string(),
            stages: app.pipeline.outcome_settings().stages.clone(),
            id,
        },
    ))
}

/// Where a live timeline is: entries of the store's timeline, stage changes and
/// conversions of the outcome record already shown. Written `timeline.moves.conversions`
/// (an event's id, so a browser that reconnects sends it back as `Last-Event-ID`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    timeline: u64,
    moves: usize,
    conversions: usize,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.timeline, self.moves, self.conversions)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    /// `timeline.moves.conversions`, or a bare timeline position (the outcome's entries
    /// then all count as new).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a timeline cursor (`<n>.<n>.<n>`)");
        let mut parts = text.split('.');
        let mut next = |required: bool| match parts.next() {
            Some(part) => part.parse::<u64>().map_err(|_| bad()),
            None if required => Err(bad()),
            None => Ok(0),
        };
        let timeline = next(true)?;
        let moves = usize::try_from(next(false)?).map_err(|_| bad())?;
        let conversions = usize::try_from(next(false)?).map_err(|_| bad())?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            timeline,
            moves,
            conversions,
        })
    }
}

/// `?from=<cursor>` of the event stream.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    from: String,
}

/// `GET /console/conversations/{id}/events?from=<cursor>`: server-sent events, one
/// `entry` (its HTML) per new timeline entry, stage change or conversion, its id the
/// cursor after it (a browser that reconnects sends it back as `Last-Event-ID` and misses
/// nothing, repeats nothing). The store is read every half second, so entries written by
/// any instance of a fleet arrive. The stream ends when the gateway shuts down.
pub async fn events(
    State(app): State<Arc<App>>,
    Signed(_): Signed,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    lookup::conversation(app.pipeline.store(), &id).await?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<Cursor>().ok());
    let cursor = match resumed {
        Some(cursor) => cursor,
        None if query.from.is_empty() => Cursor::default(),
        None => query.from.parse().map_err(bad)?,
    };
    let closed = app
        .console
        .as_ref()
        .map(|console| console.closed())
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "the console is disabled"))?;
    let live = Live {
        app,
        id,
        cursor,
        queued: Vec::new(),
        closed: Box::pin(closed),
    };
    let stream = futures::stream::unfold(live, |mut live| async move {
        let event = live.next().await?;
        Some((Ok(event), live))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The state of one live timeline.
struct Live {
    app: Arc<App>,
    id: String,
    /// What was sent already.
    cursor: Cursor,
    /// Events read but not sent yet, the next last.
    queued: Vec<Event>,
    closed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Live {
    /// The next entry's event; `None` once the gateway shuts down or the conversation is
    /// gone (erased).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop() {
                return Some(event);
            }
            tokio::select! {
                () = tokio::time::sleep(LIVE_POLL) => {}
                () = &mut self.closed => return None,
            }
            match self.read().await {
                Ok(mut events) => {
                    events.reverse();
                    self.queued = events;
                }
                Err(crate::store::StoreError::NotFound { .. }) => return None,
                Err(error) => tracing::warn!(%error, "console live timeline: store unavailable"),
            }
        }
    }

    /// The events of what is new since the cursor, in order: the store's entries, then
    /// the outcome's stage changes and conversions (each moves the cursor on).
    async fn read(&mut self) -> Result<Vec<Event>, crate::store::StoreError> {
        let store = self.app.pipeline.store();
        let page = store.timeline(&self.id, self.cursor.timeline, 100).await?;
        let record = store
            .outcomes()
            .tracked(&self.id)
            .await?
            .and_then(|tracked| tracked.record)
            .and_then(|json| OutcomeRecord::from_json(&json).ok());
        let mut events = Vec::new();
        for entry in &page.entries {
            self.cursor.timeline += 1;
            events.push(self.event(&shown(entry)));
        }
        if let Some(record) = record {
            for moved in record.moves.iter().skip(self.cursor.moves) {
                self.cursor.moves += 1;
                events.push(self.event(&shown_move(moved)));
            }
            for conversion in record.conversions.iter().skip(self.cursor.conversions) {
                self.cursor.conversions += 1;
                events.push(self.event(&shown_conversion(conversion)));
            }
        }
        Ok(events)
    }

    /// One entry's event, its id the cursor after it.
    fn event(&self, shown: &Shown) -> Event {
        Event::default()
            .event("entry")
            .id(self.cursor.to_string())
            .data(shown.render().unwrap_or_default())
    }
}

/// The reply box.
#[derive(Deserialize)]
pub struct ReplyForm {
    #[serde(default)]
    csrf: String,
    text: String,
}

impl WithCsrf for ReplyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/conversations/{id}/reply`: the API's reply, on the conversation's
/// current channel, written by an agent of the console.
pub async fn reply(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Action(_, form): Action<ReplyForm>,
) -> Result<Response, ConsoleError> {
    let body = crate::api::messages::SendBody {
        text: form.text,
        reply_to: None,
        author: Some(crate::outcome::Author {
            kind: crate::outcome::AuthorKind::Agent,
            id: Some("console".to_owned()),
        }),
    };
    crate::api::messages::reply(&app, &id, body).await?;
    Ok(back(&id))
}

/// The stage form.
#[derive(Deserialize)]
pub struct StageForm {
    #[serde(default)]
    csrf: String,
    stage: String,
    #[serde(default)]
    reason: String,
}

impl WithCsrf for StageForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /console/conversations/{id}/stage`: the API's stage change (`lost` needs a
/// reason).
pub async fn stage(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Action(_, form): Action<StageForm>,
) -> Result<Response, ConsoleError> {
    let reason = Some(form.reason.trim()).filter(|reason| !reason.is_empty());
    let change = crate::api::outcomes::StageChange {
        stage: form.stage.trim(),
        reason,
        by: Some("console"),
        reopen: false,
    };
    crate::api::outcomes::change_stage(&app, &id, change).await?;
    Ok(back(&id))
}

fn back(id: &str) -> Response {
    let path = format!("/console/conversations/{}", urlencoding(id));
    Redirect::to(&path).into_response()
}

fn urlencoding(text: &str) -> String {
    // Ids are ULID-based; anything else is percent-encoded so the path stays one segment.
    serde_urlencoded::to_string([("", text)])
        .map(|pair| pair.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + second).expect("time")
    }

    #[test]
    fn a_cursor_reads_back_what_it_writes_and_refuses_anything_else() {
        let cursor = Cursor {
            timeline: 12,
            moves: 2,
            conversions: 1,
        };
        assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
        assert_eq!(
            "7".parse::<Cursor>(),
            Ok(Cursor {
                timeline: 7,
                ..Cursor::default()
            }),
            "a bare position (an older page's)"
        );
        for bad in ["", "x", "1.2.3.4", "1.-2.0", "1..2"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stage_changes_and_conversions_go_among_the_entries_in_time_order() {
        let mut message = TimelineEntry::new("conversation.started", at(0), "web");
        let started = message.clone();
        message.kind = "referral".into();
        message.at = at(20);
        let record = OutcomeRecord {
            moves: vec![crate::outcome::StageMove {
                at: at(10),
                from: "lead".into(),
                to: "lost".into(),
                reason: Some("price".into()),
                by: Some("console".into()),
            }],
            conversions: vec![ConversionRef {
                id: "order-1".into(),
                name: "purchase".into(),
                value: Some("9.90".parse().expect("decimal")),
                currency: Some("EUR".into()),
                occurred_at: at(30),
            }],
            ..serde_json::from_value(serde_json::json!({
                "stage": "lost", "stage_at": at(10), "reached": ["lead", "lost"], "hour": 0,
                "first": {"channel": "web", "source": "organic"},
                "last": {"channel": "web", "source": "organic"},
            }))
            .expect("record")
        };
        let shown = merged(&[started, message], Some(&record));
        assert_eq!(shown.len(), 4);
        assert!(shown[0].contains("conversation.started"), "{shown:?}");
        assert!(
            shown[1].contains("lead → lost: price, by console"),
            "{shown:?}"
        );
        assert!(shown[2].contains("referral"), "{shown:?}");
        assert!(shown[3].contains("purchase order-1 9.90 EUR"), "{shown:?}");
    }
}
