//! Configuration: typed, validated before use, layered file → environment → flags.
//!
//! The file is YAML (`config/mindbus.yaml`). The environment overrides it with
//! `MINDBUS_<SECTION>__<KEY>` (for example `MINDBUS_AGENT__CONCURRENCY=8`), `REDIS_URL` and
//! `DATABASE_URL` (the monitor's and the orchestrator's).
//! Every file is checked against the JSON Schema generated from these types, so a bad file
//! gets every problem reported with its path, not just the first.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format};
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

/// The whole configuration of a MindBus process.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where Redis is and how MindBus names its keys.
    pub redis: RedisConfig,
    /// How agents consume commands.
    pub agent: AgentConfig,
    /// How the monitor records entries and trims streams.
    pub monitor: MonitorConfig,
    /// How the orchestrator runs workflows.
    pub orchestrator: OrchestratorConfig,
    /// The HTTP gateway.
    pub gateway: GatewayConfig,
    /// How processes log.
    pub log: LogConfig,
}

/// Redis connection and key naming.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis URL; may hold a password, so it is never logged. Env: `REDIS_URL`.
    #[schemars(with = "String")]
    pub url: SecretString,
    /// Prefix of every key MindBus uses.
    #[schemars(length(min = 1), regex(pattern = r"^[^\s{}]+$"))]
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            prefix: "mindbus".into(),
        }
    }
}

/// How an agent process consumes its role's commands.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Commands handled at once by one process; it never reads more than it has free slots.
    #[schemars(range(min = 1, max = 100_000))]
    pub concurrency: usize,
    /// How long one blocking read waits for new commands, in milliseconds.
    #[schemars(range(min = 10, max = 60_000))]
    pub block_ms: u64,
    /// A command unacknowledged for this long (ms) is reclaimed by another consumer; a
    /// running handler renews its lease every third of it.
    #[schemars(range(min = 100))]
    pub lease_ms: u64,
    /// Deliveries before a command is dead-lettered, when the command does not say.
    #[schemars(range(min = 1, max = 1000))]
    pub maxattempts: u32,
    /// First retry delay in milliseconds; it doubles each attempt, with jitter.
    #[schemars(range(min = 1))]
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[schemars(range(min = 1))]
    pub retry_max_ms: u64,
    /// On SIGTERM, how long in-flight commands may take to finish (ms) before they are
    /// handed back for another consumer.
    pub shutdown_grace_ms: u64,
    /// How long the idempotency key of a command whose result was accepted is remembered
    /// (s), so a later command with the same key is dropped as a duplicate.
    #[schemars(range(min = 1))]
    pub dedup_ttl_secs: u64,
    /// How long a `replyto` stream lives after its last result (s).
    #[schemars(range(min = 1))]
    pub reply_ttl_secs: u64,
    /// A hard cap on the result, event and dead-letter streams (approximate), or 0 for none.
    /// Leave it at 0 when a monitor runs: it trims without ever passing an entry some
    /// group has not acknowledged, which a cap cannot promise.
    pub stream_maxlen: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            block_ms: 2_000,
            lease_ms: 30_000,
            maxattempts: 5,
            retry_base_ms: 100,
            retry_max_ms: 10_000,
            shutdown_grace_ms: 10_000,
            dedup_ttl_secs: 86_400,
            reply_ttl_secs: 3_600,
            stream_maxlen: 0,
        }
    }
}

/// The monitor: Postgres, batching and stream retention.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Postgres URL; may hold a password, so it is never logged. Env: `DATABASE_URL`.
    #[schemars(with = "String")]
    pub database_url: SecretString,
    /// Entries read and written per batch (per stream).
    #[schemars(range(min = 1, max = 100_000))]
    pub batch: usize,
    /// Longest blocking read, in milliseconds.
    #[schemars(range(min = 10, max = 60_000))]
    pub block_ms: u64,
    /// Entries of a dead monitor idle this long (ms) are reclaimed by a live one.
    #[schemars(range(min = 100))]
    pub lease_ms: u64,
    /// Keep about this many entries per stream (0: no length limit). Trimming never passes
    /// an entry that any consumer group has not yet acknowledged.
    pub retain_entries: u64,
    /// Keep entries this many seconds (0: no age limit), with the same guarantee.
    pub retain_secs: u64,
    /// How often streams are trimmed, in milliseconds.
    #[schemars(range(min = 100))]
    pub trim_every_ms: u64,
    /// An entry larger than this (names and values, in bytes) is recorded as a flagged
    /// preview: its field names and the start of each value. Batches are also cut to a few
    /// times this size, so Postgres never refuses one for its size.
    #[schemars(range(min = 1024))]
    pub max_row_bytes: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from("postgres://localhost/mindbus"),
            batch: 2_000,
            block_ms: 1_000,
            lease_ms: 30_000,
            retain_entries: 100_000,
            retain_secs: 0,
            trim_every_ms: 10_000,
            max_row_bytes: 16 << 20,
        }
    }
}

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

/// The HTTP gateway: where it listens, who may call it and how much.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// The API keys, stored as SHA-256 hashes (`mindbus-gateway hash-key KEY` prints one).
    pub api_keys: Vec<ApiKeyConfig>,
    /// Largest request body, in bytes (413 above).
    #[schemars(range(min = 64))]
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in a body (422 above).
    #[schemars(range(min = 2, max = 128))]
    pub max_json_depth: usize,
    /// Longest `wait` a request may ask for, in milliseconds.
    pub max_wait_ms: u64,
    /// Server-sent event streams open at once, per gateway (503 above).
    #[schemars(range(min = 1))]
    pub max_streams: usize,
    /// Connections open at once; one past this is closed at once (a client holding many
    /// cannot take every file descriptor).
    #[schemars(range(min = 1))]
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, or to start its next request
    /// on a kept-alive connection, in milliseconds; then the connection is closed.
    #[schemars(range(min = 100))]
    pub header_timeout_ms: u64,
    /// Longest a response may wait for a client to take the next bytes, in milliseconds;
    /// then the connection is closed (a client that stops reading loses its event stream).
    #[schemars(range(min = 100))]
    pub write_timeout_ms: u64,
    /// Where Prometheus scrapes the gateway's metrics; apart from the API, so the metrics
    /// (which name keys and roles) need no key and are not served to API clients. Empty:
    /// no metrics endpoint.
    pub metrics_listen: String,
    /// Server-sent event streams one key may hold open at once, unless the key says (429
    /// above).
    #[schemars(range(min = 1))]
    pub streams_per_key: usize,
    /// Requests one key may have in flight at once, waits and body uploads included (429
    /// above): no key can hold every connection.
    #[schemars(range(min = 1))]
    pub requests_per_key: usize,
    /// Runs one key may have running at once, unless the key says (429 above).
    #[schemars(range(min = 1))]
    pub runs_per_key: u32,
    /// Array items a run's input may hold, counted over every array in it (422 above): a
    /// workflow fans out over them, so this bounds the work one request can start.
    #[schemars(range(min = 1))]
    pub max_run_items: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            max_body_bytes: 256 * 1024,
            max_json_depth: 32,
            max_wait_ms: 60_000,
            max_streams: 1_000,
            max_connections: 2_048,
            header_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            metrics_listen: "127.0.0.1:9464".into(),
            streams_per_key: 16,
            requests_per_key: 64,
            runs_per_key: 32,
            max_run_items: 1_000,
        }
    }
}

/// One API key: its hash, what it may reach, and how fast.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics (the key itself is never logged).
    pub name: String,
    /// The key's SHA-256, in lower-case hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// Roles it may send commands to; `*` for all.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Workflows it may start and steer; `*` for all.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// Requests per minute (429 with `Retry-After` above).
    #[serde(default = "default_rate")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: u32,
    /// The tenant this key's commands and runs spend for (per-tenant LLM budgets); it
    /// replaces any tenant a request could name. Default: none, which agents count as
    /// `default`.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub tenant: Option<String>,
    /// Event streams it may hold open at once; default: the gateway's `streams_per_key`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_streams: Option<usize>,
    /// Runs it may have running at once; default: the gateway's `runs_per_key`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_runs: Option<u32>,
}

fn default_rate() -> u32 {
    600
}

/// Log output.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `mindbus=debug,info`. Env `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One thing wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A JSON pointer into the configuration, e.g. `/agent/concurrency` (empty for the root).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be read or merged (a YAML syntax error, an unreadable file).
    #[error("{0}")]
    Read(#[source] Box<figment::Error>),
    /// The schema the configuration is checked against could not be built (a bug).
    #[error("the configuration schema: {0}")]
    Schema(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The merged configuration breaks the schema; every problem is listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// The JSON Schema of the configuration file.
pub fn config_schema() -> schemars::Schema {
    schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(consts_to_enum))
        .into_generator()
        .into_root_schema_for::<Config>()
}

/// An enum whose variants carry docs comes out as a `oneOf` of `const`s, which a validator
/// reports as "not valid under any of the schemas listed in the 'oneOf' keyword". As an
/// `enum`, the report lists the allowed values.
fn consts_to_enum(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let Some(Value::Array(options)) = object.get("oneOf") else {
        return;
    };
    let values: Option<Vec<Value>> = options.iter().map(|o| o.get("const").cloned()).collect();
    if let Some(values) = values {
        object.remove("oneOf");
        object.insert("enum".into(), Value::Array(values));
    }
}

fn figment(file: Option<&Path>) -> Figment {
    let mut figment = Figment::new();
    if let Some(file) = file {
        figment = figment.merge(serde_saphyr::figment::Yaml::file_exact(file));
    }
    figment
        .merge(
            Env::prefixed("MINDBUS_")
                // MINDBUS_LLM__... configures the LLM roles' own file (config/agents.yaml).
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key.contains("__") && !key.starts_with("llm__")
                })
                .split("__"),
        )
        .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
        .merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "monitor.database_url".into()),
        )
        .merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "orchestrator.database_url".into()),
        )
}

/// The flags every MindBus binary shares: the config file, then the Redis URL and key
/// prefix over it (each also settable from the environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// A YAML config file (see config/mindbus.yaml).
    #[arg(long, global = true, env = "MINDBUS_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Redis URL (overrides the file and REDIS_URL).
    #[arg(long, global = true, env = "MINDBUS_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix.
    #[arg(long, global = true, env = "MINDBUS_PREFIX")]
    pub prefix: Option<String>,
}

impl ConnectArgs {
    /// The configuration: file, environment, then these flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = load(self.config.as_deref())?;
        if let Some(url) = &self.redis_url {
            config.redis.url = url.clone().into();
        }
        if let Some(prefix) = &self.prefix {
            config.redis.prefix = prefix.clone();
        }
        Ok(config)
    }
}

/// Loads the configuration: the file (if any), then the environment. Flags are applied by
/// the caller on the returned value.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let merged: Value = figment(file)
        .extract()
        .map_err(|e| ConfigError::Read(Box::new(e)))?;
    parse(merged)
}

/// Checks one file on its own (no environment) and returns every problem in it.
pub fn check_file(file: &Path) -> Vec<Problem> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            return vec![Problem {
                path: String::new(),
                message: format!("cannot read {}: {e}", file.display()),
            }];
        }
    };
    let value: Value = match serde_saphyr::from_str(&text) {
        Ok(Value::Null) => Value::Object(Default::default()),
        Ok(value) => value,
        Err(e) => {
            return vec![Problem {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }];
        }
    };
    match parse(value) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(e) => vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }],
    }
}

fn parse(value: Value) -> Result<Config, ConfigError> {
    let schema =
        serde_json::to_value(config_schema()).map_err(|e| ConfigError::Schema(Box::new(e)))?;
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| ConfigError::Schema(Box::new(e)))?;
    let problems: Vec<Problem> = validator
        .iter_errors(&value)
        .map(|e| Problem {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    serde_json::from_value(value).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_every_bad_field_of_an_api_key_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mindbus.yaml");
        std::fs::write(
            &file,
            "gateway:
  api_keys:
    - name: a
      sha256: not-a-hash
      tenant: 'bad tenant!'
    - name: b
      sha256: '0000000000000000000000000000000000000000000000000000000000000000'
      tenant: acme
",
        )
        .unwrap();
        let paths: Vec<String> = check_file(&file).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            ["/gateway/api_keys/0/sha256", "/gateway/api_keys/0/tenant"]
        );
    }

    #[test]
    fn a_bad_choice_names_the_allowed_values() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/broken.yaml");
        let problems = check_file(&file);
        let format = problems
            .iter()
            .find(|p| p.path == "/log/format")
            .expect("the log format is named");
        assert!(
            format.message.contains("\"text\"") && format.message.contains("\"json\""),
            "{}",
            format.message
        );
    }
}
