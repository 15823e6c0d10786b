//! `omnigate config check <file>`: everything start-up would refuse, found without
//! starting: TOML and unknown keys, unset secrets, invalid or duplicate channel ids,
//! plugin files that are missing or refused, config keys and secrets a plugin requires
//! (of channels and destinations).
//! Each problem names the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::lifecycle::binding::check_requirements;
use crate::ops::config::{ChannelConfig, Config, DestinationConfig};
use crate::runtime::{Plugin, Role, Runtime, RuntimeSettings};

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when it can be pinned down.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// What a valid file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `channel id → plugin id@version`.
    pub channels: Vec<(String, String)>,
    /// Number of `[[subscriptions]]`.
    pub subscriptions: usize,
    /// The store URL, password removed.
    pub store: String,
}

/// Check the configuration file at `path` (environment overrides are not applied; `env:`
/// secrets are resolved from the environment as `serve` would).
pub async fn check(path: &Path) -> Result<Summary, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![Problem {
            line: None,
            message: format!("cannot read {}: {error}", path.display()),
        }]
    })?;
    check_text(&text).await
}

/// Check configuration text: every problem in one run, each with its line where it can
/// be pinned down.
pub async fn check_text(text: &str) -> Result<Summary, Vec<Problem>> {
    let (config, mut problems) = parse_all(text);
    let Some(config) = config else {
        return Err(problems);
    };
    for message in config.broken_rules() {
        let line = config
            .channels
            .iter()
            .rev()
            .find(|channel| message.contains(&format!("`{}`", channel.id)))
            .and_then(|channel| {
                // A duplicate is reported on its second appearance.
                let lines = lines_of(text, "id", &channel.id);
                if message.contains("twice") {
                    lines.get(1).copied()
                } else {
                    lines.first().copied()
                }
            });
        problems.push(Problem {
            line,
            message: format!("invalid configuration: {message}"),
        });
    }
    if let Err(error) = config.store.tls() {
        let line = config
            .store
            .tls_ca_file
            .as_ref()
            .and_then(|path| line_of(text, "tls_ca_file", &path.display().to_string()));
        problems.push(Problem {
            line,
            message: error.to_string(),
        });
    }
    if let Err(error) = config.server.public_url() {
        let line = config
            .server
            .public_url
            .as_deref()
            .and_then(|url| line_of(text, "public_url", url));
        problems.push(Problem {
            line,
            message: error.to_string(),
        });
    }
    if let Err(error) = config.delivery.validate() {
        problems.push(Problem {
            line: None,
            message: error.to_string(),
        });
    }
    let runtime = Runtime::new(&RuntimeSettings {
        cache_dir: config.plugins.cache_dir.clone(),
        engine: Default::default(),
        allow_networks: config.plugins.allow_networks.clone(),
        budget: config.plugins.budget(),
    })
    .map_err(|error| {
        vec![Problem {
            line: None,
            message: error.to_string(),
        }]
    })?;
    let mut channels = Vec::new();
    let mut loaded: HashMap<PathBuf, Arc<Plugin>> = HashMap::new();
    for channel in &config.channels {
        match check_channel(&runtime, &config, channel, &mut loaded).await {
            Ok(label) => channels.push((channel.id.clone(), label)),
            Err(problem) => problems.push(locate(text, channel, problem)),
        }
    }
    for destination in &config.destinations {
        if let Err(message) = check_destination(&runtime, &config, destination).await {
            problems.push(Problem {
                line: line_of(text, "id", &destination.id),
                message,
            });
        }
    }
    if !problems.is_empty() {
        return Err(sorted(problems));
    }
    Ok(Summary {
        channels,
        subscriptions: config.subscriptions.len(),
        // Printed by `config check`: the password stays out of the terminal.
        store: crate::store::redact_url(&config.store.url),
    })
}

/// A destination's plugin loads, is a destination plugin, and has what it requires.
async fn check_destination(
    runtime: &Runtime,
    config: &Config,
    destination: &DestinationConfig,
) -> Result<(), String> {
    let path = destination.plugin_path(&config.plugins.dir);
    let plugin = runtime.load_file(&path).await.map_err(|error| {
        format!(
            "destination `{}`: plugin {}: {error}",
            destination.id,
            path.display()
        )
    })?;
    if plugin.role == Role::Channel {
        return Err(format!(
            "destination `{}`: {} is a channel plugin; configure it under [[channels]]",
            destination.id, plugin.label
        ));
    }
    check_requirements(destination, &plugin.info).map_err(|error| error.to_string())
}

/// How many problems the parse reports at most before it gives up.
const MAX_PARSE_PROBLEMS: usize = 50;

/// A string value put in place of a value that failed (an unset `env:` secret, an
/// unreadable `file:`), so the rest of the file can be checked.
const STAND_IN: &str = "\"omnigate-config-check-stand-in\"";

/// Parse `text`, reporting every value the parse refuses: after each error the offending
/// value is stood in for (a string value) or its line commented out (an unknown key, a
/// value of the wrong type), keeping every line where it was, and the parse runs again.
/// The configuration is `None` when an error cannot be set aside (a syntax error, a
/// missing table key).
fn parse_all(text: &str) -> (Option<Config>, Vec<Problem>) {
    let mut working = text.to_owned();
    let mut problems = Vec::new();
    while problems.len() < MAX_PARSE_PROBLEMS {
        let error = match toml::from_str::<Config>(&working) {
            Ok(config) => return (Some(config), sorted(problems)),
            Err(error) => error,
        };
        let stand_in_refused = error
            .span()
            .and_then(|span| working.get(span))
            .is_some_and(|value| value == STAND_IN);
        // A stand-in refused (the key wants no string) reports nothing new.
        if !stand_in_refused {
            problems.push(toml_problem(&working, &error));
        }
        let repaired = error
            .span()
            .and_then(|span| set_aside_value(&working, span));
        match repaired {
            Some(repaired) => working = repaired,
            None => break,
        }
    }
    if problems.is_empty() {
        problems.push(Problem {
            line: None,
            message: "the configuration cannot be read".into(),
        });
    }
    (None, sorted(problems))
}

/// Problems in file order (those without a line last).
fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
    problems
}

/// `text` with the value at `span` set aside: a quoted string replaced by [`STAND_IN`],
/// anything else by commenting out its line (a key of a table header cannot be, `None`).
fn set_aside_value(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let value = text.get(span.clone())?;
    let quoted = value.starts_with('"') || value.starts_with('\'');
    if quoted && value != STAND_IN {
        return Some(format!(
            "{}{STAND_IN}{}",
            &text[..span.start],
            &text[span.end..]
        ));
    }
    let line_start = text[..span.start].rfind('\n').map_or(0, |at| at + 1);
    if text[line_start..].trim_start().starts_with('[') {
        return None;
    }
    Some(format!("{}#{}", &text[..line_start], &text[line_start..]))
}

/// Which key of the channel a problem is about, to find its line.
enum ChannelProblem {
    Plugin(String),
    Requirements(String),
}

async fn check_channel(
    runtime: &Runtime,
    config: &Config,
    channel: &ChannelConfig,
    loaded: &mut HashMap<PathBuf, Arc<Plugin>>,
) -> Result<String, ChannelProblem> {
    let path = channel.plugin_path(&config.plugins.dir);
    let plugin = match loaded.get(&path) {
        Some(plugin) => plugin.clone(),
        None => {
            let plugin = runtime.load_file(&path).await.map_err(|error| {
                ChannelProblem::Plugin(format!(
                    "channel `{}`: plugin {}: {error}",
                    channel.id,
                    path.display()
                ))
            })?;
            loaded.insert(path, plugin.clone());
            plugin
        }
    };
    check_requirements(channel, &plugin.info)
        .map_err(|error| ChannelProblem::Requirements(error.to_string()))?;
    Ok(plugin.label.to_string())
}

fn locate(text: &str, channel: &ChannelConfig, problem: ChannelProblem) -> Problem {
    match problem {
        ChannelProblem::Plugin(message) => Problem {
            line: line_of_channel_key(text, &channel.id, "plugin")
                .or_else(|| line_of(text, "id", &channel.id)),
            message,
        },
        ChannelProblem::Requirements(message) => Problem {
            line: line_of(text, "id", &channel.id),
            message,
        },
    }
}

fn toml_problem(text: &str, error: &toml::de::Error) -> Problem {
    let start = error.span().map(|span| span.start);
    let line = start
        .and_then(|start| text.get(..start))
        .map(|before| before.matches('\n').count() + 1);
    // The error's first lines repeat the position and quote the source; keep the reason,
    // and name the key when the error is about its value (`key = <value>`).
    let message = error.message().to_owned();
    let key = start.and_then(|start| {
        let line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
        let (key, _) = text[line_start..start].split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.contains(['{', '[', ','])).then_some(key)
    });
    let message = match key {
        Some(key) if !message.contains(key) => format!("`{key}`: {message}"),
        _ => message,
    };
    Problem { line, message }
}

/// The first line `key = "value"` (any spacing) of the text.
fn line_of(text: &str, key: &str, value: &str) -> Option<usize> {
    lines_of(text, key, value).first().copied()
}

/// Every line `key = "value"` (any spacing) of the text.
fn lines_of(text: &str, key: &str, value: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| assigns(line, key, value))
        .map(|(index, _)| index + 1)
        .collect()
}

/// The line of `key = …` inside the `[[channels]]` table whose id is `id`.
fn line_of_channel_key(text: &str, id: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let id_line = lines.iter().position(|line| assigns(line, "id", id))?;
    let start = lines[..id_line]
        .iter()
        .rposition(|line| line.trim_start().starts_with('['))
        .unwrap_or(0);
    let end = lines[id_line + 1..]
        .iter()
        .position(|line| line.trim_start().starts_with('['))
        .map_or(lines.len(), |offset| id_line + 1 + offset);
    (start..end)
        .find(|&index| {
            lines[index]
                .trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| index + 1)
}

fn assigns(line: &str, key: &str, value: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix(key) else {
        return false;
    };
    let Some(rest) = rest.trim_start().strip_prefix('=') else {
        return false;
    };
    let rest = rest.trim();
    rest.trim_matches('"') == value || rest.trim_matches('\'') == value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_problem_is_reported_in_one_run() {
        let text = "\
[server]
listen = \"127.0.0.1:8080\"
bogus = 1

[api]
keys = [\"env:OMNIGATE_CHECK_TEST_UNSET_ONE\"]

[admin]
keys = [\"env:OMNIGATE_CHECK_TEST_UNSET_TWO\"]

[pipeline]
history_cap = \"many\"

[plugins]
dir = \"/nonexistent\"

[[channels]]
id = \"web\"
plugin = \"nothing-here\"
";
        let problems = check_text(text).await.expect_err("five problems");
        let lines: Vec<Option<usize>> = problems.iter().map(|problem| problem.line).collect();
        assert_eq!(
            lines,
            [Some(3), Some(6), Some(9), Some(12), Some(19)],
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("bogus"), "{problems:#?}");
        assert!(
            problems[1]
                .message
                .contains("OMNIGATE_CHECK_TEST_UNSET_ONE")
        );
        assert!(
            problems[2]
                .message
                .contains("OMNIGATE_CHECK_TEST_UNSET_TWO")
        );
        assert!(
            problems[3].message.contains("`history_cap`") && problems[3].message.contains("many"),
            "{problems:#?}"
        );
        assert!(problems[4].message.contains("nothing-here.wasm"));
    }

    #[tokio::test]
    async fn a_syntax_error_stops_the_check_with_its_line() {
        let problems = check_text("[server]\nlisten = \n")
            .await
            .expect_err("syntax");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, Some(2));
    }

    #[tokio::test]
    async fn unknown_key_is_reported_on_its_line() {
        let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[store]\nurll = \"memory://\"\n";
        let problems = check_text(text).await.expect_err("unknown key");
        assert_eq!(problems[0].line, Some(5), "{problems:?}");
        assert!(problems[0].message.contains("urll"), "{problems:?}");
    }

    #[tokio::test]
    async fn a_public_url_with_a_query_is_reported_on_its_line() {
        let text = "[server]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://hooks.example.com/?x=1\"\n";
        let problems = check_text(text).await.expect_err("bad public_url");
        assert_eq!(problems[0].line, Some(3), "{problems:?}");
        assert!(
            problems[0]
                .message
                .contains("`[server] public_url` must be"),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn unset_secret_is_reported_on_its_line() {
        let text = "[api]\nkeys = [\"env:OMNIGATE_CHECK_TEST_UNSET\"]\n";
        let problems = check_text(text).await.expect_err("unset");
        assert_eq!(problems[0].line, Some(2), "{problems:?}");
        assert!(problems[0].message.contains("OMNIGATE_CHECK_TEST_UNSET"));
    }

    #[tokio::test]
    async fn store_tls_ca_file_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let text = format!(
            "[store]\nurl = \"rediss://127.0.0.1:6380\"\ntls_ca_file = {:?}\n",
            missing.display().to_string()
        );
        let problems = check_text(&text).await.expect_err("unreadable");
        assert_eq!(problems[0].line, Some(3), "{problems:?}");
        assert!(problems[0].message.contains("tls_ca_file"), "{problems:?}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let text = format!(
            "[store]\ntls_ca_file = {:?}\n",
            garbage.display().to_string()
        );
        let problems = check_text(&text).await.expect_err("no certificate");
        assert!(problems[0].message.contains("CERTIFICATE"), "{problems:?}");

        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).expect("self-signed");
        std::fs::write(&ca, certificate.pem()).expect("write");
        let text = format!(
            "[store]\nurl = \"rediss://:pw@127.0.0.1:6380\"\ntls_ca_file = {:?}\n",
            ca.display().to_string()
        );
        let summary = check_text(&text).await.expect("accepted");
        assert_eq!(summary.store, "rediss://:***@127.0.0.1:6380", "no password");
    }

    #[tokio::test]
    async fn duplicate_channel_and_missing_plugin_file_name_their_lines() {
        let duplicate = "[[channels]]\nid = \"web\"\nplugin = \"x\"\n[[channels]]\nid = \"web\"\nplugin = \"y\"\n";
        let problems = check_text(duplicate).await.expect_err("duplicate");
        let twice = problems
            .iter()
            .find(|problem| problem.message.contains("twice"))
            .expect("the duplicate is reported");
        assert_eq!(
            twice.line,
            Some(5),
            "on its second appearance: {problems:?}"
        );

        let missing = "[plugins]\ndir = \"/nonexistent\"\n\n[[channels]]\nid = \"web\"\nplugin = \"nothing-here\"\n";
        let problems = check_text(missing).await.expect_err("missing file");
        assert_eq!(problems[0].line, Some(6), "{problems:?}");
        assert!(
            problems[0].message.contains("nothing-here.wasm"),
            "{problems:?}"
        );
    }
}
