//! A gateway over a key prefix of its own, with three API keys, in process (for `oneshot`)
//! or as a `mindbus-gateway` process.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use mindbus::config::{Config, RedisConfig};
use mindbus::telemetry::probes;
use mindbus_gateway::AppState;
use mindbus_gateway::auth::hash_key;
use mindbus_gateway::config::{ApiKeyConfig, GatewayConfig};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

pub use crate::testenv::{delete_prefix, redis_url};

pub const ADMIN: &str = "admin-key-for-tests";
/// May send to `echo` and start `sample`, for the tenant `acme`.
pub const ECHO: &str = "echo-key";
/// May do anything, twice a minute.
pub const SLOW: &str = "slow-key";
/// Another key named `echo`, with the same scopes as [`ECHO`].
pub const ECHO_TWIN: &str = "echo-twin-key";
/// May send to every role but start and see only `sample` runs.
pub const SAMPLE: &str = "sample-key";
/// Event streams one key may hold open in these tests.
pub const STREAMS_PER_KEY: usize = 2;
/// Requests one key may have in flight in these tests.
pub const REQUESTS_PER_KEY: usize = 4;

/// The shared configuration on `prefix`, and the gateway's with the tests' keys and limits.
pub fn config(prefix: &str, redis_url: &str) -> (Config, GatewayConfig) {
    let config = Config {
        redis: RedisConfig {
            url: redis_url.into(),
            prefix: prefix.into(),
        },
        ..Config::default()
    };
    let key = |name: &str, plain: &str, roles: &[&str], workflows: &[&str], rpm| ApiKeyConfig {
        name: name.into(),
        sha256: hash_key(plain),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        workflows: workflows.iter().map(|s| s.to_string()).collect(),
        requests_per_minute: rpm,
        tenant: (name == "echo").then(|| "acme".into()),
        max_streams: None,
        max_runs: None,
    };
    let gateway = GatewayConfig {
        api_keys: vec![
            key("echo", ECHO, &["echo"], &["sample"], 10_000),
            key("echo", ECHO_TWIN, &["echo"], &["sample"], 10_000),
            key("slow", SLOW, &["*"], &["*"], 2),
            key("sample", SAMPLE, &["*"], &["sample"], 10_000),
        ],
        streams_per_key: STREAMS_PER_KEY,
        requests_per_key: REQUESTS_PER_KEY,
        max_body_bytes: 4096,
        max_json_depth: 8,
        ..GatewayConfig::default()
    };
    (config, gateway)
}

/// The app in this process, on its own prefix (deleted on drop), where agents have
/// started for the roles `echo` and `writer` (none runs: commands stay pending).
pub struct Gw {
    pub prefix: String,
    pub app: Router,
    /// The metrics endpoint, served apart from the API.
    pub metrics: Router,
    stop: CancellationToken,
}

impl Gw {
    pub async fn new(name: &str) -> Self {
        Self::on(name, &redis_url()).await
    }

    /// The app over the Redis at `redis_url`.
    pub async fn on(name: &str, redis_url: &str) -> Self {
        let prefix = format!("t-gw-{name}-{}", uuid::Uuid::now_v7().simple());
        let (config, gateway) = config(&prefix, redis_url);
        let bus = mindbus::bus::Bus::connect(&config.redis).await.unwrap();
        for role in ["echo", "writer"] {
            mindbus::streams::ensure_role(&mut bus.connection(), bus.keys(), role)
                .await
                .unwrap();
        }
        let stop = CancellationToken::new();
        // Installed before any request, as the gateway's `run` does.
        mindbus::telemetry::metrics::recorder("mindbus-gateway");
        let state = AppState::new(&config, gateway, Some(ADMIN), stop.clone())
            .await
            .unwrap();
        Self {
            prefix,
            app: mindbus_gateway::app(state.clone()),
            metrics: probes::router(
                "mindbus-gateway",
                probes::redis_ready(state.bus().redis().clone()),
            ),
            stop,
        }
    }

    /// Sends one request through the app, without a socket.
    pub async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(request).await.unwrap()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.stop.cancel();
        delete_prefix(&self.prefix);
    }
}

/// A request with a key and a JSON body.
pub fn post(uri: &str, key: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post(uri).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

pub fn get(uri: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Body::empty()).unwrap()
}

/// The body as JSON.
pub async fn json(response: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
}
