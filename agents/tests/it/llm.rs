//! The LLM layer through real `mindbus-agent` processes, against local fakes that speak each
//! provider's real streaming wire format (see `fakes`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mindbus::wire::{Command, CommandResult, EventKind, Payload, Status};
use serde_json::{Value, json};
use tokio::process::Child;

use crate::fakes::{ANSWER, Fake};
use crate::support::Mesh;

/// Distinct from anything else in a stream or a log, so even a piece of one is found.
const KEYS: [(&str, &str); 3] = [
    ("FAKE_OPENAI_KEY", "sk-7f3a9c1e-openai"),
    ("FAKE_ANTHROPIC_KEY", "sk-0b88e2d4-anthropic"),
    ("FAKE_GEMINI_KEY", "gm-41d2e9b7"),
];

/// The price of a model the tests do not charge for.
const FREE: &str = "{ input: 0, output: 0 }";

/// An LLM config pointing every provider at the fake, with `rest` (YAML) appended.
fn config(dir: &tempfile::TempDir, fake_url: &str, rest: &str) -> PathBuf {
    let text = format!(
        "providers:
  openai: {{ base_url: '{fake_url}/openai/v1/', api_key_env: FAKE_OPENAI_KEY }}
  anthropic: {{ base_url: '{fake_url}/anthropic/v1/', api_key_env: FAKE_ANTHROPIC_KEY }}
  gemini: {{ base_url: '{fake_url}/gemini/v1beta/', api_key_env: FAKE_GEMINI_KEY }}
retry: {{ attempts: 3, base_ms: 20, max_ms: 5000 }}
{rest}"
    );
    let path = dir.path().join("agents.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A fake provider, a mesh of its own and an LLM config (`rest` after the fake's
/// providers) in a temporary directory, which lives as long as the returned `TempDir`.
async fn setup(name: &str, rest: &str) -> (Fake, Mesh, PathBuf, tempfile::TempDir) {
    let (fake, url) = Fake::start().await;
    let mesh = Mesh::new(name).await;
    let dir = tempfile::tempdir().unwrap();
    let file = config(&dir, &url, rest);
    (fake, mesh, file, dir)
}

impl Mesh {
    /// Starts `mindbus-agent --role ROLE` with the LLM config `file` and the fake keys.
    pub fn llm_agent(&self, role: &str, file: &std::path::Path) -> Child {
        self.llm_agent_command(role, file)
            .spawn()
            .expect("agent starts")
    }

    /// The command [`Mesh::llm_agent`] runs.
    fn llm_agent_command(&self, role: &str, file: &std::path::Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbus-agent"));
        command
            .args([
                "--role",
                role,
                "--prefix",
                &self.prefix,
                "--redis-url",
                &self.url,
            ])
            .arg("--llm-config")
            .arg(file)
            .envs(KEYS)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Sends `data` to `role` (with extra command fields) and waits for its result.
    pub async fn ask(&self, role: &str, data: Value, fields: &[(&str, &str)]) -> CommandResult {
        let mut command = Command::new(format!("{role}.ask"), Payload::json(data));
        for (name, value) in fields {
            match *name {
                "runid" => command.runid = Some(value.to_string()),
                _ => {
                    command
                        .extensions
                        .insert(name.to_string(), value.to_string());
                }
            }
        }
        self.bus
            .call(role, command, Duration::from_secs(60))
            .await
            .unwrap()
            .expect("a result within 60 s")
    }

    /// The data of `kind` events about `command`, on any role's event stream.
    pub async fn event_data(
        &self,
        command: &mindbus::wire::MessageId,
        kind: EventKind,
    ) -> Vec<Value> {
        let roles = mindbus::streams::roles(&mut self.bus.connection(), self.bus.keys())
            .await
            .unwrap();
        let mut events = Vec::new();
        for role in roles {
            events.extend(self.events_of(&role).await);
        }
        events
            .into_iter()
            .filter(|e| e.correlationid.as_ref() == Some(command) && e.kind() == Some(kind))
            .map(|e| e.envelope.data.value)
            .collect()
    }
}

/// Per provider, one command walks a fallback chain through every failure a provider
/// sends: a context-length error (never retried), an outage (retried, then left), a
/// malformed stream (retried, then left), and a 429 whose `Retry-After` is honoured before
/// the model answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_streams_retries_and_falls_back() {
    let mut roles = String::from("prices:\n");
    for provider in ["openai", "anthropic", "gemini"] {
        roles.push_str(&format!(
            "  {provider}/ratelimit: {{ input: 1.0, output: 2.0 }}\n"
        ));
        for model in ["toolong", "down", "malformed"] {
            roles.push_str(&format!("  {provider}/{model}: {FREE}\n"));
        }
    }
    roles.push_str("roles:\n");
    for provider in ["openai", "anthropic", "gemini"] {
        roles.push_str(&format!(
            "  {provider}:
    model: {provider}/toolong
    fallbacks: [{provider}/down, {provider}/malformed, {provider}/ratelimit]
    system: Answer briefly.
    prompt: 'Say hello to {{{{ name }}}}.'
    temperature: 0.5\n"
        ));
    }
    let (fake, mesh, file, _dir) = setup("llm-providers", &roles).await;
    let _agents: Vec<Child> = ["openai", "anthropic", "gemini"]
        .iter()
        .map(|p| mesh.llm_agent(p, &file))
        .collect();

    for (provider, (_, key)) in ["openai", "anthropic", "gemini"].into_iter().zip(KEYS) {
        let result = mesh.ask(provider, json!({"name": "Ada"}), &[]).await;
        assert_eq!(result.status, Status::Completed, "{provider}: {result:?}");
        let data = &result.envelope.data.value;
        assert_eq!(data["text"], json!(ANSWER.concat()), "{provider}");
        assert_eq!(data["model"], json!(format!("{provider}/ratelimit")));
        // 10 tokens in at $1/M and 5 out at $2/M: 20 micro-dollars.
        assert_eq!(data["usage"]["tokens_in"], json!(10), "{provider}: {data}");
        assert_eq!(data["usage"]["tokens_out"], json!(5), "{provider}: {data}");
        assert_eq!(data["usage"]["cost_micros"], json!(20), "{provider}");

        assert_eq!(
            fake.calls(provider, "toolong").len(),
            1,
            "{provider}: context length is never retried"
        );
        assert_eq!(
            fake.calls(provider, "down").len(),
            3,
            "{provider}: an outage is retried"
        );
        assert_eq!(
            fake.calls(provider, "malformed").len(),
            3,
            "{provider}: a malformed stream is retried"
        );
        let limited = fake.calls(provider, "ratelimit");
        assert_eq!(limited.len(), 2, "{provider}: one 429, then the answer");
        let waited = limited[1].at - limited[0].at;
        assert!(
            waited >= Duration::from_millis(950),
            "{provider}: Retry-After 1 s honoured, waited {waited:?}"
        );
        assert!(
            fake.seen()
                .iter()
                .filter(|s| s.provider == provider)
                .all(|s| s.key == key)
        );

        let chunks: String = mesh
            .event_data(&result.correlationid, EventKind::Progress)
            .await
            .iter()
            .filter_map(|d| d["chunk"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            chunks,
            ANSWER.concat(),
            "{provider}: the text streamed as chunk events"
        );
        // The answer's usage, and the malformed streams' (the provider took those calls);
        // refusals (429, 400, 500) are not billed.
        let usage = mesh
            .event_data(&result.correlationid, EventKind::LlmUsage)
            .await;
        let (failed, answered): (Vec<_>, Vec<_>) =
            usage.iter().partition(|u| u["failed"] == json!(true));
        assert_eq!(answered.len(), 1, "{provider}: {usage:?}");
        assert_eq!(answered[0]["model"], json!(format!("{provider}/ratelimit")));
        assert_eq!(answered[0]["cost_micros"], json!(20));
        assert_eq!(answered[0]["cachehit"], json!(false));
        assert_eq!(failed.len(), 3, "{provider}: {usage:?}");
        assert!(
            failed
                .iter()
                .all(|u| u["model"] == json!(format!("{provider}/malformed"))
                    && u["estimated"] == json!(true))
        );
    }
}

/// A JSON role's answer is checked against its schema; its fields become the result's.
/// A second identical call at temperature 0 is answered by the cache, not the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_are_checked_and_deterministic_calls_cached() {
    let (fake, mesh, file, _dir) = setup(
        "llm-cache",
        "prices: { openai/verdict: { input: 0, output: 0 }, openai/ok: { input: 0, output: 0 } }
roles:
  critic:
    model: openai/verdict
    system: Review.
    prompt: '{{ draft }}'
    output:
      json:
        schema: { type: object, properties: { approved: { type: boolean } }, required: [approved, issues] }
  strict:
    model: openai/ok
    system: Review.
    prompt: '{{ draft }}'
    output:
      json:
        schema: { type: object, required: [approved] }
        attempts: 2
",
    )
    .await;
    let _critic = mesh.llm_agent("critic", &file);
    let _strict = mesh.llm_agent("strict", &file);

    let first = mesh.ask("critic", json!({"draft": "Short."}), &[]).await;
    let data = &first.envelope.data.value;
    assert_eq!(first.status, Status::Completed, "{first:?}");
    assert_eq!(data["approved"], json!(false));
    assert_eq!(data["issues"], json!(["too short"]));
    assert_eq!(data["cached"], json!(false));

    let second = mesh.ask("critic", json!({"draft": "Short."}), &[]).await;
    assert_eq!(second.envelope.data.value["cached"], json!(true));
    assert_eq!(second.envelope.data.value["issues"], json!(["too short"]));
    assert_eq!(
        fake.calls("openai", "verdict").len(),
        1,
        "the cache answered the second call"
    );
    let usage = mesh
        .event_data(&second.correlationid, EventKind::LlmUsage)
        .await;
    assert_eq!(usage[0]["cachehit"], json!(true));
    assert_eq!(usage[0]["cost_micros"], json!(0));

    // Plain text where JSON is required: asked again, then a clear failure.
    let bad = mesh.ask("strict", json!({"draft": "x"}), &[]).await;
    assert_eq!(bad.status, Status::Failed);
    let failure = bad.failure.unwrap();
    assert_eq!(failure.errortype.as_str(), "invalid_output");
    assert!(failure.error.contains("after 2 calls"), "{}", failure.error);
    assert_eq!(fake.calls("openai", "ok").len(), 2);
}

/// Two agent processes share one limit of 120 requests a minute (one each 500 ms): the
/// provider sees their calls spaced by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_rate_limit() {
    let (fake, mesh, file, _dir) = setup(
        "llm-limit",
        "prices: { openai/ok: { input: 0, output: 0 } }
limits:
  openai/ok: { requests_per_minute: 120 }
roles:
  limited:
    model: openai/ok
    system: Hi.
    prompt: 'Item {{ n }}'
    temperature: 0.5
",
    )
    .await;
    let _a = mesh.llm_agent("limited", &file);
    let _b = mesh.llm_agent("limited", &file);
    let asks = (0..10).map(|n| mesh.ask("limited", json!({"n": n}), &[]));
    let results = futures::future::join_all(asks).await;
    assert!(results.iter().all(|r| r.status == Status::Completed));
    let sources: BTreeSet<_> = results.iter().map(|r| r.envelope.source.clone()).collect();
    assert_eq!(sources.len(), 2, "both processes served calls: {sources:?}");

    let mut times: Vec<_> = fake.calls("openai", "ok").iter().map(|s| s.at).collect();
    times.sort();
    assert_eq!(times.len(), 10);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("gaps between calls: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(450)),
        "calls closer than the limit allows: {gaps:?}"
    );
}

/// A run's budget: once spent, the run's next call is refused with `budget_exceeded`
/// without reaching the provider; another run still gets answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_run_budget_stops_calls() {
    let (fake, mesh, file, _dir) = setup(
        "llm-budget",
        "prices:
  openai/ok: { input: 1.0, output: 2.0 }
budgets: { run_usd: 0.00001 }
roles:
  writer:
    model: openai/ok
    system: Write.
    prompt: 'About {{ topic }}'
    temperature: 0.7
",
    )
    .await;
    let _agent = mesh.llm_agent("writer", &file);
    let first = mesh
        .ask("writer", json!({"topic": "a"}), &[("runid", "run-1")])
        .await;
    assert_eq!(first.status, Status::Completed, "{first:?}");
    let second = mesh
        .ask("writer", json!({"topic": "b"}), &[("runid", "run-1")])
        .await;
    assert_eq!(second.status, Status::Failed);
    let failure = second.failure.unwrap();
    assert_eq!(failure.errortype.as_str(), "budget_exceeded");
    assert!(failure.error.contains("run budget"), "{}", failure.error);
    assert!(!failure.retryable);
    assert_eq!(
        fake.calls("openai", "ok").len(),
        1,
        "nothing more was spent"
    );

    let other = mesh
        .ask("writer", json!({"topic": "c"}), &[("runid", "run-2")])
        .await;
    assert_eq!(other.status, Status::Completed);
    let totals: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("{}:llm:{{usage}}:run:run-1", mesh.prefix))
        .query_async(&mut mesh.bus.connection())
        .await
        .unwrap();
    assert_eq!(totals["calls"], 1);
    assert_eq!(totals["cost_micros"], 20);
}

/// A role whose every model is out of reach fails clearly, naming each model and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_model_fails_clearly() {
    let (_fake, url) = Fake::start().await;
    let mesh = Mesh::new("llm-nomodel").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    let text = format!(
        "providers:
  anthropic: {{ api_key_env: MINDBUS_TEST_UNSET_KEY }}
  openai: {{ base_url: '{url}/openai/v1/', api_key_env: FAKE_OPENAI_KEY }}
retry: {{ attempts: 2, base_ms: 10, max_ms: 100 }}
prices: {{ anthropic/ok: {{ input: 0, output: 0 }}, openai/down: {{ input: 0, output: 0 }} }}
roles:
  lost:
    model: anthropic/ok
    fallbacks: [openai/down]
    system: Hi.
    prompt: Hi.
"
    );
    std::fs::write(&file, text).unwrap();
    let _agent = mesh.llm_agent("lost", &file);
    let result = mesh.ask("lost", json!({}), &[]).await;
    let failure = result.failure.expect("a failure");
    assert_eq!(failure.errortype.as_str(), "llm_error");
    assert!(
        failure.error.contains("MINDBUS_TEST_UNSET_KEY"),
        "{}",
        failure.error
    );
    assert!(
        failure.error.contains("openai/down: unavailable"),
        "{}",
        failure.error
    );
}

/// A broken LLM config stops the agent at start with every problem named by its path.
#[tokio::test]
async fn a_bad_config_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    std::fs::write(
        &file,
        "roles:
  writer:
    model: acme/big
    fallbacks: [gpt-4o]
    system: '{{ unclosed'
    prompt: Hi.
    temperature: 3
  critic:
    model: openai/unpriced
    system: Judge.
    prompt: Hi.
timeouts_ms: { acme: 5 }
",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbus-agent"))
        .args(["--role", "writer", "--prefix", "t-badconfig"])
        .arg("--llm-config")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "/roles/writer/model: unknown provider `acme`",
        "/roles/writer/fallbacks/0: `gpt-4o` is not `provider/model`",
        "/roles/writer/system: not a template",
        "/roles/writer/temperature: must be between 0 and 2",
        "/roles/critic/model: `openai/unpriced` has no price in /prices",
        "/timeouts_ms/acme: not a provider or a provider/model",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// The shipped `config/agents.yaml` loads, and its three roles use the local model when no
/// provider key is set.
#[test]
fn the_shipped_config_is_valid() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agents.yaml");
    let config = mindbus_agents::llm::LlmConfig::load(std::path::Path::new(file)).unwrap();
    for role in ["writer", "critic", "editor"] {
        let role = &config.roles[role];
        assert_eq!(
            role.fallbacks.last().map(String::as_str),
            Some("local/smollm2")
        );
    }
}

/// Cancelling a command while its model streams stops the handler, reports `canceled`, and
/// hangs up on the provider (the call is aborted, not left to run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_command_aborts_its_call() {
    let (fake, mesh, file, _dir) = setup(
        "llm-cancel",
        "prices: { openai/slow: { input: 1, output: 1 } }
budgets: { run_usd: 10 }
roles:
  talker:
    model: openai/slow
    system: Talk.
    prompt: Talk for a long time.
    temperature: 0.5
",
    )
    .await;
    let listen = format!("127.0.0.1:{}", mindbus_testkit::servers::free_port());
    let _agent = mesh
        .llm_agent_command("talker", &file)
        .env("MINDBUS_METRICS_LISTEN", &listen)
        .spawn()
        .unwrap();
    let mut command = Command::new("talker.talk", Payload::json(json!({})));
    command.runid = Some("run-cancel".into());
    let id = command.envelope.id.clone();
    mesh.bus.publish("talker", &command).await.unwrap();
    crate::testenv::eventually(
        Duration::from_secs(20),
        "the first streamed chunk",
        || async { (!mesh.event_data(&id, EventKind::Progress).await.is_empty()).then_some(()) },
    )
    .await;
    assert!(!fake.hung_up());
    mesh.bus.cancel(&id).await.unwrap();
    let results = mesh
        .wait_results_of("talker", 1, Duration::from_secs(20))
        .await;
    assert_eq!(results[0].status, Status::Canceled, "{:?}", results[0]);
    crate::testenv::eventually(
        Duration::from_secs(10),
        "the provider call hung up",
        || async { fake.hung_up().then_some(()) },
    )
    .await;
    assert_eq!(
        fake.calls("openai", "slow").len(),
        1,
        "not retried after the cancel"
    );
    // The call cut off is still counted, billed its prompt as the ledger bills it.
    let text = metrics_text(&listen).await;
    let model = r#"provider="openai",model="slow""#;
    let calls = format!("mindbus_llm_calls_total{{{model},outcome=\"canceled\"}}");
    assert_eq!(sample(&text, &calls), 1.0);
    let prompt = format!("mindbus_llm_tokens_total{{{model},type=\"input\"}}");
    assert!(sample(&text, &prompt) > 0.0);
    // The call's budget reservation does not outlive it.
    let totals = format!("{}:llm:{{usage}}:run:run-cancel", mesh.prefix);
    crate::testenv::eventually(
        Duration::from_secs(10),
        "the reservation was kept",
        || async {
            let reserved: Option<i64> = redis::cmd("HGET")
                .arg(&totals)
                .arg("reserved_micros")
                .query_async(&mut mesh.bus.connection())
                .await
                .ok()?;
            (reserved.unwrap_or(0) == 0).then_some(())
        },
    )
    .await;
}

/// A tenant's daily budget and the deployment's daily budget stop calls the same way,
/// each named in the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_daily_budgets_stop_calls() {
    // Each call costs 20 µ$: a tenant may spend 10 µ$ a day, everyone together 30 µ$.
    let (fake, mesh, file, _dir) = setup(
        "llm-daily",
        "prices:
  openai/ok: { input: 1.0, output: 2.0 }
budgets: { tenant_daily_usd: 0.00001, daily_usd: 0.00003 }
roles:
  writer:
    model: openai/ok
    system: Write.
    prompt: 'About {{ topic }}'
    temperature: 0.7
",
    )
    .await;
    let _agent = mesh.llm_agent("writer", &file);
    let mesh = &mesh;
    let ask = |tenant: &'static str| async move {
        mesh.ask("writer", json!({"topic": tenant}), &[("tenant", tenant)])
            .await
    };
    assert_eq!(ask("acme").await.status, Status::Completed);
    let refused = ask("acme").await.failure.expect("acme's budget is spent");
    assert_eq!(refused.errortype.as_str(), "budget_exceeded");
    assert!(
        refused.error.contains("tenant daily budget"),
        "{}",
        refused.error
    );
    assert_eq!(ask("globex").await.status, Status::Completed);
    let refused = ask("initech")
        .await
        .failure
        .expect("the day's budget is spent");
    assert!(
        refused.error.contains("the daily budget"),
        "{}",
        refused.error
    );
    assert_eq!(
        fake.calls("openai", "ok").len(),
        2,
        "refused calls reach no provider"
    );
}

/// A tokens-per-minute limit spaces calls by their estimated tokens (prompt / 4 plus
/// `max_tokens`): about 102 tokens against 12,000 a minute is one call each 510 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limit_spaces_calls_by_their_size() {
    let (fake, mesh, file, _dir) = setup(
        "llm-tpm",
        "prices: { openai/ok: { input: 0, output: 0 } }
limits:
  openai: { tokens_per_minute: 12000 }
roles:
  counted:
    model: openai/ok
    system: Hi.
    prompt: 'Item {{ n }}'
    temperature: 0.5
    max_tokens: 100
",
    )
    .await;
    let _agent = mesh.llm_agent("counted", &file);
    let asks = (0..4).map(|n| mesh.ask("counted", json!({"n": n}), &[]));
    let results = futures::future::join_all(asks).await;
    assert!(results.iter().all(|r| r.status == Status::Completed));
    let mut times: Vec<_> = fake.calls("openai", "ok").iter().map(|s| s.at).collect();
    times.sort();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("gaps between calls: {gaps:?}");
    assert_eq!(gaps.len(), 3);
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(450)),
        "calls closer than the token limit allows: {gaps:?}"
    );
}

/// A call that runs past its model's timeout is cut off (the provider is hung up on),
/// retried, then falls back to the next model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_cut_off_and_falls_back() {
    let (fake, mesh, file, _dir) = setup(
        "llm-timeout",
        "prices: { openai/slow: { input: 0, output: 0 }, openai/ok: { input: 0, output: 0 } }
timeouts_ms: { openai/slow: 400 }
roles:
  talker:
    model: openai/slow
    fallbacks: [openai/ok]
    system: Talk.
    prompt: Talk for a long time.
    temperature: 0.5
",
    )
    .await;
    let _agent = mesh.llm_agent("talker", &file);
    let started = std::time::Instant::now();
    let result = mesh.ask("talker", json!({}), &[]).await;
    assert_eq!(result.status, Status::Completed, "{:?}", result.failure);
    assert_eq!(result.envelope.data.value["model"], json!("openai/ok"));
    assert_eq!(fake.calls("openai", "slow").len(), 3, "retried, then left");
    assert!(fake.hung_up(), "the cut-off calls were hung up on");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not a minute-long stream"
    );
}

/// No configured key leaves the agent by any path: providers that echo the key in a 401's
/// body and headers, or in a broken stream, for every wire format, leave no trace of it in
/// results, events, dead letters or the agent's own logs (at debug level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_leaves_the_process_by_any_path() {
    let mut rest = String::from("prices:\n");
    let mut chain = Vec::new();
    for model in ["echokey", "echokeystream"] {
        for provider in ["openai", "anthropic", "gemini"] {
            rest.push_str(&format!("  {provider}/{model}: {FREE}\n"));
            chain.push(format!("{provider}/{model}"));
        }
    }
    rest.push_str(&format!(
        "roles:
  canary:
    model: {}
    fallbacks: [{}]
    system: Hi.
    prompt: 'Hello {{{{ n }}}}'
    temperature: 0.5
",
        chain[0],
        chain[1..].join(", ")
    ));
    let (fake, mesh, file, _dir) = setup("llm-canary", &rest).await;
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbus-agent"))
        .args([
            "--role",
            "canary",
            "--prefix",
            &mesh.prefix,
            "--redis-url",
            &mesh.url,
        ])
        .arg("--llm-config")
        .arg(&file)
        .envs(KEYS)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let result = mesh.ask("canary", json!({"n": 1}), &[]).await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    for model in &chain {
        let (provider, name) = model.split_once('/').unwrap();
        assert!(
            !fake.calls(provider, name).is_empty(),
            "{model} was not called"
        );
    }
    let error = result.failure.as_ref().unwrap().error.clone();
    assert!(
        error.contains("Invalid API key: Bearer "),
        "the echo reached the failure text: {error}"
    );

    let _ = agent.start_kill();
    let out = agent.wait_with_output().await.unwrap();
    let mut seen = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let roles = mindbus::streams::roles(&mut mesh.bus.connection(), mesh.bus.keys())
        .await
        .unwrap();
    for stream in roles
        .iter()
        .flat_map(|role| mesh.bus.keys().role_streams(role))
    {
        for (_, fields) in mesh.entries(&stream).await {
            for (name, value) in fields {
                seen.push_str(&format!("{name}={}\n", String::from_utf8_lossy(&value)));
            }
        }
    }
    assert!(
        seen.contains("mindbus.command.failed"),
        "the streams were read"
    );
    for (_, key) in KEYS {
        // A piece too: a failure text cut short must not keep the start of a key.
        assert!(
            !seen.contains(&key[..5]),
            "(part of) the key {key} left the process"
        );
    }
}

/// Calls let through together cannot overspend a budget together: each reserves its
/// estimate the moment it may start, so of six commands of one run against a $0.50 run
/// budget, with calls priced $0.60, only the first reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_cannot_overspend_a_budget() {
    let (fake, mesh, file, _dir) = setup(
        "llm-reserve",
        // 10 tokens in and 5 out at $40,000 per million: $0.60 a call.
        "prices:
  openai/ok: { input: 40000, output: 40000 }
limits:
  openai/ok: { requests_per_minute: 60 }
budgets: { run_usd: 0.50 }
roles:
  writer:
    model: openai/ok
    system: Write.
    prompt: 'About {{ n }}'
    temperature: 0.7
    concurrency: 8
",
    )
    .await;
    let _agent = mesh.llm_agent("writer", &file);
    let asks = (0..6).map(|n| mesh.ask("writer", json!({"n": n}), &[("runid", "run-1")]));
    let results = futures::future::join_all(asks).await;
    let completed = results
        .iter()
        .filter(|r| r.status == Status::Completed)
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter_map(|r| r.failure.as_ref())
        .filter(|f| f.errortype.as_str() == "budget_exceeded")
        .collect();
    assert_eq!((completed, refused.len()), (1, 5), "{results:?}");
    assert_eq!(
        fake.calls("openai", "ok").len(),
        1,
        "one call reached the provider"
    );
    let totals: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(format!("{}:llm:{{usage}}:run:run-1", mesh.prefix))
        .query_async(&mut mesh.bus.connection())
        .await
        .unwrap();
    assert_eq!(totals["cost_micros"], 600_000, "{totals:?}");
    assert_eq!(totals["reserved_micros"], 0, "{totals:?}");
    assert_eq!(totals["calls"], 1);
}

/// A stream that stops before the provider ends it (no finish reason, no `[DONE]`, no
/// `message_stop`) is a failure, retried, its tokens charged as estimated, and never an
/// answer, nor cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_off_is_a_failure_never_an_answer() {
    let mut rest = String::from("prices:\n");
    for provider in ["openai", "anthropic", "gemini"] {
        rest.push_str(&format!(
            "  {provider}/cutoff: {{ input: 1.0, output: 1.0 }}\n"
        ));
    }
    rest.push_str(
        "roles:
  cut:
    model: openai/cutoff
    fallbacks: [anthropic/cutoff, gemini/cutoff]
    system: Hi.
    prompt: 'Hello {{ n }}'
    temperature: 0
",
    );
    let (fake, mesh, file, _dir) = setup("llm-cutoff", &rest).await;
    let _agent = mesh.llm_agent("cut", &file);
    let result = mesh.ask("cut", json!({"n": 1}), &[]).await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    let error = &result.failure.as_ref().unwrap().error;
    assert!(
        error.contains("stopped before the provider finished"),
        "{error}"
    );
    for provider in ["openai", "anthropic", "gemini"] {
        assert_eq!(
            fake.calls(provider, "cutoff").len(),
            3,
            "{provider}: retried"
        );
    }
    let usage = mesh
        .event_data(&result.correlationid, EventKind::LlmUsage)
        .await;
    assert_eq!(
        usage.len(),
        9,
        "every call the providers took is charged: {usage:?}"
    );
    assert!(
        usage
            .iter()
            .all(|u| u["failed"] == json!(true) && u["estimated"] == json!(true))
    );
    let cached: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:llm:cache:*", mesh.prefix))
        .query_async(&mut mesh.bus.connection())
        .await
        .unwrap();
    assert!(cached.is_empty(), "a cut-off answer was cached: {cached:?}");
}

/// With `tenants` set, a command naming no tenant, or an unknown one, is refused before
/// any call; a known tenant's is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_known_tenants_spend_when_tenants_are_listed() {
    let (fake, mesh, file, _dir) = setup(
        "llm-tenants",
        "prices: { openai/ok: { input: 0, output: 0 } }
tenants: [acme]
roles:
  writer:
    model: openai/ok
    system: Write.
    prompt: 'About {{ n }}'
    temperature: 0.7
",
    )
    .await;
    let _agent = mesh.llm_agent("writer", &file);
    for fields in [&[][..], &[("tenant", "intruder")][..]] {
        let refused = mesh.ask("writer", json!({"n": 1}), fields).await;
        let failure = refused.failure.expect("refused");
        assert_eq!(failure.errortype.as_str(), "unknown_tenant", "{fields:?}");
    }
    assert!(fake.calls("openai", "ok").is_empty());
    let served = mesh
        .ask("writer", json!({"n": 2}), &[("tenant", "acme")])
        .await;
    assert_eq!(served.status, Status::Completed, "{served:?}");
}

/// A call dropped while its reservation's script waits in Redis (here: clients paused)
/// leaves nothing charged: once the script runs, the reservation nobody claimed is taken
/// back, rather than held until the totals expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_dropped_mid_script_is_taken_back() {
    use mindbus_agents::llm::config::Budgets;
    use mindbus_agents::llm::spend::{Ledger, Payer};
    use mindbus_testkit::servers::{Persistence, PrivateRedis};

    let dir = tempfile::tempdir().unwrap();
    let server = PrivateRedis::start(dir.path(), Persistence::None);
    let conn = mindbus::streams::Redis::open(&server.url().into())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let ledger = Ledger::new(conn.clone(), "t");
    let budgets = Budgets {
        run_usd: Some(1.0),
        ..Budgets::default()
    };
    let payer = Payer {
        run: Some("r".into()),
        tenant: "default".into(),
    };
    let mut pauser = conn.clone();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(300)
        .arg("WRITE")
        .query_async::<()>(&mut pauser)
        .await
        .unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        ledger.reserve(&budgets, &payer, 500_000),
    )
    .await;
    assert!(dropped.is_err(), "the reservation waited for the pause");
    let what = "the dropped call's estimate was taken back";
    crate::testenv::eventually(Duration::from_secs(5), what, || {
        let mut totals = conn.clone();
        async move {
            let reserved: Option<i64> = redis::cmd("HGET")
                .arg("t:llm:{usage}:run:r")
                .arg("reserved_micros")
                .query_async(&mut totals)
                .await
                .ok()?;
            (reserved == Some(0)).then_some(())
        }
    })
    .await;
}

/// An LLM agent's metrics: its call by model and outcome, the call's tokens, cost and
/// latency, the cache's hit and misses, the rate limit's waits and a budget's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agent_counts_calls_tokens_cost_cache_and_refusals() {
    let (fake, mesh, file, _dir) = setup(
        "llm-metrics",
        "prices: { openai/verdict: { input: 1.0, output: 2.0 } }
budgets: { run_usd: 0.00001 }
roles:
  critic:
    model: openai/verdict
    system: Review.
    prompt: '{{ draft }}'
",
    )
    .await;
    let listen = format!("127.0.0.1:{}", mindbus_testkit::servers::free_port());
    let _agent = mesh
        .llm_agent_command("critic", &file)
        .env("MINDBUS_METRICS_LISTEN", &listen)
        .spawn()
        .unwrap();
    let run = [("runid", "run-1")];
    let first = mesh.ask("critic", json!({"draft": "Short."}), &run).await;
    assert_eq!(first.status, Status::Completed, "{first:?}");
    let cost = first.envelope.data.value["usage"]["cost_usd"]
        .as_f64()
        .unwrap();
    assert!(cost > 0.0);
    // The same prompt: answered by the cache, though the run's budget is spent.
    let cached = mesh.ask("critic", json!({"draft": "Short."}), &run).await;
    assert_eq!(cached.envelope.data.value["cached"], json!(true));
    // Another: refused by the budget.
    let refused = mesh.ask("critic", json!({"draft": "Longer."}), &run).await;
    assert_eq!(
        refused.failure.unwrap().errortype.as_str(),
        "budget_exceeded"
    );
    assert_eq!(fake.calls("openai", "verdict").len(), 1);

    let text = metrics_text(&listen).await;
    let model = r#"provider="openai",model="verdict""#;
    let value = |series: &str| sample(&text, series);
    assert_eq!(
        value(&format!(
            "mindbus_llm_calls_total{{{model},outcome=\"ok\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "mindbus_llm_call_duration_seconds_count{{{model}}}"
        )),
        1.0
    );
    let tokens = |kind: &str| {
        value(&format!(
            "mindbus_llm_tokens_total{{{model},type=\"{kind}\"}}"
        ))
    };
    let usage = &first.envelope.data.value["usage"];
    assert_eq!(tokens("input"), usage["tokens_in"].as_f64().unwrap());
    assert_eq!(tokens("output"), usage["tokens_out"].as_f64().unwrap());
    assert!((value(&format!("mindbus_llm_cost_usd{{{model}}}")) - cost).abs() < 1e-12);
    assert_eq!(
        value(&format!("mindbus_llm_budget_refusals_total{{{model}}}")),
        1.0
    );
    assert_eq!(
        value(&format!(
            "mindbus_llm_rate_limit_wait_seconds_count{{{model}}}"
        )),
        2.0
    );
    let cache = |result: &str| {
        value(&format!(
            "mindbus_llm_cache_lookups_total{{role=\"critic\",result=\"{result}\"}}"
        ))
    };
    assert_eq!((cache("hit"), cache("miss")), (1.0, 2.0));
    assert_eq!(
        value(r#"mindbus_commands_handled_total{role="critic",outcome="completed"}"#),
        2.0
    );
}

/// What the process serving metrics at `listen` exports now.
async fn metrics_text(listen: &str) -> String {
    reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of `series` (name and labels, as exported) in a Prometheus exposition.
fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|line| {
        line.strip_prefix(series)
            .is_some_and(|rest| rest.starts_with(' '))
    });
    let line = line.unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}
