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
    telemetry::init(cli.log_format);
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
    match runtime.block_on(run(cli.command)) {
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
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => check_plugin(file).await,
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

async fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    let listen = config.server.listen;
    let grace = config.server.shutdown_grace;
    let app = omnigate::server::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "omnigate listening");
    omnigate::server::serve(app, listener, shutdown_signal(), grace).await?;
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

async fn check_plugin(file: PathBuf) -> anyhow::Result<()> {
    let runtime = Runtime::new(&RuntimeSettings::default())?;
    let plugin = runtime
        .load_file(&file)
        .await
        .with_context(|| format!("{} is refused", file.display()))?;
    let info = &plugin.info;
    println!("ok: {} is an omnigate channel plugin", file.display());
    println!("  id:           {}", info.id);
    println!("  name:         {}", info.name);
    println!("  version:      {}", info.version);
    println!("  kind:         {}", omnigate::server::kind_name(info.kind));
    println!("  contract:     omnigate:channel@{}", plugin.contract);
    println!("  sha256:       {}", plugin.digest);
    let capabilities: Vec<&str> = info
        .capabilities
        .iter()
        .map(|c| omnigate::server::capability_name(*c))
        .collect();
    println!("  capabilities: {}", capabilities.join(", "));
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
