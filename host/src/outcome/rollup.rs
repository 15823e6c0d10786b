//! Rollups: counters per hour × table (touch × dimension) × key, which reports add up
//! instead of reading conversations.
//!
//! A conversation's counters are a pure function of its record ([`contribution`]). A
//! change applies the difference between the record's contribution before and after,
//! so an attribution that changes moves the conversation's counts from the old key to
//! the new one, and every count is exact. All of a conversation's counts go to the hour
//! it *started* (cohorts): a report of March counts the conversations started in March
//! and everything that became of them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::record::{OutcomeRecord, TouchKeys};

/// Which touch a table groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    /// The conversation's first referral.
    First,
    /// Its latest.
    Last,
}

/// What a table groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The touch's channel.
    Channel,
    /// The touch's campaign.
    Campaign,
    /// The touch's ad id.
    Ad,
    /// The touch's source kind (`ad`, `link`, …, `organic`).
    Source,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 4] = [
        Dimension::Channel,
        Dimension::Campaign,
        Dimension::Ad,
        Dimension::Source,
    ];

    /// The name used in reports and storage.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Channel => "channel",
            Dimension::Campaign => "campaign",
            Dimension::Ad => "ad",
            Dimension::Source => "source",
        }
    }

    /// The key of `keys` in this dimension (`None`: the touch has none, e.g. no campaign).
    pub fn of(self, keys: &TouchKeys) -> Option<&str> {
        match self {
            Dimension::Channel => Some(&keys.channel),
            Dimension::Campaign => keys.campaign.as_deref(),
            Dimension::Ad => keys.ad.as_deref(),
            Dimension::Source => Some(&keys.source),
        }
    }
}

/// A table's name: `f.campaign`, `l.channel`, …
pub fn table(touch: Touch, dimension: Dimension) -> &'static str {
    match (touch, dimension) {
        (Touch::First, Dimension::Channel) => "f.channel",
        (Touch::First, Dimension::Campaign) => "f.campaign",
        (Touch::First, Dimension::Ad) => "f.ad",
        (Touch::First, Dimension::Source) => "f.source",
        (Touch::Last, Dimension::Channel) => "l.channel",
        (Touch::Last, Dimension::Campaign) => "l.campaign",
        (Touch::Last, Dimension::Ad) => "l.ad",
        (Touch::Last, Dimension::Source) => "l.source",
    }
}

/// Money is counted in units of 10⁻⁴ (integers add exactly in any store).
pub const VALUE_SCALE: u32 = 4;

/// Upper bounds (seconds) of the first-response-time buckets; the last is open.
pub const RESPONSE_BUCKETS: [u64; 16] = [
    10, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14_400, 28_800, 86_400, 172_800, 604_800,
];

/// The bucket index of a first response time.
pub fn response_bucket(seconds: u64) -> usize {
    RESPONSE_BUCKETS
        .iter()
        .position(|bound| seconds <= *bound)
        .unwrap_or(RESPONSE_BUCKETS.len())
}

/// Field separator: between a key and its metric.
pub const SEP: char = '\u{1f}';

/// One counter change: `n` added to `metric` of `key` in `table` at `hour`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Hour (Unix seconds / 3600).
    pub hour: i64,
    /// Table (a name from [`table`]; borrowed unless read back from storage).
    pub table: Cow<'static, str>,
    /// `<key>\x1f<metric>` (an empty key: the touch has none in that dimension).
    pub field: String,
    /// Amount.
    pub n: i64,
}

/// One counter of a conversation: table, the touch's key in it (empty: none), metric.
type Counter<'r> = (&'static str, &'r str, Cow<'static, str>);

/// The counters one conversation adds. Names are borrowed: the fields
/// (`<key>\x1f<metric>`) are only written for the counters that change.
fn contribution(record: &OutcomeRecord) -> BTreeMap<Counter<'_>, i64> {
    let metrics = metrics(record);
    let mut out = BTreeMap::new();
    for (touch, keys) in [(Touch::First, &record.first), (Touch::Last, &record.last)] {
        for dimension in Dimension::ALL {
            let key = dimension.of(keys).unwrap_or("");
            for (metric, n) in &metrics {
                *out.entry((table(touch, dimension), key, metric.clone()))
                    .or_insert(0) += n;
            }
        }
    }
    out
}

fn metrics(record: &OutcomeRecord) -> Vec<(Cow<'static, str>, i64)> {
    let mut metrics = vec![(Cow::Borrowed("conversations"), 1)];
    let mut flag = |name: &'static str, on: bool| {
        if on {
            metrics.push((Cow::Borrowed(name), 1));
        }
    };
    flag("with_referral", record.referred);
    flag("answered", record.first_response_at.is_some());
    flag("answered_within_sla", record.within_sla);
    flag("won", record.stage == super::settings::WON);
    if let Some(seconds) = record.first_response_seconds {
        metrics.push((Cow::Owned(format!("frt:{}", response_bucket(seconds))), 1));
    }
    for stage in &record.reached {
        metrics.push((Cow::Owned(format!("stage:{stage}")), 1));
    }
    for lost in &record.lost {
        metrics.push((Cow::Owned(format!("lost:{}", lost.reason)), 1));
    }
    if let Some(reason) = &record.lost_reason {
        metrics.push((Cow::Owned(format!("lost:{reason}")), 1));
    }
    for (currency, value) in record.value_by_currency() {
        if let Some(units) = scaled(value) {
            metrics.push((Cow::Owned(format!("value:{currency}")), units));
        }
    }
    metrics
}

/// `value` in units of 10⁻⁴, if it fits.
pub fn scaled(value: Decimal) -> Option<i64> {
    let units = value.checked_mul(Decimal::from(10_i64.pow(VALUE_SCALE)))?;
    i64::try_from(units.trunc()).ok()
}

/// The changes that turn `before`'s counters into `after`'s (either may be absent).
pub fn deltas(before: Option<&OutcomeRecord>, after: &OutcomeRecord) -> Vec<Delta> {
    let mut net: BTreeMap<(i64, Counter<'_>), i64> = BTreeMap::new();
    if let Some(before) = before {
        for (counter, n) in contribution(before) {
            *net.entry((before.hour, counter)).or_insert(0) -= n;
        }
    }
    for (counter, n) in contribution(after) {
        *net.entry((after.hour, counter)).or_insert(0) += n;
    }
    net.into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|((hour, (table, key, metric)), n)| Delta {
            hour,
            table: Cow::Borrowed(table),
            field: format!("{key}{SEP}{metric}"),
            n,
        })
        .collect()
}

/// A bucket of counters: an hour, a UTC day or a UTC month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bucket {
    /// Hour (Unix seconds / 3600).
    Hour(i64),
    /// UTC day (Unix seconds / 86 400).
    Day(i64),
    /// UTC month (`year * 12 + month - 1`).
    Month(i64),
    /// UTC year.
    Year(i64),
}

impl Bucket {
    /// The storage name: `h<hour>`, `d<day>`, `m<month>`.
    pub fn name(self) -> String {
        match self {
            Bucket::Hour(n) => format!("h{n}"),
            Bucket::Day(n) => format!("d{n}"),
            Bucket::Month(n) => format!("m{n}"),
            Bucket::Year(n) => format!("y{n}"),
        }
    }

    /// The four buckets an hour's counters are added to.
    pub fn of_hour(hour: i64) -> [Bucket; 4] {
        let day = hour.div_euclid(24);
        let month = month_of_day(day);
        [
            Bucket::Hour(hour),
            Bucket::Day(day),
            Bucket::Month(month),
            Bucket::Year(month.div_euclid(12)),
        ]
    }
}

fn month_of_day(day: i64) -> i64 {
    let date = Timestamp::from_second(day * 86_400)
        .map(|at| at.to_zoned_datetime(jiff::tz::TimeZone::UTC).date())
        .unwrap_or_default();
    i64::from(date.year()) * 12 + i64::from(date.month()) - 1
}

fn first_day_of_month(month: i64) -> Option<i64> {
    let year = i16::try_from(month.div_euclid(12)).ok()?;
    let month = i8::try_from(month.rem_euclid(12) + 1).ok()?;
    let date = jiff::civil::Date::new(year, month, 1).ok()?;
    let at = date
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    Some(at.as_second().div_euclid(86_400))
}

/// Buckets that add up to the hours `[from, to)` exactly, each with its sign: whole
/// years, months and days inside the range are added; one the range covers only partly is
/// either its parts inside the range added, or the whole of it added and its parts
/// outside subtracted — whichever reads fewer buckets. A year in Madrid
/// (`2025-12-31T23:00Z` to `2026-12-31T23:00Z`) is 3 reads: an hour, the year 2026, minus
/// its last hour. Counters add, so subtraction is exact.
pub fn cover(from_hour: i64, to_hour: i64) -> Vec<(Bucket, i64)> {
    let mut out = Vec::new();
    if to_hour <= from_hour {
        return out;
    }
    let mut year = month_of_day(from_hour.div_euclid(24)).div_euclid(12);
    loop {
        let (Some(first_day), Some(next_day)) = (
            first_day_of_month(year * 12),
            first_day_of_month(year * 12 + 12),
        ) else {
            return out;
        };
        let (start, end) = (first_day * 24, next_day * 24);
        if start >= to_hour {
            return out;
        }
        let (low, high) = (from_hour.max(start), to_hour.min(end));
        if (low, high) == (start, end) {
            out.push((Bucket::Year(year), 1));
        } else {
            let inside = months(low, high, 1);
            let mut outside = months(start, low, -1);
            outside.extend(months(high, end, -1));
            if outside.len() + 1 < inside.len() {
                out.push((Bucket::Year(year), 1));
                out.extend(outside);
            } else {
                out.extend(inside);
            }
        }
        year += 1;
    }
}

/// Signed buckets for the hours `[from, to)` within one year, by months, days and hours.
fn months(from_hour: i64, to_hour: i64, sign: i64) -> Vec<(Bucket, i64)> {
    let mut out = Vec::new();
    if to_hour <= from_hour {
        return out;
    }
    let mut month = month_of_day(from_hour.div_euclid(24));
    loop {
        let (Some(first_day), Some(next_day)) =
            (first_day_of_month(month), first_day_of_month(month + 1))
        else {
            return out;
        };
        let (start, end) = (first_day * 24, next_day * 24);
        if start >= to_hour {
            return out;
        }
        let (low, high) = (from_hour.max(start), to_hour.min(end));
        if (low, high) == (start, end) {
            out.push((Bucket::Month(month), sign));
        } else {
            let inside = days(low, high, sign);
            let mut outside = days(start, low, -sign);
            outside.extend(days(high, end, -sign));
            if outside.len() + 1 < inside.len() {
                out.push((Bucket::Month(month), sign));
                out.extend(outside);
            } else {
                out.extend(inside);
            }
        }
        month += 1;
    }
}

/// Signed buckets for the hours `[from, to)` within one month, by days and hours.
fn days(from_hour: i64, to_hour: i64, sign: i64) -> Vec<(Bucket, i64)> {
    let mut out = Vec::new();
    let mut day = from_hour.div_euclid(24);
    while day * 24 < to_hour {
        let (start, end) = (day * 24, day * 24 + 24);
        let (low, high) = (from_hour.max(start), to_hour.min(end));
        if (low, high) == (start, end) {
            out.push((Bucket::Day(day), sign));
        } else {
            let inside = high - low;
            let outside = (low - start) + (end - high);
            if outside + 1 < inside {
                out.push((Bucket::Day(day), sign));
                out.extend(
                    (start..low)
                        .chain(high..end)
                        .map(|h| (Bucket::Hour(h), -sign)),
                );
            } else {
                out.extend((low..high).map(|h| (Bucket::Hour(h), sign)));
            }
        }
        day += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::rules::{Change, Facts, decide};
    use crate::outcome::settings::OutcomeSettings;
    use std::time::Duration;

    fn hour_of(date: &str) -> i64 {
        let at: Timestamp = date.parse().expect("time");
        at.as_second().div_euclid(3600)
    }

    #[test]
    fn a_year_in_madrid_is_three_reads_and_counts_every_hour_once() {
        let from = hour_of("2025-12-31T23:00:00Z");
        let to = hour_of("2026-12-31T23:00:00Z");
        let buckets = cover(from, to);
        assert_eq!(
            buckets,
            [
                (Bucket::Hour(from), 1),
                (Bucket::Year(2026), 1),
                (Bucket::Hour(to), -1)
            ]
        );
        assert_every_hour_once(from, to);
    }

    /// Each hour of `[from, to)` is counted once by the signed buckets, and no other.
    fn assert_every_hour_once(from: i64, to: i64) {
        let mut count: std::collections::BTreeMap<i64, i64> = Default::default();
        for (bucket, sign) in cover(from, to) {
            let hours = match bucket {
                Bucket::Hour(h) => h..h + 1,
                Bucket::Day(d) => d * 24..d * 24 + 24,
                Bucket::Month(m) => {
                    first_day_of_month(m).expect("m") * 24
                        ..first_day_of_month(m + 1).expect("m") * 24
                }
                Bucket::Year(y) => {
                    first_day_of_month(y * 12).expect("y") * 24
                        ..first_day_of_month(y * 12 + 12).expect("y") * 24
                }
            };
            for hour in hours {
                *count.entry(hour).or_insert(0) += sign;
            }
        }
        count.retain(|_, n| *n != 0);
        let expected: std::collections::BTreeMap<i64, i64> = (from..to).map(|h| (h, 1)).collect();
        assert_eq!(count, expected, "[{from}, {to})");
    }

    #[test]
    fn any_range_is_covered_exactly() {
        let base = hour_of("2026-01-30T05:00:00Z");
        for (from, to) in [
            (0, 1),
            (0, 30),
            (3, 24 * 3),
            (19, 24 * 40 + 7),
            (0, 24 * 400),
            (23, 24 * 31 + 1),
            (-24 * 500, 24 * 900 + 5),
        ] {
            assert_every_hour_once(base + from, base + to);
        }
        assert!(cover(base, base).is_empty());
    }

    #[test]
    fn an_hour_goes_to_its_hour_day_and_month() {
        let hour = hour_of("2026-11-24T10:00:00Z");
        let [h, d, m, y] = Bucket::of_hour(hour);
        assert_eq!(h, Bucket::Hour(hour));
        assert_eq!(d, Bucket::Day(hour / 24));
        assert_eq!(m, Bucket::Month(2026 * 12 + 10));
        assert_eq!(y, Bucket::Year(2026));
    }

    #[test]
    fn a_change_of_touch_moves_the_counts_and_nothing_is_left_behind() {
        let settings = OutcomeSettings::default();
        let at: Timestamp = "2026-11-24T10:20:00Z".parse().expect("time");
        let referral = crate::event::Referral {
            channel_kind: Some("instagram".into()),
            campaign: Some("bf25".into()),
            ..crate::event::Referral::ad("ig", at, "ad-1")
        };
        let mut facts = Facts {
            started_at: at,
            first_channel: "web",
            first_touch: None,
            last_touch: None,
            first_inbound_at: Some(at),
            awaiting_since: Some(at),
            reply_window_until: None,
            last_activity_at: at,
            closed: false,
            inactivity: Duration::from_secs(3600),
        };
        let organic = decide(None, &facts, &Change::Observe, at, &settings).expect("ok");
        let first = deltas(None, &organic.record);
        assert!(first.contains(&Delta {
            hour: organic.record.hour,
            table: "f.source".into(),
            field: format!("organic{SEP}conversations"),
            n: 1
        }));
        facts.first_touch = Some(&referral);
        facts.last_touch = Some(&referral);
        let referred = decide(
            Some(&organic.record),
            &facts,
            &Change::Observe,
            at,
            &settings,
        )
        .expect("ok");
        let moved = deltas(Some(&organic.record), &referred.record);
        let net = |table: &str, field: &str| {
            first
                .iter()
                .chain(&moved)
                .filter(|d| d.table == table && d.field == field)
                .map(|d| d.n)
                .sum::<i64>()
        };
        assert_eq!(net("f.source", &format!("organic{SEP}conversations")), 0);
        assert_eq!(net("f.source", &format!("ad{SEP}conversations")), 1);
        assert_eq!(net("f.campaign", &format!("bf25{SEP}with_referral")), 1);
        assert!(deltas(Some(&referred.record), &referred.record).is_empty());
    }

    #[test]
    fn money_is_counted_exactly() {
        assert_eq!(scaled("129.90".parse().expect("d")), Some(1_299_000));
        assert_eq!(response_bucket(0), 0);
        assert_eq!(response_bucket(95), 3);
        assert_eq!(response_bucket(10_000_000), RESPONSE_BUCKETS.len());
    }
}
