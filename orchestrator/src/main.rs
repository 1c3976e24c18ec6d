//! `mindbus-orchestrator`: runs YAML workflows over agent roles, durably.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mindbus_orchestrator::service::Catalog;

/// Run workflows: serve run commands, apply step results, keep runs in Postgres.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    connect: mindbus::config::ConnectArgs,
    #[command(flatten)]
    probes: mindbus::telemetry::probes::ProbeArgs,
    /// Postgres URL of the run store (overrides the file and DATABASE_URL).
    #[arg(long, global = true, env = "MINDBUS_DATABASE_URL")]
    database_url: Option<String>,
    /// The folder of workflow files.
    #[arg(long, global = true, env = "MINDBUS_WORKFLOWS")]
    workflows: Option<String>,
    /// Idle time in ms before a stopped orchestrator's results are taken over.
    #[arg(long, global = true, env = "MINDBUS_ORCHESTRATOR_LEASE_MS")]
    lease_ms: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run workflows until SIGTERM (the default).
    Run,
    /// Apply the run store's migrations and exit.
    Migrate,
    /// Validate every workflow file and print each problem with its file and step.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config, mut settings) = args
        .connect
        .load_with::<mindbus_orchestrator::config::OrchestratorConfig>()
        .context("loading configuration")?;
    if let Some(url) = args.database_url {
        settings.database_url = url.into();
    }
    if let Some(dir) = args.workflows {
        settings.workflows = dir;
    }
    if let Some(lease) = args.lease_ms {
        settings.lease_ms = lease;
    }
    let _telemetry = mindbus::telemetry::init(&config.log, "mindbus-orchestrator");
    match args.command.unwrap_or(Command::Run) {
        Command::Migrate => {
            let pool = mindbus_orchestrator::store::connect(&settings.database_url, 1)?;
            mindbus_orchestrator::store::migrate(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Check => check(&settings.workflows, &settings.roles),
        Command::Run => {
            let shutdown = mindbus::shutdown::on_signal().context("installing signal handlers")?;
            mindbus_orchestrator::service::run(&config, &settings, &args.probes, shutdown).await
        }
    }
}

fn check(dir: &str, roles: &[String]) -> anyhow::Result<()> {
    match Catalog::load(std::path::Path::new(dir), roles) {
        Ok(catalog) => {
            println!("{dir}: ok ({})", catalog.names().join(", "));
            Ok(())
        }
        Err(errors) => {
            for error in &errors {
                println!("{error}");
            }
            eprintln!("{} problem(s) in {dir}", errors.len());
            mindbus::telemetry::exit(1)
        }
    }
}
