//! `mindbus`: publish commands, follow streams, inspect groups and dead letters, check config.

mod dlq;
mod history;
mod runs;
mod send;
mod show;
mod status;
mod tail;
mod top;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mindbus::bus::Bus;
use mindbus::config::{Config, checked};
use mindbus_monitor::config::MonitorConfig;

/// The MindBus command line.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    connect: mindbus::config::ConnectArgs,
    /// Postgres URL of the monitor's event log (overrides the file and DATABASE_URL).
    #[arg(long, global = true, env = "MINDBUS_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a command to a role, optionally waiting for its result.
    Send(send::SendArgs),
    /// Cancel a command by id.
    Cancel {
        /// The command id.
        id: mindbus::wire::MessageId,
    },
    /// Follow streams live, decoded.
    Tail(tail::TailArgs),
    /// Streams, groups, consumers, pending and lag, and dead letters.
    Status,
    /// Per role, live: agents, commands in and out per second, lag, pending, dead letters.
    Top(top::TopArgs),
    /// Start a workflow run and follow it to its end.
    Run(runs::RunArgs),
    /// List, show, cancel and approve workflow runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Inspect dead letters and send them back.
    Dlq(dlq::DlqArgs),
    /// The whole recorded timeline of a command or a run, from Postgres.
    Trace {
        /// A command id or a run id.
        id: String,
    },
    /// List recorded entries from Postgres, filtered.
    Events(history::EventsArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate config files (the mesh's, and the LLM roles' `agents.yaml`) and print every
    /// problem with its path.
    Check {
        /// The YAML files; a file with `roles` at its top is an LLM roles file.
        #[arg(default_values = ["config/mindbus.yaml", "config/agents.yaml"])]
        files: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Config(ConfigCommand::Check { files }) = &cli.command {
        return check(files);
    }
    let (config, monitor) = load(&cli)?;
    let _telemetry = mindbus::telemetry::init(&config.log, "mindbus");
    match cli.command {
        Command::Trace { id } => return history::trace(&monitor, &id).await,
        Command::Events(args) => return history::events(&monitor, args).await,
        _ => {}
    }
    let bus = Bus::connect(&config.redis)
        .await
        .context("connecting to redis")?;
    match cli.command {
        Command::Send(args) => send::run(&bus, args).await,
        Command::Cancel { id } => {
            bus.cancel(&id)
                .await
                .context("publishing the cancellation")?;
            println!("cancel sent for {id}");
            Ok(())
        }
        Command::Tail(args) => tail::run(&bus, args).await,
        Command::Status => status::run(&bus).await,
        Command::Top(args) => top::run(&bus, &args).await,
        Command::Run(args) => runs::run(&bus, args).await,
        Command::Runs(command) => runs::runs(&bus, command).await,
        Command::Dlq(command) => dlq::run(&bus, command).await,
        Command::Config(_) | Command::Trace { .. } | Command::Events(_) => {
            unreachable!("handled above")
        }
    }
}

/// The shared configuration, and the monitor's (where its event log is).
fn load(cli: &Cli) -> anyhow::Result<(Config, MonitorConfig)> {
    let (config, mut monitor) = cli
        .connect
        .load_with::<MonitorConfig>()
        .context("loading configuration")?;
    if let Some(url) = &cli.database_url {
        monitor.database_url = url.clone().into();
    }
    Ok((config, monitor))
}

fn check(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut total = 0;
    for file in files {
        let problems = problems(file);
        if problems.is_empty() {
            println!("{}: ok", file.display());
        }
        for problem in &problems {
            println!("{}: {problem}", file.display());
        }
        total += problems.len();
    }
    if total == 0 {
        return Ok(());
    }
    eprintln!("{total} problem(s)");
    mindbus::telemetry::exit(1)
}

/// Every problem of one file: the LLM roles' loader for a file with `roles` at its top,
/// the mesh's checker for any other, with each process's section checked by its crate's type.
fn problems(file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let roles = serde_saphyr::from_str::<serde_json::Value>(&text)
        .is_ok_and(|yaml| yaml.get("roles").is_some());
    if !roles {
        let sections = [
            checked::<mindbus_gateway::config::GatewayConfig>(),
            checked::<MonitorConfig>(),
            checked::<mindbus_orchestrator::config::OrchestratorConfig>(),
        ];
        return mindbus::config::check_file(file, &sections)
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    match mindbus_agents::llm::config::LlmConfig::load(file) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}
