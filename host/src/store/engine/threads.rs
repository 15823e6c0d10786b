//! A conversation's lists (history and timeline) kept one key per entry: adding,
//! capping, dropping by retention and reading the last entries.

use jiff::Timestamp;

use super::keys;
use super::records::{Doc, Span};
use super::tx::Tx;
use crate::event::HistoryEntry;
use crate::store::StoreError;
use crate::store::model::TimelineEntry;

/// Add `messages` to conversation `id`'s history at `span`, keeping at most `cap`;
/// returns the new span.
pub fn add_messages(
    tx: &mut Tx<'_>,
    id: &str,
    span: Span,
    messages: impl IntoIterator<Item = HistoryEntry>,
    cap: usize,
) -> Span {
    add(tx, id, span, messages, cap, keys::message, |message| {
        Doc::Message(Box::new(message))
    })
}

/// Add `entries` to conversation `id`'s timeline at `span`, keeping at most `cap`;
/// returns the new span.
pub fn add_entries(
    tx: &mut Tx<'_>,
    id: &str,
    span: Span,
    entries: impl IntoIterator<Item = TimelineEntry>,
    cap: usize,
) -> Span {
    add(tx, id, span, entries, cap, keys::entry, |entry| {
        Doc::Entry(Box::new(entry))
    })
}

fn add<T>(
    tx: &mut Tx<'_>,
    id: &str,
    mut span: Span,
    items: impl IntoIterator<Item = T>,
    cap: usize,
    key: fn(&str, u64) -> String,
    wrap: fn(T) -> Doc,
) -> Span {
    for item in items {
        tx.put(key(id, span.next), wrap(item));
        span.next += 1;
    }
    while span.len() > cap.max(1) as u64 {
        tx.delete(key(id, span.from));
        span.from += 1;
    }
    span
}

/// Drop conversation `id`'s messages and timeline entries older than `cutoff`;
/// returns the new (history, timeline) spans.
pub async fn drop_older(
    tx: &mut Tx<'_>,
    id: &str,
    (history, timeline): (Span, Span),
    cutoff: Timestamp,
) -> Result<(Span, Span), StoreError> {
    let history = drop_from(tx, id, history, cutoff, keys::message).await?;
    let timeline = drop_from(tx, id, timeline, cutoff, keys::entry).await?;
    Ok((history, timeline))
}

/// Entries come in time order, so the old ones are at the front.
async fn drop_from(
    tx: &mut Tx<'_>,
    id: &str,
    mut span: Span,
    cutoff: Timestamp,
    key: fn(&str, u64) -> String,
) -> Result<Span, StoreError> {
    const BATCH: u64 = 16;
    while !span.is_empty() {
        let positions = span.from..(span.from + BATCH).min(span.next);
        let docs = tx.peek(positions.map(|at| key(id, at)).collect()).await?;
        let old = docs
            .iter()
            .take_while(|doc| {
                doc.as_deref()
                    .and_then(time_of)
                    .is_some_and(|at| at < cutoff)
            })
            .count() as u64;
        for at in span.from..span.from + old {
            tx.delete(key(id, at));
        }
        span.from += old;
        if old < BATCH {
            break;
        }
    }
    Ok(span)
}

fn time_of(doc: &Doc) -> Option<Timestamp> {
    match doc {
        Doc::Message(message) => Some(message.at),
        Doc::Entry(entry) => Some(entry.at),
        _ => None,
    }
}

/// The last `limit` messages of conversation `id` (not older than `cutoff`), oldest
/// first.
pub async fn last_messages(
    tx: &Tx<'_>,
    id: &str,
    span: Span,
    limit: usize,
    cutoff: Option<Timestamp>,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let docs = tx
        .peek(span.last(limit).map(|at| keys::message(id, at)).collect())
        .await?;
    Ok(docs
        .into_iter()
        .flatten()
        .filter_map(|doc| match &*doc {
            Doc::Message(message) => Some(HistoryEntry::clone(message)),
            _ => None,
        })
        .filter(|message| cutoff.is_none_or(|cutoff| message.at >= cutoff))
        .collect())
}

/// Timeline entries of conversation `id` at `positions` (not older than `cutoff`).
pub async fn entries(
    tx: &Tx<'_>,
    id: &str,
    positions: std::ops::Range<u64>,
    cutoff: Option<Timestamp>,
) -> Result<Vec<TimelineEntry>, StoreError> {
    let docs = tx
        .peek(positions.map(|at| keys::entry(id, at)).collect())
        .await?;
    Ok(docs
        .into_iter()
        .flatten()
        .filter_map(|doc| match &*doc {
            Doc::Entry(entry) => Some(TimelineEntry::clone(entry)),
            _ => None,
        })
        .filter(|entry| cutoff.is_none_or(|cutoff| entry.at >= cutoff))
        .collect())
}

/// Delete every message and timeline entry of conversation `id`.
pub fn delete_all(tx: &mut Tx<'_>, id: &str, (history, timeline): (Span, Span)) {
    for at in history.from..history.next {
        tx.delete(keys::message(id, at));
    }
    for at in timeline.from..timeline.next {
        tx.delete(keys::entry(id, at));
    }
}
