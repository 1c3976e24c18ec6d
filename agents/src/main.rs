//! `mindbus-agent`: serves one agent role from its command stream.

use anyhow::Context as _;
use clap::Parser;

/// mimalloc: the runtime allocates per entry, and glibc's malloc and free took a third of an
/// agent's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve one MindBus agent role. Start more processes to share its work.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The role to serve: `echo`, or an LLM role of the LLM config (writer, critic, editor).
    #[arg(long, env = "MINDBUS_ROLE")]
    role: String,
    /// Serve the role with the built-in echo handler whatever its name (to try a mesh of
    /// several roles, or spread a benchmark over a cluster's nodes).
    #[arg(long)]
    echo: bool,
    /// The LLM roles' configuration.
    #[arg(long, env = "MINDBUS_LLM_CONFIG", default_value = "config/agents.yaml")]
    llm_config: std::path::PathBuf,
    #[command(flatten)]
    connect: mindbus::config::ConnectArgs,
    #[command(flatten)]
    probes: mindbus::telemetry::probes::ProbeArgs,
    /// Commands handled at once (default: the role's `concurrency`, or agent.concurrency).
    #[arg(long, env = "MINDBUS_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Idle time in ms before another consumer reclaims a command.
    #[arg(long, env = "MINDBUS_LEASE_MS")]
    lease_ms: Option<u64>,
    /// Default deliveries before dead-lettering.
    #[arg(long, env = "MINDBUS_MAXATTEMPTS")]
    maxattempts: Option<u32>,
    /// Grace period in ms on SIGTERM.
    #[arg(long, env = "MINDBUS_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// Runtime threads. One (the default) avoids cross-thread wake-ups and measured lower
    /// latency; to use more cores, start more processes, or raise this for CPU-heavy roles.
    #[arg(long, env = "MINDBUS_THREADS", default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    runtime
        .context("starting the runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut config = args.connect.load().context("loading configuration")?;
    let agent = &mut config.agent;
    agent.lease_ms = args.lease_ms.unwrap_or(agent.lease_ms);
    agent.maxattempts = args.maxattempts.unwrap_or(agent.maxattempts).max(1);
    agent.shutdown_grace_ms = args.shutdown_grace_ms.unwrap_or(agent.shutdown_grace_ms);
    let _telemetry = mindbus::telemetry::init(&config.log, "mindbus-agent");
    let shutdown = mindbus::shutdown::on_signal().context("installing signal handlers")?;
    mindbus_agents::run(
        &config,
        &args.role,
        args.echo,
        &args.llm_config,
        args.concurrency,
        &args.probes,
        shutdown,
    )
    .await
    .context("running the agent")
}
