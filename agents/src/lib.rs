//! MindBus agent processes. `mindbus-agent --role ROLE` serves one role through its
//! consumer group; start more processes to scale it.
//!
//! # Layout
//! - [`echo`]: the built-in `echo` role, which answers with what it was sent and can be told
//!   to sleep, fail or panic, so tests and benchmarks drive every path of the runtime.
//! - [`llm`]: every other role: an LLM role configured in `config/agents.yaml` (writer,
//!   critic, editor, and any a user adds there).
//!
//! # Invariant
//! An agent talks to nothing but its Redis streams and, for an LLM role, its model
//! providers.

pub mod echo;
pub mod llm;

use std::path::Path;

use mindbus::config::Config;
use mindbus::runtime::Agent;
use mindbus::streams::Redis;
use mindbus::telemetry::probes::{self, ProbeArgs};
use tokio_util::sync::CancellationToken;

/// Serves `role` until `shutdown` fires: `echo` (or any role when `echo` is set) with the
/// built-in echo handler; any other role is looked up in the LLM config `llm_config`.
/// `concurrency` overrides the configured one.
pub async fn run(
    config: &Config,
    role: &str,
    echo: bool,
    llm_config: &Path,
    concurrency: Option<usize>,
    probes: &ProbeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ready = probes::redis_ready(Redis::open(&config.redis.url)?);
    probes
        .start("mindbus-agent", ready, shutdown.clone())
        .await?;
    if echo || role == "echo" {
        let mut agent_config = config.agent.clone();
        agent_config.concurrency = concurrency.unwrap_or(agent_config.concurrency).max(1);
        Agent::new(&config.redis, role, agent_config)?
            .run(echo::Echo, shutdown)
            .await?;
        return Ok(());
    }
    llm::serve(config, llm_config, role, concurrency, shutdown).await
}
