//! Real processes: two `mindbus-gateway`s and a `mindbus-orchestrator` on a prefix and a
//! database of their own, with in-process echo agents; and a small SSE reader.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::support::{ADMIN, SAMPLE};
use crate::testenv::{TestDb, delete_prefix, eventually, redis_url, spawn_echo_on, unique};
use mindbus_testkit::servers::free_port;

/// Runs one key may have running at once in the stack.
pub const RUNS_PER_KEY: u32 = 2;

pub struct Stack {
    pub gateways: Vec<String>,
    /// Each process's metrics address, by Prometheus job name (when started `observed`).
    pub metrics: Vec<(&'static str, String)>,
    pub http: reqwest::Client,
    redis: String,
    prefix: String,
    _db: TestDb,
    _config: tempfile::TempDir,
    _children: Vec<Child>,
    agents: CancellationToken,
}

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_mindbus-gateway")).with_file_name(name);
    assert!(
        path.exists(),
        "run the tests with `cargo nextest run --workspace`"
    );
    path
}

impl Stack {
    /// The stack on the shared Redis.
    pub async fn up(name: &str) -> Self {
        Self::on(&redis_url(), name).await
    }

    /// The stack on the Redis (or Redis Cluster) at `redis`.
    pub async fn on(redis: &str, name: &str) -> Self {
        Self::start(redis, name, Mode::InProcessAgent).await
    }

    /// The stack on the shared Redis, every process (the echo agent too) exporting its
    /// spans to the OTLP endpoint `otlp`.
    pub async fn traced(name: &str, otlp: &str) -> Self {
        Self::start(&redis_url(), name, Mode::Traced(otlp)).await
    }

    /// The stack on the shared Redis with a monitor too, every process (the echo agent
    /// too) serving its metrics and probes (see [`Stack::metrics`]).
    pub async fn observed(name: &str) -> Self {
        Self::start(&redis_url(), name, Mode::Observed).await
    }

    async fn start(redis: &str, name: &str, mode: Mode<'_>) -> Self {
        let otlp = match mode {
            Mode::Traced(otlp) => Some(otlp),
            _ => None,
        };
        let observed = matches!(mode, Mode::Observed);
        let prefix = unique(&format!("t-gw-e2e-{name}"));
        let db = TestDb::new(&format!("gw_{name}")).await;
        let agents = CancellationToken::new();
        if matches!(mode, Mode::InProcessAgent) {
            spawn_echo_on(
                redis,
                &prefix,
                256,
                mindbus::config::AgentConfig::default().events,
                agents.clone(),
            );
        }
        let workflows = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/workflows");
        // Besides the admin key from the environment, the key `SAMPLE`, held to `sample`
        // and the role `echo`.
        let config = tempfile::tempdir().unwrap();
        let file = config.path().join("mindbus.yaml");
        let keys = format!(
            "gateway:\n  api_keys:\n    - {{name: sample, sha256: {}, roles: [echo], workflows: [sample]}}\n",
            mindbus_gateway::auth::hash_key(SAMPLE)
        );
        std::fs::write(&file, keys).unwrap();
        let file = file.to_str().unwrap().to_owned();
        let mut metrics = Vec::new();
        let mut spawn = |name: &'static str, args: &[&str]| {
            let listen = format!("127.0.0.1:{}", free_port());
            if observed {
                metrics.push((name.trim_start_matches("mindbus-"), listen.clone()));
            }
            tokio::process::Command::new(binary(name))
                .args(args)
                .args(["--prefix", &prefix, "--redis-url", redis])
                .env("DATABASE_URL", &db.url)
                .env("MINDBUS_GATEWAY_API_KEY", ADMIN)
                .env("MINDBUS_GATEWAY__METRICS_LISTEN", &listen)
                .envs(observed.then_some(("MINDBUS_METRICS_LISTEN", &listen)))
                .env("MINDBUS_GATEWAY__RUNS_PER_KEY", RUNS_PER_KEY.to_string())
                .env("RUST_LOG", "warn")
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .envs(otlp.map(|endpoint| ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)))
                // Spans sent a tenth of a second after they end, not five seconds.
                .env("OTEL_BSP_SCHEDULE_DELAY", "100")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let mut children = vec![spawn("mindbus-orchestrator", &["--workflows", workflows])];
        if !matches!(mode, Mode::InProcessAgent) {
            children.push(spawn("mindbus-agent", &["--role", "echo", "--echo"]));
        }
        if observed {
            children.push(spawn("mindbus-monitor", &[]));
        }
        let mut gateways = Vec::new();
        for _ in 0..if observed { 1 } else { 2 } {
            let address = format!("127.0.0.1:{}", free_port());
            let args = ["--listen", &address, "--config", &file];
            children.push(spawn("mindbus-gateway", &args));
            gateways.push(format!("http://{address}"));
        }
        let stack = Self {
            gateways,
            metrics,
            http: reqwest::Client::new(),
            redis: redis.to_owned(),
            prefix,
            _db: db,
            _config: config,
            _children: children,
            agents,
        };
        for base in &stack.gateways {
            stack.wait_ready(base).await;
        }
        stack.wait_registered(&["echo", "orchestrator"]).await;
        stack
    }

    /// Waits until agents have started for `roles` (the gateway refuses other roles).
    async fn wait_registered(&self, roles: &[&str]) {
        let conn = mindbus::streams::Redis::open(&self.redis.clone().into())
            .unwrap()
            .shared()
            .await
            .unwrap();
        let registry = format!("{}:roles", self.prefix);
        eventually(Duration::from_secs(10), "the agents did not start", || {
            let mut conn = conn.clone();
            let registry = registry.clone();
            async move {
                let known: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&registry)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                roles
                    .iter()
                    .all(|r| known.iter().any(|k| k == r))
                    .then_some(())
            }
        })
        .await;
    }

    async fn wait_ready(&self, base: &str) {
        let what = format!("{base} did not become ready");
        eventually(Duration::from_secs(10), &what, || async {
            let response = self.http.get(format!("{base}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    pub fn post(&self, gateway: usize, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.gateways[gateway]))
            .bearer_auth(ADMIN)
    }

    /// Starts a run of `sample` with two steps (the draft, then one expanded point, no
    /// review) through the first gateway, and follows it to its end: the `ended` event.
    pub async fn two_step_run(&self, topic: &str) -> Sse {
        let input = serde_json::json!({"topic": topic, "points": ["one"], "review": false});
        let created = self
            .post(0, "/v1/runs")
            .json(&serde_json::json!({"workflow": "sample", "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let run = created.json::<serde_json::Value>().await.unwrap()["run_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let events = read_sse(self.get(0, &format!("/v1/runs/{run}/events")), |events| {
            events
                .last()
                .is_some_and(|e| e.event == "mindbus.run.ended")
        })
        .await;
        events.last().unwrap().clone()
    }

    pub fn get(&self, gateway: usize, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.gateways[gateway]))
            .bearer_auth(ADMIN)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.agents.cancel();
        if self.redis == redis_url() {
            delete_prefix(&self.prefix);
        }
    }
}

/// Where the stack's echo agent runs, and what its processes export.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// An echo agent in the test's process; two gateways.
    InProcessAgent,
    /// An echo agent process; every process exports spans to this OTLP endpoint.
    Traced(&'a str),
    /// An echo agent process and a monitor; every process serves its metrics.
    Observed,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: serde_json::Value,
}

/// Reads events from `request` until `done` says so (then disconnects).
pub async fn read_sse(request: reqwest::RequestBuilder, done: impl Fn(&[Sse]) -> bool) -> Vec<Sse> {
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut body = response.bytes_stream();
    let (mut buffer, mut out) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&out) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time");
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream stays open").unwrap(),
        ));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(event) = parse(&block) {
                out.push(event);
                if done(&out) {
                    break;
                }
            }
        }
    }
    out
}

/// Reads events from `request` until the server closes the stream.
pub async fn read_sse_to_end(request: reqwest::RequestBuilder) -> Vec<Sse> {
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream of something that ended closes")
        .unwrap();
    text.split("\n\n").filter_map(parse).collect()
}

fn parse(block: &str) -> Option<Sse> {
    let field = |name: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
    };
    Some(Sse {
        id: field("id:")?,
        event: field("event:")?,
        data: serde_json::from_str(&field("data:")?).ok()?,
    })
}
