//! The funnel report: a time range resolved to rollup buckets, and the buckets' counters
//! added up into rows per key.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use serde::Serialize;

use super::rollup::{Dimension, RESPONSE_BUCKETS, SEP, VALUE_SCALE};

/// Why a report cannot be made, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct ReportError {
    /// The query parameter.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> ReportError {
    ReportError {
        field,
        reason: reason.into(),
    }
}

/// Longest range one report covers, in hours (3 years).
pub const MAX_HOURS: i64 = 3 * 366 * 24;

/// The time zone named `tz` (IANA, e.g. `Europe/Madrid`; UTC when absent).
pub fn time_zone(tz: Option<&str>) -> Result<TimeZone, ReportError> {
    match tz {
        None => Ok(TimeZone::UTC),
        Some(name) => {
            TimeZone::get(name).map_err(|_| bad("tz", format!("`{name}` is not an IANA time zone")))
        }
    }
}

/// A time: RFC 3339 (`2026-11-24T10:00:00Z`), or a date or date-time without offset
/// (`2026-11-24`, `2026-11-24T10:00`) read in `tz`.
pub fn instant(field: &'static str, text: &str, tz: &TimeZone) -> Result<Timestamp, ReportError> {
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let civil = text
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| {
            text.parse::<jiff::civil::Date>()
                .map(|date| date.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| bad(field, format!("`{text}` is not a date or an RFC 3339 time")))?;
    civil
        .to_zoned_datetime(tz.clone())
        .map(|zoned| zoned.timestamp())
        .map_err(|error| bad(field, format!("`{text}`: {error}")))
}

/// The hours `[from, to)` of a report. Rollups are hourly: both ends must fall on a whole
/// UTC hour (a zone with a half-hour offset cannot be reported at its midnights).
pub fn hours(from: Timestamp, to: Timestamp) -> Result<(i64, i64), ReportError> {
    let hour = |field: &'static str, at: Timestamp| {
        if at.as_second().rem_euclid(3600) != 0 || at.subsec_nanosecond() != 0 {
            return Err(bad(
                field,
                format!("{at} is not on a whole UTC hour (rollups are hourly)"),
            ));
        }
        Ok(at.as_second().div_euclid(3600))
    };
    let (from, to) = (hour("from", from)?, hour("to", to)?);
    if to <= from {
        return Err(bad("to", "must be after `from`"));
    }
    if to - from > MAX_HOURS {
        return Err(bad(
            "to",
            format!("the range is over {} days", MAX_HOURS / 24),
        ));
    }
    Ok((from, to))
}

/// Median and 90th percentile of first response times, in seconds, estimated from the
/// histogram's buckets (linear within a bucket).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResponseTimes {
    /// Median.
    pub median: u64,
    /// 90th percentile.
    pub p90: u64,
}

/// One row of the funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `{"<dimension>": "<key>"}` (`null`: conversations without one, e.g. no campaign).
    pub key: BTreeMap<String, Option<String>>,
    /// Conversations started in the range.
    pub conversations: i64,
    /// Of them, with a referral.
    pub with_referral: i64,
    /// Answered.
    pub answered: i64,
    /// Answered within the SLA.
    pub answered_within_sla: i64,
    /// First response times.
    pub first_response_seconds: Option<ResponseTimes>,
    /// Conversations that reached each stage.
    pub stages: BTreeMap<String, i64>,
    /// Won.
    pub won: i64,
    /// Conversion value per currency.
    pub value: BTreeMap<String, String>,
    /// Lost per reason (lost opportunities and the `lost` stage's reasons).
    pub lost: BTreeMap<String, i64>,
    /// `won / conversations`.
    pub conversion_rate: f64,
}

/// The funnel: rows (most conversations first) and their totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    /// One per key.
    pub rows: Vec<Row>,
    /// Everything added up.
    pub totals: Row,
}

#[derive(Default)]
struct Counts {
    metrics: HashMap<String, i64>,
}

/// Add up the counters of one table over the buckets read (`field → n` each), each
/// bucket with its sign (see [`super::rollup::cover`]).
pub fn funnel(dimension: Dimension, buckets: &[(HashMap<String, i64>, i64)]) -> Funnel {
    // Borrowed while adding up: a year's report adds a few hundred thousand fields.
    let mut sums: HashMap<&str, HashMap<&str, i64>> = HashMap::new();
    for (bucket, sign) in buckets {
        for (field, n) in bucket {
            let Some((key, metric)) = field.split_once(SEP) else {
                continue;
            };
            *sums.entry(key).or_default().entry(metric).or_insert(0) += n * sign;
        }
    }
    let mut by_key: BTreeMap<String, Counts> = BTreeMap::new();
    let mut totals = Counts::default();
    for (key, metrics) in sums {
        for (metric, n) in &metrics {
            *totals.metrics.entry((*metric).to_owned()).or_insert(0) += n;
        }
        by_key.insert(
            key.to_owned(),
            Counts {
                metrics: metrics
                    .into_iter()
                    .map(|(metric, n)| (metric.to_owned(), n))
                    .collect(),
            },
        );
    }
    let mut rows: Vec<Row> = by_key
        .into_iter()
        .map(|(key, counts)| {
            let key = Some(key).filter(|key| !key.is_empty());
            row([(dimension.name().to_owned(), key)].into(), &counts)
        })
        .filter(|row| row.conversations != 0 || !row.value.is_empty())
        .collect();
    rows.sort_by(|a, b| {
        b.conversations
            .cmp(&a.conversations)
            .then(a.key.cmp(&b.key))
    });
    Funnel {
        rows,
        totals: row(BTreeMap::new(), &totals),
    }
}

fn row(key: BTreeMap<String, Option<String>>, counts: &Counts) -> Row {
    let get = |metric: &str| counts.metrics.get(metric).copied().unwrap_or(0);
    let prefixed = |prefix: &str| -> BTreeMap<String, i64> {
        counts
            .metrics
            .iter()
            .filter_map(|(metric, n)| Some((metric.strip_prefix(prefix)?.to_owned(), *n)))
            .filter(|(_, n)| *n != 0)
            .collect()
    };
    let conversations = get("conversations");
    let won = get("won");
    let histogram: Vec<i64> = (0..=RESPONSE_BUCKETS.len())
        .map(|i| get(&format!("frt:{i}")))
        .collect();
    Row {
        key,
        conversations,
        with_referral: get("with_referral"),
        answered: get("answered"),
        answered_within_sla: get("answered_within_sla"),
        first_response_seconds: response_times(&histogram),
        stages: prefixed("stage:"),
        won,
        value: prefixed("value:")
            .into_iter()
            .map(|(currency, units)| {
                let value = money(units, &currency);
                (currency, value)
            })
            .collect(),
        lost: prefixed("lost:"),
        conversion_rate: if conversations > 0 {
            won as f64 / conversations as f64
        } else {
            0.0
        },
    }
}

/// Units of 10⁻⁴ as a decimal string with at least the currency's minor digits.
pub fn money(units: i64, currency: &str) -> String {
    let mut value = Decimal::new(units, VALUE_SCALE).normalize();
    let digits = iso_currency::Currency::from_code(currency)
        .and_then(|currency| currency.exponent())
        .map_or(2, u32::from);
    if value.scale() < digits {
        value.rescale(digits);
    }
    value.to_string()
}

fn response_times(histogram: &[i64]) -> Option<ResponseTimes> {
    let total: i64 = histogram.iter().sum();
    if total <= 0 {
        return None;
    }
    let at = |quantile: f64| -> u64 {
        let rank = quantile * total as f64;
        let mut before = 0_i64;
        for (i, count) in histogram.iter().enumerate() {
            if *count > 0 && (before + count) as f64 >= rank {
                let low = if i == 0 { 0 } else { RESPONSE_BUCKETS[i - 1] };
                let Some(&high) = RESPONSE_BUCKETS.get(i) else {
                    return low;
                };
                let within = ((rank - before as f64) / *count as f64).clamp(0.0, 1.0);
                return low + ((high - low) as f64 * within).round() as u64;
            }
            before += count;
        }
        RESPONSE_BUCKETS[RESPONSE_BUCKETS.len() - 1]
    };
    Some(ResponseTimes {
        median: at(0.5),
        p90: at(0.9),
    })
}

/// The funnel as CSV: one line per row, then `totals`; stage, value and lost columns are
/// the union over rows (`stage:<name>`, `value:<currency>`, `lost:<reason>`).
pub fn csv(dimension: Dimension, funnel: &Funnel) -> Result<String, csv::Error> {
    let mut stages = std::collections::BTreeSet::new();
    let mut currencies = std::collections::BTreeSet::new();
    let mut reasons = std::collections::BTreeSet::new();
    for row in funnel.rows.iter().chain([&funnel.totals]) {
        stages.extend(row.stages.keys().cloned());
        currencies.extend(row.value.keys().cloned());
        reasons.extend(row.lost.keys().cloned());
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        dimension.name(),
        "conversations",
        "with_referral",
        "answered",
        "answered_within_sla",
        "first_response_median_seconds",
        "first_response_p90_seconds",
        "won",
        "conversion_rate",
    ]
    .map(String::from)
    .to_vec();
    header.extend(stages.iter().map(|s| format!("stage:{s}")));
    header.extend(currencies.iter().map(|c| format!("value:{c}")));
    header.extend(reasons.iter().map(|r| format!("lost:{r}")));
    writer.write_record(&header)?;
    let rows = funnel.rows.iter().map(|row| (false, row));
    for (is_total, row) in rows.chain([(true, &funnel.totals)]) {
        let key = if is_total {
            "(total)".to_owned()
        } else {
            row.key
                .values()
                .next()
                .cloned()
                .flatten()
                .unwrap_or_default()
        };
        let times = row.first_response_seconds;
        let mut line = vec![
            key,
            row.conversations.to_string(),
            row.with_referral.to_string(),
            row.answered.to_string(),
            row.answered_within_sla.to_string(),
            times.map(|t| t.median.to_string()).unwrap_or_default(),
            times.map(|t| t.p90.to_string()).unwrap_or_default(),
            row.won.to_string(),
            format!("{:.4}", row.conversion_rate),
        ];
        line.extend(
            stages
                .iter()
                .map(|s| row.stages.get(s).copied().unwrap_or(0).to_string()),
        );
        line.extend(
            currencies
                .iter()
                .map(|c| row.value.get(c).cloned().unwrap_or_default()),
        );
        line.extend(
            reasons
                .iter()
                .map(|r| row.lost.get(r).copied().unwrap_or(0).to_string()),
        );
        writer.write_record(&line)?;
    }
    let bytes = writer.into_inner().map_err(|error| error.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(fields: &[(&str, &str, i64)]) -> HashMap<String, i64> {
        fields
            .iter()
            .map(|(key, metric, n)| (format!("{key}{SEP}{metric}"), *n))
            .collect()
    }

    #[test]
    fn buckets_add_up_into_rows_with_money_and_rates() {
        let buckets = [
            (
                bucket(&[
                    ("bf25", "conversations", 3),
                    ("bf25", "won", 1),
                    ("bf25", "value:EUR", 1_299_000),
                    ("bf25", "frt:3", 2),
                    ("", "conversations", 1),
                    ("", "lost:unanswered", 1),
                ]),
                1,
            ),
            (
                bucket(&[
                    ("bf25", "conversations", 1),
                    ("bf25", "value:EUR", 2_598_000),
                    ("bf25", "lost:price", 1),
                    ("bf25", "frt:6", 1),
                ]),
                1,
            ),
            (
                bucket(&[("bf25", "lost:price", 1), ("bf25", "conversations", 1)]),
                1,
            ),
            (
                bucket(&[("bf25", "lost:price", 1), ("bf25", "conversations", 1)]),
                -1,
            ),
        ];
        let funnel = funnel(Dimension::Campaign, &buckets);
        let top = &funnel.rows[0];
        assert_eq!(top.key["campaign"].as_deref(), Some("bf25"));
        assert_eq!(top.conversations, 4);
        assert_eq!(top.value["EUR"], "389.70");
        assert_eq!(top.lost["price"], 1);
        assert!((top.conversion_rate - 0.25).abs() < 1e-9);
        let times = top.first_response_seconds.expect("times");
        assert!((60..=120).contains(&times.median), "{times:?}");
        assert!((300..=600).contains(&times.p90), "{times:?}");
        assert_eq!(funnel.rows[1].key["campaign"], None);
        assert_eq!(funnel.totals.conversations, 5);
        let csv = csv(Dimension::Campaign, &funnel).expect("csv");
        assert!(csv.starts_with("campaign,conversations,"), "{csv}");
        assert!(csv.contains("bf25,4,"), "{csv}");
        assert!(
            csv.lines()
                .last()
                .expect("totals")
                .starts_with("(total),5,")
        );
    }

    #[test]
    fn times_must_be_whole_hours_and_in_order() {
        let madrid = time_zone(Some("Europe/Madrid")).expect("zone");
        let from = instant("from", "2026-01-01", &madrid).expect("date");
        assert_eq!(from.to_string(), "2025-12-31T23:00:00Z");
        let to = instant("to", "2027-01-01", &madrid).expect("date");
        assert!(hours(from, to).is_ok());
        assert_eq!(hours(to, from).expect_err("order").field, "to");
        let kolkata = time_zone(Some("Asia/Kolkata")).expect("zone");
        let half = instant("from", "2026-01-01", &kolkata).expect("date");
        assert_eq!(hours(half, to).expect_err("half hour").field, "from");
        assert_eq!(time_zone(Some("Mars/Base")).expect_err("zone").field, "tz");
        assert_eq!(
            instant("to", "yesterday", &madrid).expect_err("text").field,
            "to"
        );
        assert_eq!(money(1_000_000, "JPY"), "100");
        assert_eq!(money(10, "BHD"), "0.001");
    }
}
