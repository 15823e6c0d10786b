//! `[outcomes]` settings.

use std::time::Duration;

use serde::Deserialize;

/// Which business messages count as the first response.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FirstResponse {
    /// Any business message: a reply through the API (agent, bot or unnamed) or one the
    /// provider echoes as `message.sent`.
    #[default]
    Any,
    /// Only replies whose `author.kind` is `agent`: a human answered.
    Agent,
}

/// `[outcomes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutcomeSettings {
    /// Track outcomes (stages, first response, lost opportunities, rollups). Off, the
    /// gateway records conversations only (and `/v1/conversions` answers 409).
    pub enabled: bool,
    /// Stages in order; the first is where a conversation starts. Must contain `won` and
    /// `lost`, the final stages.
    pub stages: Vec<String>,
    /// Reasons a conversation may be moved to `lost` with.
    pub lost_reasons: Vec<String>,
    /// A first response later than this after the customer's first message is late, and
    /// none by then is the lost opportunity `unanswered`.
    #[serde(with = "humantime_serde")]
    pub response_sla: Duration,
    /// How long after a conversation started a conversion is still attributed to it.
    #[serde(with = "humantime_serde")]
    pub attribution_window: Duration,
    /// Which replies count as the first response.
    pub first_response: FirstResponse,
}

impl Default for OutcomeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            stages: ["lead", "qualified", "won", "lost"]
                .map(String::from)
                .to_vec(),
            lost_reasons: [
                "price",
                "no_stock",
                "no_answer",
                "competitor",
                "not_interested",
                "spam",
                "other",
            ]
            .map(String::from)
            .to_vec(),
            response_sla: Duration::from_secs(3600),
            attribution_window: Duration::from_secs(28 * 24 * 3600),
            first_response: FirstResponse::Any,
        }
    }
}

/// The final stage of a sale.
pub const WON: &str = "won";
/// The final stage of a lost opportunity.
pub const LOST: &str = "lost";

impl OutcomeSettings {
    /// What is wrong with these settings, each naming its entry (empty when usable).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (entry, names) in [
            ("stages", &self.stages),
            ("lost_reasons", &self.lost_reasons),
        ] {
            if names.is_empty() {
                problems.push(format!("[outcomes] {entry} is empty"));
            }
            for (i, name) in names.iter().enumerate() {
                if !is_name(name) {
                    problems.push(format!(
                        "[outcomes] {entry}: `{name}` is not a name (1-40 of a-z, 0-9, _)"
                    ));
                }
                if names[..i].contains(name) {
                    problems.push(format!("[outcomes] {entry}: `{name}` is listed twice"));
                }
            }
        }
        for required in [WON, LOST] {
            if !self.stages.iter().any(|stage| stage == required) {
                problems.push(format!("[outcomes] stages must contain `{required}`"));
            }
        }
        if self
            .stages
            .first()
            .is_some_and(|first| self.is_final(first))
        {
            problems.push("[outcomes] stages: the first stage cannot be `won` or `lost`".into());
        }
        if self.response_sla.is_zero() {
            problems.push("[outcomes] response_sla must be more than 0s".into());
        }
        if self.attribution_window.is_zero() {
            problems.push("[outcomes] attribution_window must be more than 0s".into());
        }
        problems
    }

    /// Where a conversation starts.
    pub fn initial_stage(&self) -> &str {
        self.stages.first().map_or("lead", String::as_str)
    }

    /// Whether `stage` ends the conversation's outcome (`won`, `lost`).
    pub fn is_final(&self, stage: &str) -> bool {
        stage == WON || stage == LOST
    }
}

/// A stage or reason name: lowercase ASCII, digits and `_`, 1 to 40 characters (it is
/// a report key and a metric label).
pub fn is_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_usable() {
        assert!(OutcomeSettings::default().problems().is_empty());
    }

    #[test]
    fn every_problem_is_named() {
        let settings = OutcomeSettings {
            stages: vec!["won".into(), "Lead".into(), "won".into()],
            lost_reasons: Vec::new(),
            response_sla: Duration::ZERO,
            ..OutcomeSettings::default()
        };
        let problems = settings.problems().join("\n");
        for expected in [
            "`Lead` is not a name",
            "`won` is listed twice",
            "lost_reasons is empty",
            "must contain `lost`",
            "first stage cannot be",
            "response_sla",
        ] {
            assert!(problems.contains(expected), "{expected} in {problems}");
        }
    }
}
