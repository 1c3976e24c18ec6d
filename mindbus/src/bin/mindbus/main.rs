//! `mindbus`: publish commands, follow streams, inspect groups and dead letters, check config.

mod dlq;
mod history;
mod runs;
mod send;
mod show;
mod status;
mod tail;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mindbus::bus::Bus;
use mindbus::config::Config;

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
    /// Start a workflow run and follow it to its end.
    Run(runs::RunArgs),
    /// List, show, cancel and approve workflow runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Inspect dead letters and send them back.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
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
    /// Validate a config file and print every problem with its path.
    Check {
        /// The YAML file.
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        return check(file);
    }
    let config = load(&cli)?;
    mindbus::telemetry::init(&config.log);
    match cli.command {
        Command::Trace { id } => return history::trace(&config, &id).await,
        Command::Events(args) => return history::events(&config, args).await,
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
        Command::Run(args) => runs::run(&bus, args).await,
        Command::Runs(command) => runs::runs(&bus, command).await,
        Command::Dlq(command) => dlq::run(&bus, command).await,
        Command::Config(_) | Command::Trace { .. } | Command::Events(_) => {
            unreachable!("handled above")
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = cli.connect.load().context("loading configuration")?;
    if let Some(url) = &cli.database_url {
        config.monitor.database_url = url.clone().into();
    }
    Ok(config)
}

fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let problems = mindbus::config::check_file(file);
    if problems.is_empty() {
        println!("{}: ok", file.display());
        return Ok(());
    }
    for problem in &problems {
        println!("{}: {problem}", file.display());
    }
    eprintln!("{} problem(s) in {}", problems.len(), file.display());
    std::process::exit(1)
}
