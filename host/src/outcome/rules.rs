//! The rules of the outcome loop, as one pure function: given a conversation's record,
//! the facts the store keeps about the conversation, a change and the time, decide the
//! new record and the events it causes. Both store backends only keep what this decides
//! (compare-and-set), so each rule is written once, here.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::record::{
    Author, AuthorKind, ConversionRef, LostFound, MAX_MOVES, OutcomeRecord, StageMove, TouchKeys,
};
use super::settings::{FirstResponse, LOST, OutcomeSettings, WON};
use crate::event::Referral;

/// What the store knows about the conversation (kept by ingest, not by these rules).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// When it started.
    pub started_at: Timestamp,
    /// The channel it started on.
    pub first_channel: &'a str,
    /// The first referral.
    pub first_touch: Option<&'a Referral>,
    /// The latest referral.
    pub last_touch: Option<&'a Referral>,
    /// The customer's first message.
    pub first_inbound_at: Option<Timestamp>,
    /// The customer's first message since the business last wrote, while unanswered.
    pub awaiting_since: Option<Timestamp>,
    /// The end of the current channel's reply window.
    pub reply_window_until: Option<Timestamp>,
    /// The latest message either way.
    pub last_activity_at: Timestamp,
    /// Whether the store closed it.
    pub closed: bool,
    /// Inactivity after which a conversation is over.
    pub inactivity: Duration,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Change<'a> {
    /// Nothing in particular: an inbound event was recorded, or the record is due.
    Observe,
    /// The business wrote (through the API, with its author, or echoed by the provider).
    BusinessMessage {
        /// When.
        at: Timestamp,
        /// Who, when the API caller said.
        author: Option<&'a Author>,
    },
    /// A tool moves the conversation to a stage.
    Stage {
        /// The stage.
        to: &'a str,
        /// Why (required for `lost`).
        reason: Option<&'a str>,
        /// Who moved it (free text from the caller).
        by: Option<&'a str>,
        /// Allow leaving a final stage.
        reopen: bool,
    },
    /// A conversion attributed to the conversation.
    Conversion(&'a ConversionRef),
}

/// An event the change causes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeEvent {
    /// `conversation.first_response`.
    FirstResponse {
        /// When.
        at: Timestamp,
        /// Seconds since the customer's first message.
        seconds: u64,
        /// Within `[outcomes] response_sla`.
        within_sla: bool,
        /// The reply's author, when known.
        author: Option<Author>,
    },
    /// `conversation.stage_changed`.
    StageChanged {
        /// When.
        at: Timestamp,
        /// Stage before.
        from: String,
        /// Stage after.
        to: String,
        /// Why.
        reason: Option<String>,
        /// Who (or `conversion:<id>` for a purchase).
        by: Option<String>,
    },
    /// `conversation.opportunity_lost`.
    OpportunityLost {
        /// When it became lost.
        at: Timestamp,
        /// Why.
        reason: String,
    },
    /// `conversion.recorded`.
    ConversionRecorded {
        /// The conversion.
        conversion: ConversionRef,
    },
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not one of `[outcomes] stages`.
    #[error("`stage`: `{0}` is not a stage (one of {1})")]
    UnknownStage(String, String),
    /// `lost` without a reason.
    #[error("`reason` is required to move to `lost` (one of {0})")]
    ReasonRequired(String),
    /// A reason not in `[outcomes] lost_reasons`.
    #[error("`reason`: `{0}` is not a lost reason (one of {1})")]
    UnknownReason(String, String),
    /// Leaving `won`/`lost` without `reopen`.
    #[error("the conversation is `{0}`, a final stage; send \"reopen\": true to move it to `{1}`")]
    Final(String, String),
}

/// The decision: the record after the change and the events it causes, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The record to keep.
    pub record: OutcomeRecord,
    /// Events, in order.
    pub events: Vec<OutcomeEvent>,
}

/// Lost opportunity: no business reply within the SLA.
pub const UNANSWERED: &str = "unanswered";
/// Lost opportunity: the reply window closed on the customer's unanswered message.
pub const WINDOW_EXPIRED: &str = "window_expired";
/// Lost opportunity: ended by inactivity before `won` or `lost`.
pub const CLOSED_WITHOUT_OUTCOME: &str = "closed_without_outcome";
/// Lost opportunity: an ad or link referral the customer never wrote after.
pub const REFERRAL_ONLY: &str = "referral_only";

/// Decide what `change` does to the conversation whose record is `old` (`None`: not
/// tracked yet) as of `now`.
pub fn decide(
    old: Option<&OutcomeRecord>,
    facts: &Facts<'_>,
    change: &Change<'_>,
    now: Timestamp,
    settings: &OutcomeSettings,
) -> Result<Decision, RuleError> {
    let mut record = old.cloned().unwrap_or_else(|| fresh(facts, settings));
    let mut events = Vec::new();
    refresh_touches(&mut record, facts);
    if record.first_inbound_at.is_none() {
        record.first_inbound_at = facts.first_inbound_at;
    }
    match change {
        Change::Observe => {}
        Change::BusinessMessage { at, author } => {
            first_response(&mut record, *at, *author, settings, &mut events);
        }
        Change::Stage {
            to,
            reason,
            by,
            reopen,
        } => {
            let reason = check_stage(&record, to, *reason, *reopen, settings)?;
            move_to(
                &mut record,
                to,
                reason,
                by.map(str::to_owned),
                now,
                &mut events,
            );
        }
        Change::Conversion(conversion) => convert(&mut record, conversion, now, &mut events),
    }
    find_lost(&mut record, facts, now, settings, &mut events);
    record.due = next_due(&record, facts, now, settings);
    Ok(Decision { record, events })
}

fn fresh(facts: &Facts<'_>, settings: &OutcomeSettings) -> OutcomeRecord {
    let stage = settings.initial_stage().to_owned();
    OutcomeRecord {
        reached: vec![stage.clone()],
        stage,
        stage_at: facts.started_at,
        lost_reason: None,
        first_inbound_at: None,
        first_response_at: None,
        first_response_seconds: None,
        within_sla: false,
        lost: Vec::new(),
        conversions: Vec::new(),
        moves: Vec::new(),
        hour: facts.started_at.as_second().div_euclid(3600),
        referred: false,
        first: TouchKeys::default(),
        last: TouchKeys::default(),
        ended: false,
        due: None,
    }
}

/// The keys of a touch (the conversation's first channel when there is no referral).
pub fn touch_keys(referral: Option<&Referral>, first_channel: &str) -> TouchKeys {
    let Some(referral) = referral else {
        return TouchKeys {
            channel: first_channel.to_owned(),
            source: "organic".into(),
            campaign: None,
            ad: None,
        };
    };
    let source = serde_json::to_value(referral.source)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into());
    TouchKeys {
        channel: referral.channel.clone(),
        source,
        campaign: referral
            .campaign
            .clone()
            .or_else(|| referral.utm.get("campaign").cloned()),
        ad: referral.ad_id.clone(),
    }
}

fn refresh_touches(record: &mut OutcomeRecord, facts: &Facts<'_>) {
    record.referred = facts.first_touch.is_some();
    record.first = touch_keys(facts.first_touch, facts.first_channel);
    record.last = touch_keys(facts.last_touch.or(facts.first_touch), facts.first_channel);
}

fn first_response(
    record: &mut OutcomeRecord,
    at: Timestamp,
    author: Option<&Author>,
    settings: &OutcomeSettings,
    events: &mut Vec<OutcomeEvent>,
) {
    let Some(first_inbound) = record.first_inbound_at else {
        return;
    };
    let counts = match settings.first_response {
        FirstResponse::Any => true,
        FirstResponse::Agent => author.is_some_and(|author| author.kind == AuthorKind::Agent),
    };
    if record.first_response_at.is_some() || !counts || at < first_inbound {
        return;
    }
    let seconds = at
        .duration_since(first_inbound)
        .as_secs()
        .max(0)
        .unsigned_abs();
    let within_sla = seconds <= settings.response_sla.as_secs();
    record.first_response_at = Some(at);
    record.first_response_seconds = Some(seconds);
    record.within_sla = within_sla;
    events.push(OutcomeEvent::FirstResponse {
        at,
        seconds,
        within_sla,
        author: author.cloned(),
    });
}

fn check_stage<'a>(
    record: &OutcomeRecord,
    to: &str,
    reason: Option<&'a str>,
    reopen: bool,
    settings: &OutcomeSettings,
) -> Result<Option<&'a str>, RuleError> {
    if !settings.stages.iter().any(|stage| stage == to) {
        return Err(RuleError::UnknownStage(
            to.to_owned(),
            settings.stages.join(", "),
        ));
    }
    let reason = reason.filter(|reason| !reason.is_empty());
    if to == LOST {
        let reasons = || settings.lost_reasons.join(", ");
        let reason = reason.ok_or_else(|| RuleError::ReasonRequired(reasons()))?;
        if !settings.lost_reasons.iter().any(|known| known == reason) {
            return Err(RuleError::UnknownReason(reason.to_owned(), reasons()));
        }
    }
    if record.stage != to && settings.is_final(&record.stage) && !reopen {
        return Err(RuleError::Final(record.stage.clone(), to.to_owned()));
    }
    Ok(reason)
}

fn move_to(
    record: &mut OutcomeRecord,
    to: &str,
    reason: Option<&str>,
    by: Option<String>,
    now: Timestamp,
    events: &mut Vec<OutcomeEvent>,
) {
    let lost_reason = (to == LOST).then(|| reason.map(str::to_owned)).flatten();
    if record.stage == to && record.lost_reason == lost_reason {
        return;
    }
    let from = std::mem::replace(&mut record.stage, to.to_owned());
    record.stage_at = now;
    if !record.reached.iter().any(|stage| stage == to) {
        record.reached.push(to.to_owned());
    }
    record.lost_reason.clone_from(&lost_reason);
    if record.moves.len() >= MAX_MOVES {
        record.moves.remove(0);
    }
    record.moves.push(StageMove {
        at: now,
        from: from.clone(),
        to: to.to_owned(),
        reason: reason.map(str::to_owned),
        by: by.clone(),
    });
    events.push(OutcomeEvent::StageChanged {
        at: now,
        from,
        to: to.to_owned(),
        reason: reason.map(str::to_owned),
        by,
    });
    if let Some(reason) = lost_reason {
        events.push(OutcomeEvent::OpportunityLost { at: now, reason });
    }
}

fn convert(
    record: &mut OutcomeRecord,
    conversion: &ConversionRef,
    now: Timestamp,
    events: &mut Vec<OutcomeEvent>,
) {
    if record
        .conversions
        .iter()
        .any(|known| known.id == conversion.id)
    {
        return;
    }
    record.conversions.push(conversion.clone());
    events.push(OutcomeEvent::ConversionRecorded {
        conversion: conversion.clone(),
    });
    // A purchase is proof of the sale, whatever the stage said (even `lost`).
    if conversion.name == "purchase" && record.stage != WON {
        move_to(
            record,
            WON,
            None,
            Some(format!("conversion:{}", conversion.id)),
            now,
            events,
        );
    }
}

/// Find the lost opportunities that the facts show as of `now`, each once.
fn find_lost(
    record: &mut OutcomeRecord,
    facts: &Facts<'_>,
    now: Timestamp,
    settings: &OutcomeSettings,
    events: &mut Vec<OutcomeEvent>,
) {
    let mut found = |record: &mut OutcomeRecord, reason: &str, at: Timestamp| {
        if !record.has_lost(reason) {
            record.lost.push(LostFound {
                reason: reason.to_owned(),
                at,
            });
            events.push(OutcomeEvent::OpportunityLost {
                at,
                reason: reason.to_owned(),
            });
        }
    };
    if let Some(deadline) = record
        .first_inbound_at
        .and_then(|first| add(first, settings.response_sla))
    {
        let answered_in_time = record.first_response_at.is_some_and(|at| at <= deadline);
        let decided_by = record.first_response_at.unwrap_or(now);
        if !answered_in_time && deadline <= decided_by {
            found(record, UNANSWERED, deadline);
        }
    }
    if let (Some(_), Some(until)) = (facts.awaiting_since, facts.reply_window_until)
        && until <= now
    {
        found(record, WINDOW_EXPIRED, until);
    }
    let idle_end = add(facts.last_activity_at, facts.inactivity);
    let ended = facts.closed || idle_end.is_some_and(|end| end <= now);
    if ended && !record.ended {
        record.ended = true;
        if !settings.is_final(&record.stage) {
            let at = idle_end.unwrap_or(now).min(now);
            if record.first_inbound_at.is_none() && record.referred {
                found(record, REFERRAL_ONLY, at);
            } else {
                found(record, CLOSED_WITHOUT_OUTCOME, at);
            }
        }
    }
}

/// When the sweeper should look again: the SLA deadline while unanswered, the window's
/// end while the customer waits, the end by inactivity while the outcome is open.
fn next_due(
    record: &OutcomeRecord,
    facts: &Facts<'_>,
    now: Timestamp,
    settings: &OutcomeSettings,
) -> Option<Timestamp> {
    let unanswered = record
        .first_inbound_at
        .filter(|_| record.first_response_at.is_none() && !record.has_lost(UNANSWERED))
        .and_then(|first| add(first, settings.response_sla));
    let window = facts
        .reply_window_until
        .filter(|_| facts.awaiting_since.is_some() && !record.has_lost(WINDOW_EXPIRED));
    let end = (!record.ended)
        .then(|| add(facts.last_activity_at, facts.inactivity))
        .flatten();
    [unanswered, window, end]
        .into_iter()
        .flatten()
        .min()
        .map(|due| due.max(now))
}

fn add(at: Timestamp, duration: Duration) -> Option<Timestamp> {
    let duration = SignedDuration::try_from(duration).ok()?;
    at.checked_add(duration).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_764_000_000 + seconds).expect("time")
    }

    fn ad() -> Referral {
        Referral {
            channel_kind: Some("instagram".into()),
            campaign: Some("bf25".into()),
            ..Referral::ad("ig", t(0), "ad-7")
        }
    }

    fn facts(referral: Option<&Referral>) -> Facts<'_> {
        Facts {
            started_at: t(0),
            first_channel: "web",
            first_touch: referral,
            last_touch: referral,
            first_inbound_at: Some(t(10)),
            awaiting_since: Some(t(10)),
            reply_window_until: None,
            last_activity_at: t(10),
            closed: false,
            inactivity: Duration::from_secs(24 * 3600),
        }
    }

    fn settings() -> OutcomeSettings {
        OutcomeSettings::default()
    }

    #[test]
    fn a_new_conversation_starts_at_the_first_stage_keyed_by_its_touch() {
        let referral = ad();
        let decision = decide(
            None,
            &facts(Some(&referral)),
            &Change::Observe,
            t(11),
            &settings(),
        )
        .expect("decided");
        let record = decision.record;
        assert_eq!(record.stage, "lead");
        assert_eq!(record.first.campaign.as_deref(), Some("bf25"));
        assert_eq!(record.first.source, "ad");
        assert_eq!(record.first.channel, "ig");
        assert!(record.referred);
        assert_eq!(record.first_inbound_at, Some(t(10)));
        assert_eq!(
            record.due,
            Some(t(10 + 3600)),
            "the SLA deadline comes first"
        );
        assert!(decision.events.is_empty());
    }

    #[test]
    fn the_first_business_message_is_the_first_response_once() {
        let facts = facts(None);
        let start = decide(None, &facts, &Change::Observe, t(11), &settings()).expect("start");
        let reply = Change::BusinessMessage {
            at: t(100),
            author: None,
        };
        let first = decide(Some(&start.record), &facts, &reply, t(100), &settings()).expect("ok");
        assert_eq!(
            first.events,
            vec![OutcomeEvent::FirstResponse {
                at: t(100),
                seconds: 90,
                within_sla: true,
                author: None
            }]
        );
        let again = Change::BusinessMessage {
            at: t(200),
            author: None,
        };
        let second = decide(Some(&first.record), &facts, &again, t(200), &settings()).expect("ok");
        assert!(second.events.is_empty());
        assert_eq!(second.record.first_response_seconds, Some(90));
    }

    #[test]
    fn with_first_response_agent_a_bot_reply_does_not_count() {
        let facts = facts(None);
        let settings = OutcomeSettings {
            first_response: FirstResponse::Agent,
            ..settings()
        };
        let bot = Author {
            kind: AuthorKind::Bot,
            id: None,
        };
        let change = Change::BusinessMessage {
            at: t(20),
            author: Some(&bot),
        };
        let decision = decide(None, &facts, &change, t(20), &settings).expect("ok");
        assert!(decision.record.first_response_at.is_none());
        let agent = Author {
            kind: AuthorKind::Agent,
            id: Some("ana".into()),
        };
        let change = Change::BusinessMessage {
            at: t(40),
            author: Some(&agent),
        };
        let decision =
            decide(Some(&decision.record), &facts, &change, t(40), &settings).expect("ok");
        assert_eq!(decision.record.first_response_seconds, Some(30));
    }

    #[test]
    fn no_reply_within_the_sla_is_one_unanswered_opportunity() {
        let facts = facts(None);
        let early = decide(None, &facts, &Change::Observe, t(3000), &settings()).expect("ok");
        assert!(early.events.is_empty());
        let late = decide(
            Some(&early.record),
            &facts,
            &Change::Observe,
            t(3700),
            &settings(),
        )
        .expect("ok");
        assert_eq!(
            late.events,
            vec![OutcomeEvent::OpportunityLost {
                at: t(10 + 3600),
                reason: UNANSWERED.into()
            }]
        );
        let again = decide(
            Some(&late.record),
            &facts,
            &Change::Observe,
            t(3800),
            &settings(),
        )
        .expect("ok");
        assert!(again.events.is_empty(), "found once");
    }

    #[test]
    fn a_window_that_closes_on_a_waiting_customer_is_lost_once() {
        let mut facts = facts(None);
        facts.reply_window_until = Some(t(500));
        let decision = decide(None, &facts, &Change::Observe, t(400), &settings()).expect("ok");
        assert_eq!(decision.record.due, Some(t(500)));
        let decision = decide(
            Some(&decision.record),
            &facts,
            &Change::Observe,
            t(600),
            &settings(),
        )
        .expect("ok");
        assert!(decision.record.has_lost(WINDOW_EXPIRED));
        facts.awaiting_since = None;
        let answered = decide(None, &facts, &Change::Observe, t(600), &settings()).expect("ok");
        assert!(
            !answered.record.has_lost(WINDOW_EXPIRED),
            "answered in time"
        );
    }

    #[test]
    fn an_ended_conversation_without_outcome_is_lost_and_a_referral_alone_says_so() {
        let referral = ad();
        let mut facts = facts(Some(&referral));
        facts.closed = true;
        let decision = decide(None, &facts, &Change::Observe, t(20), &settings()).expect("ok");
        assert!(decision.record.has_lost(CLOSED_WITHOUT_OUTCOME));
        facts.first_inbound_at = None;
        facts.awaiting_since = None;
        let decision = decide(None, &facts, &Change::Observe, t(20), &settings()).expect("ok");
        assert!(decision.record.has_lost(REFERRAL_ONLY));
        assert!(!decision.record.has_lost(CLOSED_WITHOUT_OUTCOME));
        assert_eq!(decision.record.due, None, "nothing left to watch");
    }

    #[test]
    fn stages_move_with_reasons_and_final_ones_need_reopen() {
        let facts = facts(None);
        let settings = settings();
        let start = decide(None, &facts, &Change::Observe, t(11), &settings).expect("ok");
        let stage = |to, reason, reopen| Change::Stage {
            to,
            reason,
            by: Some("crm"),
            reopen,
        };
        assert!(matches!(
            decide(
                Some(&start.record),
                &facts,
                &stage("sold", None, false),
                t(12),
                &settings
            ),
            Err(RuleError::UnknownStage(..))
        ));
        assert!(matches!(
            decide(
                Some(&start.record),
                &facts,
                &stage("lost", None, false),
                t(12),
                &settings
            ),
            Err(RuleError::ReasonRequired(..))
        ));
        assert!(matches!(
            decide(
                Some(&start.record),
                &facts,
                &stage("lost", Some("meh"), false),
                t(12),
                &settings
            ),
            Err(RuleError::UnknownReason(..))
        ));
        let lost = decide(
            Some(&start.record),
            &facts,
            &stage("lost", Some("price"), false),
            t(12),
            &settings,
        )
        .expect("ok");
        assert_eq!(lost.record.lost_reason.as_deref(), Some("price"));
        assert_eq!(lost.events.len(), 2, "stage_changed and opportunity_lost");
        assert!(matches!(
            decide(
                Some(&lost.record),
                &facts,
                &stage("qualified", None, false),
                t(13),
                &settings
            ),
            Err(RuleError::Final(..))
        ));
        let reopened = decide(
            Some(&lost.record),
            &facts,
            &stage("qualified", None, true),
            t(13),
            &settings,
        )
        .expect("ok");
        assert_eq!(reopened.record.stage, "qualified");
        assert_eq!(reopened.record.lost_reason, None);
        assert_eq!(reopened.record.reached, ["lead", "lost", "qualified"]);
        let moves: Vec<(&str, &str, Option<&str>)> = reopened
            .record
            .moves
            .iter()
            .map(|moved| {
                (
                    moved.from.as_str(),
                    moved.to.as_str(),
                    moved.reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            moves,
            [("lead", "lost", Some("price")), ("lost", "qualified", None)],
            "each change is kept for the timeline"
        );
        assert_eq!(reopened.record.moves[1].at, t(13));
    }

    #[test]
    fn a_purchase_wins_the_conversation_once() {
        let facts = facts(None);
        let purchase = ConversionRef {
            id: "order-1".into(),
            name: "purchase".into(),
            value: Some("129.90".parse().expect("decimal")),
            currency: Some("EUR".into()),
            occurred_at: t(50),
        };
        let decision = decide(
            None,
            &facts,
            &Change::Conversion(&purchase),
            t(60),
            &settings(),
        )
        .expect("ok");
        assert_eq!(decision.record.stage, "won");
        assert_eq!(decision.events.len(), 2);
        let again = decide(
            Some(&decision.record),
            &facts,
            &Change::Conversion(&purchase),
            t(61),
            &settings(),
        )
        .expect("ok");
        assert!(again.events.is_empty());
        assert_eq!(again.record.conversions.len(), 1);
    }
}
