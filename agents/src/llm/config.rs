//! `config/agents.yaml`: the LLM roles, the providers they reach, prices, limits and budgets.
//!
//! Layers: the file, then `MINDBUS_LLM__...` environment variables (`__` nests, e.g.
//! `MINDBUS_LLM__PROVIDERS__LOCAL__BASE_URL`). Keys are never in the file: each provider
//! names the environment variable that holds its key.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _};
use serde::Deserialize;
use serde_json::Value;

use super::models::{ModelRef, Provider};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Where each provider is reached; a provider left out uses its public endpoint.
    #[serde(default)]
    pub providers: BTreeMap<Provider, ProviderConfig>,
    /// USD per million tokens, by model (`provider/name`). Every model a role may call
    /// must be listed (a free model with zeros), so none is charged $0 by mistake.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Longest one call may take, streaming included, in milliseconds, by `provider` or
    /// `provider/model` (the model's own wins); others take [`DEFAULT_TIMEOUT_MS`]. A call
    /// cut off is retried, then falls back.
    #[serde(default)]
    pub timeouts_ms: BTreeMap<String, u64>,
    /// Rate limits shared by every agent process, by `provider` or `provider/model`.
    #[serde(default)]
    pub limits: BTreeMap<String, Limit>,
    /// Spending limits in USD.
    #[serde(default)]
    pub budgets: Budgets,
    /// The tenants that may spend. When set, a command naming no tenant or another one is
    /// refused (`unknown_tenant`) before any call; by default any tenant a command names
    /// is taken (whoever can write to Redis picks whose budget it spends).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// The cache of deterministic calls (temperature 0).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Retries of one model before falling back to the next.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The roles, by name.
    pub roles: BTreeMap<String, RoleConfig>,
}

/// How long a call may take when `timeouts_ms` names neither its model nor its provider.
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;

/// How one provider is reached.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The API's base URL (ending in `/`); default: the provider's public endpoint.
    pub base_url: Option<String>,
    /// The environment variable that holds the API key.
    pub api_key_env: Option<String>,
}

/// A model's price in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input: f64,
    /// Per million output (completion) tokens.
    pub output: f64,
}

impl Price {
    /// The cost of one call in micro-dollars (millionths of a USD), rounded up.
    pub fn cost_micros(&self, tokens_in: u64, tokens_out: u64) -> u64 {
        // USD per million tokens is exactly micro-USD per token.
        (self.input * tokens_in as f64 + self.output * tokens_out as f64).ceil() as u64
    }
}

/// A rate limit; either field may be left out.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt estimate plus `max_tokens`) per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests that may go at once before spacing starts (default 1: evenly spaced).
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

/// Spending limits in USD; a limit left out does not apply.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Per workflow run (commands with a `runid`).
    pub run_usd: Option<f64>,
    /// Per tenant (the command's `tenant` field) per UTC day.
    pub tenant_daily_usd: Option<f64>,
    /// For the whole deployment per UTC day.
    pub daily_usd: Option<f64>,
}

/// The cache of deterministic calls.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Off: every call reaches the provider.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long an answer is kept.
    #[serde(default = "day")]
    pub ttl_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: day(),
        }
    }
}

fn yes() -> bool {
    true
}

fn day() -> u64 {
    86_400
}

/// Retries of one model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries of one model (rate limits, outages, malformed answers) before the next.
    #[serde(default = "three")]
    pub attempts: u32,
    /// First delay when the provider gives no `Retry-After`; doubles each time.
    #[serde(default = "half_second")]
    pub base_ms: u64,
    /// Longest delay, `Retry-After` included; a longer one falls back at once.
    #[serde(default = "half_minute")]
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: three(),
            base_ms: half_second(),
            max_ms: half_minute(),
        }
    }
}

fn three() -> u32 {
    3
}

fn half_second() -> u64 {
    500
}

fn half_minute() -> u64 {
    30_000
}

/// One LLM role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// What the role does, for people.
    #[serde(default)]
    pub description: String,
    /// The model, `provider/name` (providers: openai, anthropic, gemini, local).
    pub model: String,
    /// Tried in order when the model is rate limited, down, or the prompt is too long.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The system prompt: a template over the command's data.
    pub system: String,
    /// The user message: a template over the command's data.
    pub prompt: String,
    /// Sampling temperature; 0 makes calls deterministic and cacheable.
    #[serde(default)]
    pub temperature: f64,
    /// Most tokens in an answer.
    #[serde(default = "max_tokens")]
    pub max_tokens: u32,
    /// Commands one process handles at once.
    #[serde(default = "four")]
    pub concurrency: usize,
    /// Free text, or JSON checked against a schema.
    #[serde(default)]
    pub output: Output,
}

fn max_tokens() -> u32 {
    512
}

fn four() -> usize {
    4
}

/// A role's answer format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// Free text, returned as `text`.
    #[default]
    Text,
    /// A JSON object checked against this schema; an answer that does not pass is asked
    /// for again, `attempts` times in all.
    Json {
        /// The JSON Schema the answer must pass.
        schema: Value,
        /// Calls before the role fails with `invalid_output`.
        #[serde(default = "three")]
        attempts: u32,
    },
}

/// Why the file could not be used; every problem is listed.
#[derive(Debug, thiserror::Error)]
#[error("{}:\n{}", .file, .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong, each with its path.
    pub problems: Vec<String>,
}

impl LlmConfig {
    /// Loads `file`, then the `MINDBUS_LLM__...` environment, and checks the result.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let error = |problems| ConfigError {
            file: file.display().to_string(),
            problems,
        };
        let config: Self = Figment::new()
            .merge(serde_saphyr::figment::Yaml::file_exact(file))
            .merge(Env::prefixed("MINDBUS_LLM__").split("__"))
            .extract()
            .map_err(|e| error(e.into_iter().map(|e| e.to_string()).collect()))?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(error(problems))
        }
    }

    /// What is wrong beyond the types: unknown providers, templates that do not compile,
    /// schemas that are not schemas.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let env = minijinja::Environment::new();
        for (name, role) in &self.roles {
            let at = |field: &str| format!("/roles/{name}/{field}");
            if let Err(e) = mindbus::keys::validate_role(name) {
                problems.push(format!("/roles/{name}: {e}"));
            }
            for (i, model) in std::iter::once(&role.model)
                .chain(&role.fallbacks)
                .enumerate()
            {
                let field = if i == 0 {
                    "model".to_string()
                } else {
                    format!("fallbacks/{}", i - 1)
                };
                match model.parse::<ModelRef>() {
                    Err(e) => problems.push(format!("{}: {e}", at(&field))),
                    Ok(parsed) if !self.prices.contains_key(&parsed.to_string()) => {
                        problems.push(format!(
                            "{}: `{model}` has no price in /prices (list it, with zeros for a free model)",
                            at(&field)
                        ))
                    }
                    Ok(_) => {}
                }
            }
            for (field, text) in [("system", &role.system), ("prompt", &role.prompt)] {
                if let Err(e) = env.template_from_str(text) {
                    problems.push(format!("{}: not a template: {e}", at(field)));
                }
            }
            if !(0.0..=2.0).contains(&role.temperature) {
                problems.push(format!("{}: must be between 0 and 2", at("temperature")));
            }
            if role.concurrency == 0 || role.max_tokens == 0 {
                problems.push(format!(
                    "{}: concurrency and max_tokens must be at least 1",
                    at("")
                ));
            }
            if let Output::Json { schema, attempts } = &role.output
                && let Err(e) = jsonschema::validator_for(schema)
                    .map(drop)
                    .map_err(|e| e.to_string())
                    .and_then(|()| (*attempts > 0).then_some(()).ok_or("attempts is 0".into()))
            {
                problems.push(format!("{}: {e}", at("output/json/schema")));
            }
        }
        if self.retry.attempts == 0 {
            problems.push("/retry/attempts: must be at least 1".into());
        }
        for key in self.prices.keys() {
            if let Err(e) = key.parse::<ModelRef>() {
                problems.push(format!("/prices/{key}: {e}"));
            }
        }
        for (section, keys) in [
            ("limits", self.limits.keys().collect::<Vec<_>>()),
            ("timeouts_ms", self.timeouts_ms.keys().collect()),
        ] {
            for key in keys {
                let ok = key.parse::<Provider>().is_ok() || key.parse::<ModelRef>().is_ok();
                if !ok {
                    problems.push(format!(
                        "/{section}/{key}: not a provider or a provider/model"
                    ));
                }
            }
        }
        for (key, ms) in &self.timeouts_ms {
            if *ms == 0 {
                problems.push(format!("/timeouts_ms/{key}: must be at least 1"));
            }
        }
        problems
    }

    /// The price of `model` (every model a role calls is listed: `problems` checks it).
    pub fn price(&self, model: &ModelRef) -> Price {
        self.prices
            .get(&model.to_string())
            .copied()
            .unwrap_or_default()
    }

    /// How long one call of `model` may take.
    pub fn timeout(&self, model: &ModelRef) -> std::time::Duration {
        let ms = self
            .timeouts_ms
            .get(&model.to_string())
            .or_else(|| self.timeouts_ms.get(model.provider.as_str()))
            .copied()
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        std::time::Duration::from_millis(ms)
    }
}
