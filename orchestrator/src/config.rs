//! The orchestrator's section of the config file (`orchestrator:`).

use mindbus::config::Section;
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;

/// The orchestrator: where runs are kept, which workflows it knows, how it reads results.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Postgres URL of the run store; may hold a password, so it is never logged.
    /// Env: `DATABASE_URL`.
    #[schemars(with = "String")]
    pub database_url: SecretString,
    /// The folder of workflow files (`*.yaml`), all validated on start.
    pub workflows: String,
    /// The roles workflows may call; empty accepts any role.
    pub roles: Vec<String>,
    /// Results read per batch.
    #[schemars(range(min = 1, max = 10_000))]
    pub batch: usize,
    /// Results applied at once (each in its own transaction).
    #[schemars(range(min = 1, max = 1_000))]
    pub concurrency: usize,
    /// Longest blocking read, in milliseconds.
    #[schemars(range(min = 10, max = 60_000))]
    pub block_ms: u64,
    /// Results a dead orchestrator left unacknowledged this long (ms) are taken over.
    #[schemars(range(min = 100))]
    pub lease_ms: u64,
    /// How often due timers (approvals, deadlines) and unsent commands are looked for (ms).
    #[schemars(range(min = 10))]
    pub tick_ms: u64,
    /// A command committed this long ago (ms) and still unsent was left by a crashed
    /// orchestrator; it is sent again, with the same id.
    #[schemars(range(min = 100))]
    pub resend_after_ms: u64,
    /// Most bytes one run's state (its input and every finished step's output, as JSON)
    /// may take; a transition that would grow it past this fails the run, naming the size.
    /// Every transition of a run reads and writes its state whole.
    #[schemars(range(min = 65_536, max = 134_217_728))]
    pub max_state_bytes: usize,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from("postgres://localhost/mindbus"),
            workflows: "config/workflows".into(),
            roles: Vec::new(),
            batch: 200,
            concurrency: 16,
            block_ms: 1_000,
            lease_ms: 10_000,
            tick_ms: 200,
            resend_after_ms: 2_000,
            max_state_bytes: 64 << 20,
        }
    }
}

impl Section for OrchestratorConfig {
    const NAME: &'static str = "orchestrator";
    const ENV: &'static [(&'static str, &'static str)] = &[("DATABASE_URL", "database_url")];
}
