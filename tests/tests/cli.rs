//! The `omnigate` binary: `plugin check`, `schema`, and `serve` with a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use omnigate_tests::{get, omnigate_bin, plugin_path, root};

#[test]
fn plugin_check_accepts_web_chat_and_shows_what_it_declares() {
    let output = Command::new(omnigate_bin())
        .args(["plugin", "check"])
        .arg(plugin_path("webchat"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "id:           webchat",
        "contract:     omnigate:channel@0.1.0",
        "callback_url",
        "signing_secret",
        "capabilities: text",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
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
}
