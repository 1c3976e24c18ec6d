//! MindBus agent processes. `mindbus-agent --role ROLE` serves one role through its
//! consumer group; start more processes to scale it.
//!
//! # Layout
//! - [`echo`]: the built-in `echo` role, which answers with what it was sent and can be told
//!   to sleep, fail or panic, so tests and benchmarks drive every path of the runtime.
//!
//! # Invariant
//! An agent talks to nothing but its Redis streams.

pub mod echo;

use mindbus::config::Config;
use mindbus::runtime::Agent;
use tokio_util::sync::CancellationToken;

/// The roles this binary has built in.
pub const BUILT_IN_ROLES: &[&str] = &["echo"];

/// Serves `role` until `shutdown` fires.
pub async fn run(config: &Config, role: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    let agent = Agent::new(&config.redis, role, config.agent.clone())?;
    match role {
        "echo" => agent.run(echo::Echo, shutdown).await?,
        other => anyhow::bail!(
            "no built-in role `{other}` (built in: {})",
            BUILT_IN_ROLES.join(", ")
        ),
    }
    Ok(())
}
