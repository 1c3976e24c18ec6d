//! Configuration: typed, validated before use, layered file → environment → flags.
//!
//! The file is YAML (`config/mindbus.yaml`). The environment overrides it with
//! `MINDBUS_<SECTION>__<KEY>` (for example `MINDBUS_AGENT__CONCURRENCY=8`), `REDIS_URL` and
//! the variables a section names (`DATABASE_URL` for the monitor's and the orchestrator's).
//! This module owns the shared sections (`redis`, `agent`, `log`) and the file's layout; each
//! process crate owns its own section's type. Every file is checked against the JSON Schema
//! generated from these types, so a bad file gets every problem reported with its path, not
//! just the first.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format};
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The sections every MindBus process shares; a process's own section (`gateway:`,
/// `monitor:`, `orchestrator:`) is its crate's [`Section`], loaded beside this.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where Redis is and how MindBus names its keys.
    pub redis: RedisConfig,
    /// How agents consume commands (the orchestrator is an agent too).
    pub agent: AgentConfig,
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
    /// Which lifecycle events each command writes: `failures` (the default: no event for a
    /// command that completes, as its result is the completion record, and a finish carries
    /// the result alone, so Redis spends about half the CPU per command of `all` and stays
    /// within twice a hand-tuned raw consumer's), `outcomes` (also `completed`) or `all`
    /// (also `received` and `started` per attempt, so `mindbus trace`, tails and event
    /// streams show each command's queueing and handling times). Retries, failures,
    /// cancellations, dead letters, duplicates and progress are written in every mode.
    pub events: LifecycleEvents,
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
            events: LifecycleEvents::Failures,
        }
    }
}

/// Which lifecycle events an agent writes per command (see [`AgentConfig::events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleEvents {
    /// `received`, `started` (each attempt), and `completed`, `failed` or `canceled`: every
    /// command's whole timeline, in `mindbus trace` and event streams.
    All,
    /// Only `completed`, `failed` or `canceled`.
    Outcomes,
    /// Only `failed` or `canceled` (and retries, dead letters, progress): a completed
    /// command leaves its result alone.
    Failures,
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

/// The top-level sections of the file that each belong to one process. The process's crate
/// owns its section's type (a [`Section`]); any process accepts the file with all of them,
/// checking its own, and `mindbus config check` checks them all.
pub const SECTIONS: &[&str] = &["gateway", "monitor", "orchestrator"];

/// One process's own section of the file.
pub trait Section: DeserializeOwned + JsonSchema + Default {
    /// Its key at the top of the file: one of [`SECTIONS`].
    const NAME: &'static str;
    /// Plain environment variables that set one of its keys, as (variable, key).
    const ENV: &'static [(&'static str, &'static str)] = &[];
}

/// How one process section is checked: its name and its type's schema.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    name: &'static str,
    schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    env: &'static [(&'static str, &'static str)],
}

/// The check of section `S`, for [`check_file`].
pub fn checked<S: Section>() -> Checked {
    Checked {
        name: S::NAME,
        schema: |generator| generator.subschema_for::<S>(),
        env: S::ENV,
    }
}

/// The JSON Schema of a file whose process sections in `sections` are checked by type; any
/// other of [`SECTIONS`] may be present, unchecked, and nothing else.
fn schema(sections: &[Checked]) -> schemars::Schema {
    let mut transform = schemars::transform::RecursiveTransform(consts_to_enum);
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let own: Vec<(&str, schemars::Schema)> = sections
        .iter()
        .map(|section| (section.name, (section.schema)(&mut generator)))
        .collect();
    let mut root = generator.into_root_schema_for::<Config>();
    if let Some(Value::Object(properties)) = root.ensure_object().get_mut("properties") {
        for name in SECTIONS {
            let checked = own.iter().find(|(own, _)| own == name);
            let schema = checked.map_or(Value::Bool(true), |(_, schema)| schema.clone().to_value());
            properties.insert((*name).into(), schema);
        }
    }
    schemars::transform::Transform::transform(&mut transform, &mut root);
    root
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

fn figment(file: Option<&Path>, sections: &[Checked]) -> Figment {
    let mut figment = Figment::new();
    if let Some(file) = file {
        figment = figment.merge(serde_saphyr::figment::Yaml::file_exact(file));
    }
    figment = figment
        .merge(
            Env::prefixed("MINDBUS_")
                // MINDBUS_LLM__... configures the LLM roles' own file (config/agents.yaml).
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key.contains("__") && !key.starts_with("llm__")
                })
                .split("__"),
        )
        .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()));
    for section in sections {
        for (variable, key) in section.env {
            let path = format!("{}.{key}", section.name);
            figment = figment.merge(
                Env::raw()
                    .only(&[*variable])
                    .map(move |_| path.clone().into()),
            );
        }
    }
    figment
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
    /// The shared configuration: file, environment, then these flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Ok(self.load_with::<NoSection>()?.0)
    }

    /// The shared configuration and process section `S`: file, environment, then these flags.
    pub fn load_with<S: Section>(&self) -> Result<(Config, S), ConfigError> {
        let (mut config, section) = load_with::<S>(self.config.as_deref())?;
        if let Some(url) = &self.redis_url {
            config.redis.url = url.clone().into();
        }
        if let Some(prefix) = &self.prefix {
            config.redis.prefix = prefix.clone();
        }
        Ok((config, section))
    }
}

/// No process section: what a process reading only the shared sections loads.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct NoSection {}

impl Section for NoSection {
    const NAME: &'static str = "";
}

/// Loads the shared configuration and section `S`: the file (if any), then the environment.
/// Flags are applied by the caller on the returned values.
pub fn load_with<S: Section>(file: Option<&Path>) -> Result<(Config, S), ConfigError> {
    let sections = own_check::<S>();
    let merged: Value = figment(file, &sections)
        .extract()
        .map_err(|e| ConfigError::Read(Box::new(e)))?;
    validate(&merged, &sections)?;
    split(merged)
}

/// The checks a process reading section `S` makes: that section's, or none.
fn own_check<S: Section>() -> Vec<Checked> {
    if S::NAME.is_empty() {
        Vec::new()
    } else {
        vec![checked::<S>()]
    }
}

/// Checks one file on its own (no environment), its process sections by `sections`, and
/// returns every problem in it.
pub fn check_file(file: &Path, sections: &[Checked]) -> Vec<Problem> {
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
    match validate(&value, sections) {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(e) => vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }],
    }
}

/// Every problem of `value` against the schema with `sections`.
fn validate(value: &Value, sections: &[Checked]) -> Result<(), ConfigError> {
    let schema = schema(sections).to_value();
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| ConfigError::Schema(Box::new(e)))?;
    let problems: Vec<Problem> = validator
        .iter_errors(value)
        .map(|e| Problem {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// A checked value as the shared configuration and section `S` (absent: its defaults).
fn split<S: Section>(mut value: Value) -> Result<(Config, S), ConfigError> {
    let invalid = |e: serde_json::Error| {
        ConfigError::Invalid(vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }])
    };
    let mut own = None;
    if let Value::Object(object) = &mut value {
        own = object.remove(S::NAME);
        for name in SECTIONS {
            object.remove(*name);
        }
    }
    let config = serde_json::from_value(value).map_err(invalid)?;
    let own = own
        .map(serde_json::from_value)
        .transpose()
        .map_err(invalid)?;
    Ok((config, own.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_choice_names_the_allowed_values() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/broken.yaml");
        let problems = check_file(&file, &[]);
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

    /// A process checks its own section and the shared ones; another process's section
    /// is left to that process, but a name that is no section at all is refused by every one.
    #[derive(Debug, Default, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields, default)]
    struct Gateway {
        #[schemars(range(min = 1))]
        max_streams: usize,
    }

    impl Section for Gateway {
        const NAME: &'static str = "gateway";
        const ENV: &'static [(&'static str, &'static str)] = &[];
    }

    #[test]
    fn a_process_checks_its_own_section_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mindbus.yaml");
        let write = |text: &str| std::fs::write(&file, text).unwrap();

        write("gateway:\n  max_streams: 3\nmonitor:\n  anything: at all\n");
        let (config, gateway) = load_with::<Gateway>(Some(&file)).unwrap();
        assert_eq!(gateway.max_streams, 3);
        assert_eq!(config.agent.concurrency, AgentConfig::default().concurrency);

        write("gateway:\n  max_streams: 0\n");
        let Err(ConfigError::Invalid(problems)) = load_with::<Gateway>(Some(&file)) else {
            panic!("a bad own section is refused");
        };
        assert_eq!(problems[0].path, "/gateway/max_streams");
        assert!(
            load_with::<NoSection>(Some(&file)).is_ok(),
            "not the CLI's business"
        );

        write("gatway:\n  max_streams: 3\n");
        for problems in [
            check_file(&file, &[checked::<Gateway>()]),
            match load_with::<NoSection>(Some(&file)) {
                Err(ConfigError::Invalid(problems)) => problems,
                other => panic!("a misspelt section is refused: {other:?}"),
            },
        ] {
            assert!(problems[0].message.contains("gatway"), "{}", problems[0]);
        }
    }
}
