//! The gateway's section of the config file (`gateway:`).

use mindbus::config::Section;
use schemars::JsonSchema;
use serde::Deserialize;

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
    /// Where Prometheus scrapes the gateway's metrics, and probes find `/healthz` and
    /// `/readyz`; apart from the API, so the metrics (which name keys and roles) need no key
    /// and are not served to API clients. Empty: no metrics (and none recorded).
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

impl Section for GatewayConfig {
    const NAME: &'static str = "gateway";
}
