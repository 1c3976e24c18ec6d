//! The LLM layer: roles configured in `config/agents.yaml`, served through one
//! provider-agnostic caller (genai speaks OpenAI, Anthropic, Gemini and OpenAI-compatible
//! servers), with what every provider needs written once on top:
//!
//! - [`config`]: the file, layered with `MINDBUS_LLM__...`, checked before use;
//! - [`models`]: `provider/name` model names, endpoints, and keys from the environment;
//! - [`call`]: budget check, shared rate limit, streamed call, retries honouring
//!   `Retry-After`, fallback to the next model;
//! - [`failure`]: provider errors classified (rate limit, outage, context length,
//!   malformed answer, fatal);
//! - [`limits`], [`spend`], [`cache`]: shared state in Redis (GCRA rate limits, budget
//!   reservations and usage totals, cached deterministic answers);
//! - [`secrets`]: the provider keys, scrubbed out of every text a provider sends back;
//! - `measure`: what the layer counts for Prometheus (calls, latency, tokens, cost, cache
//!   lookups, rate-limit waits, budget refusals), labelled only by configured models and roles;
//! - [`role`]: a role as an agent handler.
//!
//! # Invariant
//! API keys live only in process memory: they are read from the environment and never
//! written to a stream, a log line or the database. Every text a provider sends back is
//! scrubbed of every key before it is used, and genai's own logging (which prints
//! provider bodies) is off.

pub mod cache;
pub mod call;
pub mod config;
pub mod failure;
pub mod limits;
mod measure;
pub mod models;
pub mod role;
pub mod secrets;
pub mod spend;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mindbus::bus::Bus;
use mindbus::config::Config;
use mindbus::runtime::Agent;
use mindbus::streams::until_up;
use tokio_util::sync::CancellationToken;

pub use config::LlmConfig;

/// Serves the LLM role `name` from `file` until `shutdown` fires. `concurrency` overrides
/// the role's own.
pub async fn serve(
    config: &Config,
    file: &Path,
    name: &str,
    concurrency: Option<usize>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let llm = Arc::new(LlmConfig::load(file)?);
    // Started before Redis (or while it restarts): wait for it.
    let Some(bus) = until_up(&shutdown, || Bus::connect(&config.redis)).await? else {
        return Ok(());
    };
    let prefix = bus.keys().prefix().to_string();
    let conn = bus.connection();
    let caller = call::Caller::new(
        limits::Limiter::new(conn.clone(), &prefix),
        spend::Ledger::new(conn.clone(), &prefix),
        secrets::Scrubber::new(models::keys(&llm.providers)),
    )
    .context("creating the model client")?;
    let cache = llm
        .cache
        .enabled
        .then(|| cache::Cache::new(conn, &prefix, llm.cache.ttl_secs));
    let role = role::LlmRole::new(llm, name, caller, cache)?;
    let mut agent_config = config.agent.clone();
    agent_config.concurrency = concurrency.unwrap_or(role.concurrency()).max(1);
    let agent = Agent::new(&config.redis, name, agent_config)?;
    agent.run(role, shutdown).await?;
    Ok(())
}
