//! `mindbus-monitor`: records every MindBus stream entry in Postgres.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Record every MindBus stream entry in Postgres, exactly once.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    connect: mindbus::config::ConnectArgs,
    #[command(flatten)]
    probes: mindbus::telemetry::probes::ProbeArgs,
    /// Postgres URL (overrides the file and DATABASE_URL).
    #[arg(long, global = true, env = "MINDBUS_DATABASE_URL")]
    database_url: Option<String>,
    /// Idle time in ms before a dead monitor's entries are reclaimed.
    #[arg(long, global = true, env = "MINDBUS_MONITOR_LEASE_MS")]
    lease_ms: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record entries until SIGTERM (the default).
    Run,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, mut monitor) = args
        .connect
        .load_with::<mindbus_monitor::config::MonitorConfig>()
        .context("loading configuration")?;
    if let Some(url) = args.database_url {
        monitor.database_url = url.into();
    }
    if let Some(lease) = args.lease_ms {
        monitor.lease_ms = lease;
    }
    let _telemetry = mindbus::telemetry::init(&config.log, "mindbus-monitor");
    match args.command.unwrap_or(Command::Run) {
        Command::Migrate => {
            let pool = mindbus_monitor::store::connect(&monitor.database_url)?;
            mindbus_monitor::store::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Run => {
            let shutdown = mindbus::shutdown::on_signal().context("installing signal handlers")?;
            mindbus_monitor::run(&config, &monitor, &args.probes, shutdown).await
        }
    }
}
