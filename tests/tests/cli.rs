//! The `omnigate` binary: `plugin check`, `schema`, `config check`, `serve` with a graceful
//! SIGTERM; and the docs: every command they quote exists, the plugin guide's code is the
//! acme plugin's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::Path;

use omnigate_tests::{fixture_path, get, omnigate_bin, plugin_path, root, xtask_bin};

/// `omnigate plugin check` accepts the built plugin `name` and prints each of `expected`.
fn plugin_check_shows(name: &str, expected: &[&str]) {
    plugin_file_check_shows(&plugin_path(name), expected);
}

/// `omnigate plugin check` accepts the plugin file `path` and prints each of `expected`.
fn plugin_file_check_shows(path: &Path, expected: &[&str]) {
    let output = Command::new(omnigate_bin())
        .args(["plugin", "check"])
        .arg(path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in expected {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
}

/// A plugin built against the frozen contract 0.1.0 still loads (the web chat plugin as
/// built before 0.2.0; `tests/fixtures/webchat-0.1.0.wasm`).
#[test]
fn plugin_check_accepts_a_contract_0_1_plugin() {
    plugin_file_check_shows(
        &fixture_path("webchat-0.1.0.wasm"),
        &[
            "id:           webchat",
            "contract:     omnigate:channel@0.1.0",
            "signing_secret",
        ],
    );
}

/// A destination plugin is checked against the destination world and says what it takes.
#[test]
fn plugin_check_accepts_a_destination_plugin() {
    plugin_check_shows(
        "meta-capi",
        &[
            "is an omnigate destination plugin",
            "id:           meta-capi",
            "contract:     omnigate:channel@0.2.0 (destination)",
            "events:       conversion.recorded",
            "dataset_id",
            "access_token",
        ],
    );
}

#[test]
fn plugin_check_accepts_web_chat_and_shows_what_it_declares() {
    plugin_check_shows(
        "webchat",
        &[
            "id:           webchat",
            "contract:     omnigate:channel@0.2.0",
            "callback_url",
            "signing_secret",
            "capabilities: text",
        ],
    );
}

#[test]
fn plugin_check_refuses_a_random_file_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("random.wasm");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, bytes).expect("write");
    let output = Command::new(omnigate_bin())
        .args(["plugin", "check"])
        .arg(&file)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("is refused") && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );
}

#[test]
fn schema_is_generated_json_schema_of_the_event() {
    let output = Command::new(omnigate_bin())
        .arg("schema")
        .output()
        .expect("run");
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        schema["$id"],
        "https://omnigate.dev/schema/omnigate.event.v1.json"
    );
    assert_eq!(schema["title"], "Event");
    let required = schema["required"].as_array().expect("required");
    for field in [
        "id",
        "type",
        "occurred_at",
        "channel",
        "contact",
        "conversation",
    ] {
        assert!(
            required.contains(&serde_json::json!(field)),
            "{field} not required"
        );
    }
    assert!(schema.to_string().contains("message.received"));
}

#[tokio::test]
async fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let config = dir.path().join("omnigate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[plugins]\ncache_dir = {cache:?}\n[[channels]]\nid = \"web\"\nplugin = {plugin:?}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"env:TEST_SIGNING_SECRET\" }}\n",
            cache = dir.path().join("cache").display().to_string(),
            plugin = plugin_path("webchat").display().to_string(),
        ),
    )
    .expect("config");
    let child = Command::new(omnigate_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env(
            "TEST_SIGNING_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .current_dir(root())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut child = KillOnDrop(child);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = get(&url, &[]).await {
            assert!(body.contains("\"channels\":1"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not become ready");
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "gateway exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let logs: Vec<String> = BufReader::new(child.0.stderr.take().expect("stderr"))
        .lines()
        .map_while(Result::ok)
        .collect();
    let logs = logs.join("\n");
    assert!(
        logs.contains("MEMORY store"),
        "the memory store is announced loudly:\n{logs}"
    );
    assert!(logs.contains("shut down cleanly"), "{logs}");
    assert!(
        !logs.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "a secret reached the logs"
    );
}

/// Kills the gateway if the test fails before it stops it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `omnigate plugin <args…>` against `gateway` with the admin key; (success, stdout, stderr).
async fn plugin_admin(gateway: &omnigate_tests::Gateway, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(omnigate_bin())
        .arg("plugin")
        .args(args)
        .args(["--url", &gateway.base, "--key", "cli-admin-key-0123456"])
        .output()
        .await
        .expect("run");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_upload_list_activate_rollback_against_a_running_gateway() {
    let config = format!(
        "[admin]\nkeys = [\"cli-admin-key-0123456\"]\n[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/r\" }}\nsecrets = {{ signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n",
        omnigate_tests::toml_path(&plugin_path("webchat"))
    );
    let gateway = omnigate_tests::Gateway::start(&config)
        .await
        .expect("gateway");
    let hostile = omnigate_tests::guest_path("hostile").display().to_string();

    let (ok, stdout, stderr) =
        plugin_admin(&gateway, &["upload", &hostile, "--activate", "web"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let hostile_digest = answer["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(answer["activated"]["plugin"], "hostile@0.1.0");

    let (ok, stdout, _) = plugin_admin(&gateway, &["list"]).await;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let webchat_digest = list["channels"][0]["previous"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(list["channels"][0]["digest"], hostile_digest.as_str());

    let (ok, stdout, stderr) = plugin_admin(&gateway, &["rollback", "web"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("webchat@"), "{stdout}");
    let (ok, stdout, _) = plugin_admin(&gateway, &["activate", "web", &hostile_digest]).await;
    assert!(ok, "{stdout}");
    let (ok, stdout, _) = plugin_admin(&gateway, &["activate", "web", &webchat_digest]).await;
    assert!(ok, "{stdout}");

    // Refusals come back as a failing exit with the gateway's reason.
    let (ok, _, stderr) = plugin_admin(&gateway, &["activate", "web", "0000"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("404") && stderr.contains("no plugin version"),
        "{stderr}"
    );
    let random = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(random.path(), b"garbage").expect("write");
    let (ok, _, stderr) =
        plugin_admin(&gateway, &["upload", &random.path().display().to_string()]).await;
    assert!(!ok);
    assert!(stderr.contains("422"), "{stderr}");
    gateway.stop().await;
}

/// `plugin sign` prints a signature that `upload --signature` carries to a gateway that
/// requires one (`[admin] signing_keys`, the key `sign` prints on stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_sign_then_upload_with_the_signature() {
    let key = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(key.path(), format!("{}\n", "ab".repeat(32))).expect("write key");
    let hostile = omnigate_tests::guest_path("hostile").display().to_string();
    let output = Command::new(omnigate_bin())
        .args(["plugin", "sign", &hostile, "--key"])
        .arg(key.path())
        .output()
        .expect("run sign");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let signature = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let public = stderr
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let config = format!(
        "[admin]\nkeys = [\"cli-admin-key-0123456\"]\nsigning_keys = [\"{public}\"]\n[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/r\" }}\nsecrets = {{ signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n",
        omnigate_tests::toml_path(&plugin_path("webchat"))
    );
    let gateway = omnigate_tests::Gateway::start(&config)
        .await
        .expect("gateway");
    let (ok, _, stderr) = plugin_admin(&gateway, &["upload", &hostile, "--activate", "web"]).await;
    assert!(!ok);
    assert!(stderr.contains("not signed"), "{stderr}");
    let (ok, stdout, stderr) = plugin_admin(
        &gateway,
        &[
            "upload",
            &hostile,
            "--signature",
            &signature,
            "--activate",
            "web",
        ],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(answer["activated"]["plugin"], "hostile@0.1.0");
    gateway.stop().await;
}

/// Destinations are checked like channels: the plugin's world and what it requires, each
/// problem on the destination's id line.
#[test]
fn config_check_checks_destinations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = omnigate_tests::toml_path(&plugin_path("meta-capi"));
    let webchat = omnigate_tests::toml_path(&plugin_path("webchat"));
    let file = dir.path().join("destinations.toml");
    std::fs::write(
        &file,
        format!("[store]\nurl = \"memory://\"\n[[destinations]]\nid = \"meta\"\nplugin = {meta}\nsecrets = {{ access_token = \"t\" }}\n[[destinations]]\nid = \"chat\"\nplugin = {webchat}\n"),
    )
    .expect("write");
    let output = Command::new(omnigate_bin())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("{}:4: ", file.display())) && stderr.contains("dataset_id"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:8: ", file.display()))
            && stderr.contains("is a channel plugin; configure it under [[channels]]"),
        "{stderr}"
    );
}

#[test]
fn config_check_accepts_a_good_file_and_names_the_line_of_each_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    let plugin = omnigate_tests::toml_path(&plugin_path("webchat"));
    std::fs::write(
        &good,
        format!("[[channels]]\nid = \"web\"\nplugin = {plugin}\nconfig = {{ callback_url = \"https://shop.example/r\" }}\nsecrets = {{ signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n"),
    )
    .expect("write");
    let output = Command::new(omnigate_bin())
        .args(["config", "check"])
        .arg(&good)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("channel:       web → webchat@"), "{stdout}");

    // The web chat plugin requires `signing_secret`: named, on the channel's id line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[store]\nurl = \"memory://\"\n\n[[channels]]\nid = \"web\"\nplugin = {plugin}\nconfig = {{ callback_url = \"https://shop.example/r\" }}\n"),
    )
    .expect("write");
    let output = Command::new(omnigate_bin())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("{}:5: ", bad.display())) && stderr.contains("signing_secret"),
        "{stderr}"
    );

    // Five problems of five kinds, each reported in the same run with its line: an
    // unknown key, two unset variables, a value of the wrong type, a plugin with a
    // required secret missing.
    let five = dir.path().join("five.toml");
    std::fs::write(
        &five,
        format!("[server]\nlisten = \"127.0.0.1:8080\"\nbogus = 1\n[api]\nkeys = [\"env:OMNIGATE_CLI_TEST_UNSET_A\"]\n[admin]\nkeys = [\"env:OMNIGATE_CLI_TEST_UNSET_B\"]\n[pipeline]\nhistory_cap = \"many\"\n[[channels]]\nid = \"web\"\nplugin = {plugin}\nconfig = {{ callback_url = \"https://shop.example/r\" }}\n"),
    )
    .expect("write");
    let output = Command::new(omnigate_bin())
        .args(["config", "check"])
        .arg(&five)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let reported: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&format!("{}:", five.display())))
        .collect();
    let expected = ["3: ", "5: ", "7: ", "9: ", "11: "];
    assert_eq!(reported.len(), expected.len(), "{stderr}");
    for (line, at) in reported.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{}:{at}", five.display())),
            "{stderr}"
        );
    }
    for needle in [
        "bogus",
        "OMNIGATE_CLI_TEST_UNSET_A",
        "OMNIGATE_CLI_TEST_UNSET_B",
        "history_cap",
        "signing_secret",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

/// Markdown files whose commands a reader copies: the README and everything in docs/.
fn markdown_files() -> Vec<std::path::PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The code a Markdown text shows: each line of a fenced block, each inline code span.
fn code_of(markdown: &str) -> Vec<String> {
    let mut code = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            code.push(line.trim().to_owned());
        } else {
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    code
}

/// The subcommand words of a quoted command line after its program (`plugin upload|list`
/// → two candidates), up to the first word that is an argument.
fn subcommands(words: &[&str]) -> Vec<Vec<String>> {
    let is_word = |word: &str| {
        !word.is_empty()
            && word.split('|').all(|part| {
                part.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && part.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            })
    };
    let mut candidates = vec![Vec::new()];
    for word in words.iter().take_while(|word| is_word(word)) {
        candidates = candidates
            .into_iter()
            .flat_map(|prefix: Vec<String>| {
                word.split('|').map(move |part| {
                    let mut next = prefix.clone();
                    next.push(part.to_owned());
                    next
                })
            })
            .collect();
    }
    candidates
}

/// Whether `program <words> --help` succeeds.
fn has_help(program: &std::path::Path, words: &[String]) -> bool {
    Command::new(program)
        .args(words)
        .arg("--help")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn every_command_the_docs_quote_exists() {
    let omnigate = omnigate_bin();
    let xtask = xtask_bin();
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        for line in code_of(&text) {
            // Usage tables put a description after two or more spaces.
            let line = line.trim_start_matches("$ ");
            let line = line.split("  ").next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            let (program, rest): (&std::path::Path, &[&str]) = match words.as_slice() {
                ["omnigate", rest @ ..] => (&omnigate, rest),
                ["cargo", "xtask", rest @ ..] => (&xtask, rest),
                _ => continue,
            };
            let mut commands: Vec<(&std::path::Path, Vec<String>)> = Vec::new();
            if program == xtask.as_path() {
                // An xtask task takes its own arguments: check the task; `omnigate`'s
                // arguments are an omnigate command.
                if let Some(task) = rest.first() {
                    commands.extend(
                        subcommands(&rest[..1])
                            .into_iter()
                            .map(|w| (xtask.as_path(), w)),
                    );
                    if *task == "omnigate" {
                        commands.extend(
                            subcommands(&rest[1..])
                                .into_iter()
                                .map(|w| (omnigate.as_path(), w)),
                        );
                    }
                }
            } else {
                commands.extend(
                    subcommands(rest)
                        .into_iter()
                        .map(|w| (omnigate.as_path(), w)),
                );
            }
            for (program, words) in commands.into_iter().filter(|(_, words)| !words.is_empty()) {
                checked += 1;
                if !has_help(program, &words) {
                    missing.push(format!(
                        "{}: `{line}` ({} {})",
                        file.display(),
                        program.display(),
                        words.join(" ")
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "commands the docs quote that do not exist:\n{}",
        missing.join("\n")
    );
    // The README alone quotes a dozen; a parser that finds none is broken.
    assert!(checked >= 12, "only {checked} commands found");
}

#[test]
fn the_plugin_guide_shows_the_acme_source_as_it_is() {
    let guide = std::fs::read_to_string(root().join("docs/writing-a-plugin.md")).expect("guide");
    let mut snippets = 0;
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(reference) = line
            .strip_prefix("<!-- snippet: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let (path, name) = reference.split_once('#').expect("path#name");
        assert_eq!(
            lines.next(),
            Some("```rust"),
            "{reference}: a rust block follows"
        );
        let shown: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
        let source = std::fs::read_to_string(root().join(path)).expect("snippet source");
        let start = format!("// ANCHOR: {name}");
        let end = format!("// ANCHOR_END: {name}");
        let region: Vec<&str> = source
            .lines()
            .skip_while(|line| line.trim() != start)
            .skip(1)
            .take_while(|line| line.trim() != end)
            .collect();
        assert!(!region.is_empty(), "{path} has no region {name}");
        assert_eq!(
            shown, region,
            "docs/writing-a-plugin.md shows {reference} as it was, not as it is"
        );
        snippets += 1;
    }
    assert!(snippets >= 6, "{snippets} snippets");
}

#[test]
fn the_acme_example_plugin_passes_plugin_check() {
    plugin_check_shows(
        "acme",
        &[
            "id:           acme",
            "webhook_secret",
            "api_token",
            "api.acme.example",
        ],
    );
}
