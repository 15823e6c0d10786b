//! `cargo xtask run`: the demo gateway on the memory store, a web chat channel, and a
//! local receiver that verifies and prints every delivery.

use std::process::{Child, Command};

use anyhow::{Context, Result};

use crate::plugins;
use crate::shell::{self, root};

/// Demo-only secrets (never use them for anything real).
const SITE_SECRET: &str = "whsec_b21uaWdhdGUtZGVtby13ZWJjaGF0LXNpZ25pbmc=";
const SUBSCRIPTION_SECRET: &str = "whsec_b21uaWdhdGUtZGVtby1zdWJzY3JpcHRpb24=";

/// Build, write the demo config, start the receiver and the gateway.
pub fn run() -> Result<()> {
    plugins::build()?;
    // The same feature set as `cargo xtask test`, so the two share build artifacts.
    shell::step("build the gateway", &["build", "--workspace", "--bins"])?;
    let demo = root().join("target").join("demo");
    std::fs::create_dir_all(&demo)?;
    let config = demo.join("omnigate.toml");
    std::fs::write(&config, demo_config()).context("write the demo config")?;
    let binary = root().join("target").join("debug").join("omnigate");
    let api_key =
        std::env::var("OMNIGATE_API_KEY").unwrap_or_else(|_| "omnigate-demo-api-key".into());
    let admin_key =
        std::env::var("OMNIGATE_ADMIN_KEY").unwrap_or_else(|_| "omnigate-demo-admin-key".into());

    let mut receiver = Command::new(&binary)
        .args(["dev", "receiver", "--listen", "127.0.0.1:9000"])
        .args(["--secret", SUBSCRIPTION_SECRET, "--secret", SITE_SECRET])
        .spawn()
        .context("start the dev receiver")?;
    print_walkthrough(&config.display().to_string(), &api_key, &admin_key);
    let status = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("OMNIGATE_API_KEY", &api_key)
        .env("OMNIGATE_ADMIN_KEY", &admin_key)
        .current_dir(root())
        .status();
    stop(&mut receiver);
    status.context("run the gateway")?;
    Ok(())
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn demo_config() -> String {
    format!(
        r#"# Demo configuration written by `cargo xtask run`.
[server]
listen = "127.0.0.1:8080"

[store]
url = "memory://"

[api]
keys = ["env:OMNIGATE_API_KEY"]

[admin]
keys = ["env:OMNIGATE_ADMIN_KEY"]

[plugins]
dir = "target/plugins"
cache_dir = "target/plugin-cache"
# Rebuild a plugin (`cargo xtask plugins`) and the running gateway swaps it in.
watch = true
# The demo's site backend listens on this host: allow loopback for http-fetch.
allow_networks = ["127.0.0.0/8"]

[delivery]
retry_schedule = ["1s", "5s", "30s"]
# The demo receiver listens on this host: allow loopback for deliveries.
allow_networks = ["127.0.0.0/8"]

[[channels]]
id = "web"
plugin = "webchat"
allowed_hosts = ["http://127.0.0.1:9000"]
config = {{ callback_url = "http://127.0.0.1:9000/site/replies" }}
secrets = {{ signing_secret = "{SITE_SECRET}" }}

[[subscriptions]]
url = "http://127.0.0.1:9000/hooks/omnigate"
secret = "{SUBSCRIPTION_SECRET}"
events = ["*"]
history = 5
"#
    )
}

fn print_walkthrough(config: &str, api_key: &str, admin_key: &str) {
    println!(
        r#"
omnigate demo
  gateway:   http://127.0.0.1:8080   (config: {config})
  receiver:  http://127.0.0.1:9000   (prints every verified delivery and reply)

Send a signed web chat message (Standard Webhooks signature, computed with openssl):

  SECRET='{SITE_SECRET}'
  body='{{"type":"message","id":"site-msg-1","visitor":{{"id":"v-42","name":"Ana","email":"ana@example.com"}},"text":"Hola","page":{{"url":"https://shop.example/p?utm_source=instagram&utm_campaign=bf25&fbclid=abc","referrer":"https://l.instagram.com/"}},"sent_at":"2026-11-24T10:00:00Z"}}'
  id="msg_$(date +%s%N)"; ts=$(date +%s)
  key=$(printf '%s' "${{SECRET#whsec_}}" | base64 -d | od -An -tx1 | tr -d ' \n')
  sig=$(printf '%s' "$id.$ts.$body" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key -binary | base64)
  curl -i http://127.0.0.1:8080/webhooks/web -H 'content-type: application/json' \
       -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" -d "$body"

The receiver prints conversation.started and message.received. Reply through the API
(take the conversation id from the printed event):

  curl -i http://127.0.0.1:8080/v1/conversations/<cv_…>/messages \
       -H 'authorization: Bearer {api_key}' -H 'content-type: application/json' -d '{{"text":"¡Hola Ana!"}}'

Plugins hot-load: `cargo xtask plugins` rebuilds them and the gateway swaps the new
web chat version in (the plugins directory is watched). Or manage versions by hand:

  target/debug/omnigate plugin list --key {admin_key}
  target/debug/omnigate plugin rollback web --key {admin_key}

Metrics: curl http://127.0.0.1:8080/metrics

Ctrl-C stops both.
"#
    );
}
