//! `mindbus-gateway`: the HTTP front door.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Serve the MindBus HTTP API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    connect: mindbus::config::ConnectArgs,
    /// Address and port to listen on.
    #[arg(long, global = true, env = "MINDBUS_GATEWAY_LISTEN")]
    listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM (the default).
    Run,
    /// Print the SHA-256 of an API key read from standard input (one line), for
    /// `gateway.api_keys` in the config. The key never appears on a command line, where
    /// other users and the shell history would see it.
    HashKey,
    /// Print the OpenAPI document.
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command.as_ref().unwrap_or(&Command::Run) {
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .context("reading the key from standard input")?;
            let key = key.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!key.is_empty(), "no key on standard input");
            println!("{}", mindbus_gateway::auth::hash_key(key));
            return Ok(());
        }
        Command::Openapi => {
            println!("{}", mindbus_gateway::openapi::document().to_pretty_json()?);
            return Ok(());
        }
        Command::Run => {}
    }
    let (config, mut gateway) = args
        .connect
        .load_with::<mindbus_gateway::config::GatewayConfig>()
        .context("loading configuration")?;
    if let Some(listen) = args.listen {
        gateway.listen = listen;
    }
    let _telemetry = mindbus::telemetry::init(&config.log, "mindbus-gateway");
    // A plain key from the environment, allowed everything (for development and demos).
    let admin_key = std::env::var("MINDBUS_GATEWAY_API_KEY").ok();
    let shutdown = mindbus::shutdown::on_signal().context("installing signal handlers")?;
    mindbus_gateway::run(&config, &gateway, admin_key.as_deref(), shutdown).await
}
