//! The `omnigate` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use omnigate::ops::config::Config;
use omnigate::ops::telemetry::{self, LogFormat};
use omnigate::runtime::{Runtime, RuntimeSettings};

// mimalloc: measured ~1.5× the request rate of glibc malloc on the webhook path
// (docs/benchmarks.md); the gateway allocates many short-lived strings per event.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// omnigate: channel plugins in a WebAssembly sandbox, one conversation across channels,
/// reliable delivery to your tools.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "OMNIGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (optional; `OMNIGATE_<SECTION>__<KEY>` variables override it).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Work with channels at their providers.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the JSON Schema of the normalized event.
    Schema,
    /// Development aids.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load a plugin, check it against the contract and print what it declares.
    Check {
        /// The `.wasm` component.
        file: PathBuf,
        /// Where compiled plugins are cached (as `[plugins] cache_dir`): a check compiles
        /// the plugin once and a gateway using the same directory starts from the cached
        /// artifact instead of compiling again (an 18 MB CPython component takes long).
        #[arg(long, default_value = "target/plugin-cache")]
        cache_dir: PathBuf,
    },
    /// Replay recorded webhooks (`--fixtures`: one TOML file per case) through a plugin in
    /// the gateway's runtime; one line per case, a non-zero exit if any fails.
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// The directory of fixture files (`*.toml`; `channel.toml` holds what all share).
        #[arg(long)]
        fixtures: PathBuf,
        /// Print what the plugin made of each case (status, error, events) as JSON: what
        /// an expectation can name.
        #[arg(long)]
        show: bool,
        /// Where compiled plugins are cached (as for `plugin check`).
        #[arg(long, default_value = "target/plugin-cache")]
        cache_dir: PathBuf,
    },
    /// Create a new channel plugin (contract 0.2.0): source, a test, recorded webhooks for
    /// `plugin test` and a README with the build command.
    New {
        /// The plugin id and package name (`acme-chat`: lower-case letters, digits, hyphens).
        name: String,
        /// Its language.
        #[arg(long, value_enum)]
        lang: omnigate::authoring::scaffold::Language,
        /// The directory to create (default: `./<name>`); it must be absent or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: depend on the SDK at this path (the `sdk` directory of an omnigate
        /// checkout) instead of the project's git repository.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Sign a plugin for `[admin] signing_keys`: prints the base64 ed25519 signature of
    /// its SHA-256 digest (for `upload --signature`); the public key goes to stderr.
    Sign {
        /// The `.wasm` component.
        file: PathBuf,
        /// A file holding the 32-byte ed25519 private key (seed), base64 or hex.
        #[arg(long)]
        key: PathBuf,
    },
    /// Upload a plugin version to a running gateway (optionally activating it).
    Upload {
        /// The `.wasm` component.
        file: PathBuf,
        /// Activate it for this channel (or `destination:<id>`) right away.
        #[arg(long)]
        activate: Option<String>,
        /// Its signature, from `omnigate plugin sign` (sent as `x-omnigate-signature`).
        #[arg(long)]
        signature: Option<String>,
        #[command(flatten)]
        gateway: AdminTarget,
    },
    /// List a running gateway's plugin versions and which one serves each channel.
    List {
        #[command(flatten)]
        gateway: AdminTarget,
    },
    /// Make a version (by digest) serve a channel.
    Activate {
        /// Channel id.
        channel: String,
        /// The version's SHA-256 digest (from `upload` or `list`).
        digest: String,
        #[command(flatten)]
        gateway: AdminTarget,
    },
    /// Return a channel to the version before its last activation.
    Rollback {
        /// Channel id.
        channel: String,
        #[command(flatten)]
        gateway: AdminTarget,
    },
}

/// Which gateway to manage, and the admin key.
#[derive(Debug, clap::Args)]
struct AdminTarget {
    /// Base URL of the gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "OMNIGATE_URL")]
    url: String,
    /// An `[admin] keys` entry.
    #[arg(long, env = "OMNIGATE_ADMIN_KEY", hide_env_values = true)]
    key: String,
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Register a channel's webhook URL with its provider (Telegram, Twilio); the other
    /// providers are set up in their consoles (docs/channels/).
    Setup {
        #[command(subcommand)]
        provider: SetupProvider,
    },
}

#[derive(Debug, Subcommand)]
enum SetupProvider {
    /// Telegram `setWebhook`: the URL, the secret token and the updates the plugin maps.
    Telegram {
        /// The webhook URL, `https://<gateway>/webhooks/<channel id>`.
        #[arg(long)]
        url: String,
        /// The bot token.
        #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
        bot_token: String,
        /// The channel's `secret_token` secret.
        #[arg(long, env = "TELEGRAM_SECRET_TOKEN", hide_env_values = true)]
        secret_token: String,
        /// Bot API base URL.
        #[arg(long, default_value = "https://api.telegram.org")]
        api_base: String,
    },
    /// Twilio: point a number's "A message comes in" webhook (POST) at the URL.
    Twilio {
        /// The webhook URL, `<public_url>/webhooks/<channel id>`.
        #[arg(long)]
        url: String,
        /// The number, E.164 (`+15017250604`).
        #[arg(long)]
        number: String,
        /// The Account SID (`AC…`).
        #[arg(long, env = "TWILIO_ACCOUNT_SID")]
        account_sid: String,
        /// The account's auth token.
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        auth_token: String,
        /// API base URL.
        #[arg(long, default_value = "https://api.twilio.com")]
        api_base: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file as `serve` would, without serving: unknown keys, unset
    /// secrets, channel ids, plugin files, required plugin settings. Problems name the line.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// A local receiver that verifies deliveries and prints them.
    Receiver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Secrets (`whsec_…`) a delivery may be signed with; repeat for several
        /// (e.g. the subscription's and a web chat site's).
        #[arg(long = "secret", required = true)]
        secrets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the gateway exports spans; the other commands are short-lived tools.
    let serving = matches!(cli.command, Command::Serve { .. });
    // Before the async runtime: the exporter's blocking HTTP client must not be created
    // (or dropped) on a runtime thread.
    let telemetry = match telemetry::init(cli.log_format, serving) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Serving has stopped (SIGTERM: intake closed, deliveries drained): export the
    // spans still queued, including the drain's own.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    // TLS for provider APIs and downstream tools: one process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        Command::Serve { config } => serve(config).await,
        Command::Plugin { command } => plugin(command).await,
        Command::Channel {
            command: ChannelCommand::Setup { provider },
        } => channel_setup(provider).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check_config(&file).await,
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&omnigate::event::json_schema())?
            );
            Ok(())
        }
        Command::Dev {
            command: DevCommand::Receiver { listen, secrets },
        } => Ok(omnigate::dev::receiver::run(listen, secrets).await?),
    }
}

/// `omnigate channel setup`: one provider call, its outcome on stdout.
async fn channel_setup(provider: SetupProvider) -> anyhow::Result<()> {
    use omnigate::ops::setup;
    match provider {
        SetupProvider::Telegram {
            url,
            bot_token,
            secret_token,
            api_base,
        } => {
            let said = setup::telegram(&setup::TelegramSetup {
                api_base,
                bot_token,
                secret_token,
                url: url.clone(),
            })
            .await?;
            println!("Telegram: {said} ({url})");
        }
        SetupProvider::Twilio {
            url,
            number,
            account_sid,
            auth_token,
            api_base,
        } => {
            let (sid, sms_url) = setup::twilio(&setup::TwilioSetup {
                api_base,
                account_sid,
                auth_token,
                number: number.clone(),
                url,
            })
            .await?;
            println!("Twilio: {number} ({sid}) now posts incoming messages to {sms_url}");
        }
    }
    Ok(())
}

async fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    let wasm = "application/wasm";
    let mut headers = Vec::new();
    let (gateway, method, path, content_type, body) = match command {
        PluginCommand::Check { file, cache_dir } => return check_plugin(file, cache_dir).await,
        PluginCommand::Sign { file, key } => return sign_plugin(&file, &key).await,
        PluginCommand::Test {
            file,
            fixtures,
            show,
            cache_dir,
        } => return test_plugin(&file, &fixtures, show, cache_dir).await,
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk_path,
        } => return new_plugin(name, lang, dir, sdk_path),
        PluginCommand::Upload {
            file,
            activate,
            signature,
            gateway,
        } => {
            headers.extend(
                signature.map(|signature| (omnigate::api::admin::SIGNATURE_HEADER, signature)),
            );
            let bytes = tokio::fs::read(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let path = match activate {
                Some(channel) => format!("/admin/plugins?activate={channel}"),
                None => "/admin/plugins".to_owned(),
            };
            (gateway, reqwest::Method::POST, path, wasm, bytes)
        }
        PluginCommand::List { gateway } => (
            gateway,
            reqwest::Method::GET,
            "/admin/plugins".to_owned(),
            wasm,
            Vec::new(),
        ),
        PluginCommand::Activate {
            channel,
            digest,
            gateway,
        } => {
            let body = serde_json::to_vec(&serde_json::json!({ "digest": digest }))?;
            (
                gateway,
                reqwest::Method::POST,
                format!("/admin/channels/{channel}/activate"),
                "application/json",
                body,
            )
        }
        PluginCommand::Rollback { channel, gateway } => (
            gateway,
            reqwest::Method::POST,
            format!("/admin/channels/{channel}/rollback"),
            wasm,
            Vec::new(),
        ),
    };
    admin_call(&gateway, method, &path, content_type, &headers, body).await
}

/// `omnigate plugin test`: one line per case, its differences below a failing one.
async fn test_plugin(
    file: &std::path::Path,
    dir: &std::path::Path,
    show: bool,
    cache_dir: PathBuf,
) -> anyhow::Result<()> {
    use omnigate::authoring::fixtures;
    let cases = fixtures::load_dir(dir)?;
    let runtime = Runtime::new(&RuntimeSettings {
        cache_dir: Some(cache_dir),
        ..RuntimeSettings::default()
    })?;
    let plugin = runtime
        .load_file(file)
        .await
        .with_context(|| format!("{} is refused", file.display()))?;
    let mut failed = Vec::new();
    for case in &cases {
        let report = fixtures::run_case(&runtime, &plugin, case).await?;
        let about = report
            .description
            .as_deref()
            .map(|text| format!(" ({text})"))
            .unwrap_or_default();
        if report.passed() {
            println!("pass  {}{about}", report.name);
        } else {
            println!("FAIL  {}{about}", report.name);
            for mismatch in &report.mismatches {
                println!("      {mismatch}");
            }
            failed.push(report.name.clone());
        }
        if show || !report.passed() {
            println!(
                "      got: {}",
                serde_json::to_string_pretty(&report.actual)?.replace('\n', "\n      ")
            );
        }
    }
    println!(
        "{}: {} passed, {} failed",
        plugin.label,
        cases.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} case(s) failed: {}", failed.len(), failed.join(", "))
    }
}

/// `omnigate plugin new`: the files written, then what to do next.
fn new_plugin(
    name: String,
    language: omnigate::authoring::scaffold::Language,
    dir: Option<PathBuf>,
    sdk_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    use omnigate::authoring::scaffold;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let options = scaffold::Options {
        name,
        language,
        dir: dir.clone(),
        sdk_path,
    };
    let written = scaffold::create(&options)?;
    println!(
        "created {} ({} files); build and test it as its README.md says",
        dir.display(),
        written.len()
    );
    for file in written
        .iter()
        .filter(|file| !file.starts_with("vendor/") && !file.starts_with("wit/"))
    {
        println!("  {file}");
    }
    Ok(())
}

/// `omnigate plugin sign`: the signature on stdout, the public key on stderr.
async fn sign_plugin(file: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    let wasm = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let key_text = tokio::fs::read_to_string(key)
        .await
        .with_context(|| format!("reading {}", key.display()))?;
    let key = omnigate::lifecycle::signing::private_key(&key_text)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", key.display()))?;
    eprintln!(
        "public key (for [admin] signing_keys): {}",
        omnigate::lifecycle::signing::public_key_text(&key)
    );
    println!("{}", omnigate::lifecycle::signing::sign_wasm(&wasm, &key));
    Ok(())
}

/// One `/admin` call; prints the JSON answer, fails with the gateway's reason on non-2xx.
async fn admin_call(
    gateway: &AdminTarget,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let url = format!("{}{path}", gateway.url.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&gateway.key)
        .header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if !status.is_success() {
        let reason = answer["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| answer.to_string());
        anyhow::bail!("{url} answered {status}: {reason}");
    }
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

async fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    match omnigate::server::check::check(file).await {
        Ok(summary) => {
            println!("{}: ok", file.display());
            println!("  store:         {}", summary.store);
            for (channel, plugin) in &summary.channels {
                println!("  channel:       {channel} → {plugin}");
            }
            println!("  subscriptions: {}", summary.subscriptions);
            Ok(())
        }
        Err(problems) => {
            for problem in &problems {
                match problem.line {
                    Some(line) => eprintln!("{}:{line}: {}", file.display(), problem.message),
                    None => eprintln!("{}: {}", file.display(), problem.message),
                }
            }
            anyhow::bail!("{} problem(s) in {}", problems.len(), file.display())
        }
    }
}

async fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    let listen = config.server.listen;
    let grace = config.server.shutdown_grace;
    let limits = config.server.limits()?;
    let app = omnigate::server::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, tracing = omnigate::ops::trace::exporting(), "omnigate listening");
    omnigate::server::serve(app, listener, limits, shutdown_signal(), grace).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: no new requests, draining");
}

async fn check_plugin(file: PathBuf, cache_dir: PathBuf) -> anyhow::Result<()> {
    let runtime = Runtime::new(&RuntimeSettings {
        cache_dir: Some(cache_dir),
        ..RuntimeSettings::default()
    })?;
    let plugin = runtime
        .load_file(&file)
        .await
        .with_context(|| format!("{} is refused", file.display()))?;
    let info = &plugin.info;
    let world = match &plugin.role {
        omnigate::runtime::Role::Channel => "channel",
        omnigate::runtime::Role::Destination { .. } => "destination",
    };
    println!("ok: {} is an omnigate {world} plugin", file.display());
    println!("  id:           {}", info.id);
    println!("  name:         {}", info.name);
    println!("  version:      {}", info.version);
    println!(
        "  contract:     omnigate:channel@{} ({world})",
        plugin.contract
    );
    println!("  sha256:       {}", plugin.digest);
    match &plugin.role {
        omnigate::runtime::Role::Channel => {
            println!("  kind:         {}", omnigate::server::kind_name(info.kind));
            let capabilities: Vec<&str> = info
                .capabilities
                .iter()
                .map(|c| omnigate::server::capability_name(*c))
                .collect();
            println!("  capabilities: {}", capabilities.join(", "));
        }
        omnigate::runtime::Role::Destination { events } => {
            println!("  events:       {}", events.join(", "));
        }
    }
    for (title, settings) in [("config", &info.config), ("secrets", &info.secrets)] {
        println!("  {title}:");
        for setting in settings.iter() {
            let required = if setting.required {
                "required"
            } else {
                "optional"
            };
            println!(
                "    {:<20} {required:<8} {}",
                setting.name, setting.description
            );
        }
    }
    println!(
        "  outbound hosts: {}",
        if info.outbound_hosts.is_empty() {
            "(none)".to_owned()
        } else {
            info.outbound_hosts.join(", ")
        }
    );
    Ok(())
}
