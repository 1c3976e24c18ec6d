//! The AI team end to end: the shipped `article` workflow and `config/agents.yaml`, real
//! writer, critic and editor processes on the real local model (SmolLM2 through
//! llama.cpp's OpenAI-compatible server), the monitor recording into Postgres.
//!
//! The roles' first model is OpenAI, given a canary key and pointed at a local endpoint
//! that answers 500: every call tries it with the key, then falls back to the local model.
//! Afterwards the canary must appear nowhere: not in Redis, not in a log line, not in a
//! table.
//!
//! Needs `MINDBUS_LOCAL_MODEL_URL` (`scripts/test.sh` starts the model and sets it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::process::Child;

use crate::support::Orch;
use crate::testenv::{eventually, redis_url};

const ARTICLE: &str = include_str!("../../../config/workflows/article.yaml");

fn local_model_url() -> String {
    std::env::var("MINDBUS_LOCAL_MODEL_URL").expect(
        "MINDBUS_LOCAL_MODEL_URL is not set: run ./scripts/test.sh, or start the model with \
         scripts/local-model.sh start and export the URL it prints",
    )
}

/// An OpenAI endpoint that is down, recording the keys it was sent.
async fn openai_down() -> (String, Arc<Mutex<Vec<String>>>) {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = keys.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                seen.lock().unwrap().push(auth.to_string());
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"error":{"message":"down","type":"server_error"}}"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, keys)
}

fn sibling(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mindbus-orchestrator")).with_file_name(name)
}

fn spawn_logged(cmd: &mut tokio::process::Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_article_workflow_runs_on_the_local_model_and_leaks_no_key() {
    let local = local_model_url();
    let canary = format!("sk-canary-{}", uuid::Uuid::now_v7().simple());
    let (openai, keys) = openai_down().await;
    let (orch, _orchestrator) = Orch::up("article", &[("article.yaml", ARTICLE)]).await;
    let logs = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let common = |cmd: &mut tokio::process::Command| {
        cmd.args(["--prefix", &orch.prefix, "--redis-url", &redis_url()])
            .env("RUST_LOG", "debug")
            .env("OPENAI_API_KEY", &canary)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env("MINDBUS_LLM__PROVIDERS__OPENAI__BASE_URL", &openai)
            .env("MINDBUS_LLM__PROVIDERS__LOCAL__BASE_URL", &local)
            .env("MINDBUS_LLM__RETRY__BASE_MS", "10")
            .env("MINDBUS_LLM__RETRY__ATTEMPTS", "2");
    };
    let mut children = Vec::new();
    let mut monitor = tokio::process::Command::new(sibling("mindbus-monitor"));
    common(&mut monitor);
    monitor.args(["--database-url", &orch.db.url]);
    children.push(spawn_logged(&mut monitor, &logs.path().join("monitor.log")));
    for role in ["writer", "critic", "editor"] {
        let mut agent = tokio::process::Command::new(sibling("mindbus-agent"));
        common(&mut agent);
        agent
            .args(["--role", role, "--llm-config"])
            .arg(root.join("config/agents.yaml"));
        children.push(spawn_logged(
            &mut agent,
            &logs.path().join(format!("{role}.log")),
        ));
    }

    let run = orch
        .start("article", serde_json::json!({"topic": "why bees matter"}))
        .await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(300)).await;
    let ended = &ended[0];
    assert_eq!(ended.status, "completed", "{:?}", ended.error);
    let output = ended.output.clone().unwrap();
    println!("article output: {output:#}");
    assert!(
        output["text"]
            .as_str()
            .is_some_and(|t| !t.trim().is_empty()),
        "{output}"
    );
    assert!(output["approved"].is_boolean(), "{output}");
    let rounds = output["rounds"].as_u64().unwrap();
    assert!((1..=2).contains(&rounds), "{output}");
    assert!(output["revisions"].as_u64().unwrap() <= rounds);

    // Usage is recorded in Postgres by the monitor: one row per call, totals per run.
    let pool = orch.pool.clone();
    let run_id = run.to_string();
    let (calls, tokens_out, model): (i64, i64, String) = eventually(
        Duration::from_secs(30),
        "the run's usage in Postgres",
        || {
            let pool = pool.clone();
            let run_id = run_id.clone();
            async move {
                let row: Option<(i64, i64, String)> = sqlx::query_as(
                    "SELECT u.calls, u.tokens_out, (SELECT min(model) FROM mindbus_llm_usage l WHERE l.run_id = u.run_id)
                     FROM mindbus_llm_run_usage u WHERE u.run_id = $1",
                )
                .bind(&run_id)
                .fetch_optional(&pool)
                .await
                .map_err(|e| eprintln!("usage query: {e}"))
                .ok()
                .flatten();
                row.filter(|(calls, _, _)| *calls as u64 > rounds)
            }
        },
    )
    .await;
    assert!(tokens_out > 0);
    assert_eq!(model, "local/smollm2");
    println!("usage: {calls} calls, {tokens_out} tokens out");

    // The key was used: every call tried OpenAI with it first.
    let sent = keys.lock().unwrap().clone();
    assert!(!sent.is_empty() && sent.iter().all(|k| *k == format!("Bearer {canary}")));
    drop(children);
    assert_canary_absent(&orch, &canary, logs.path()).await;
}

async fn assert_canary_absent(orch: &Orch, canary: &str, logs: &Path) {
    for entry in std::fs::read_dir(logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.is_empty(), "{} is empty", path.display());
        assert!(!text.contains(canary), "the key is in {}", path.display());
    }
    let mut conn = orch.bus.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", orch.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() > 3);
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut cmd = match kind.as_str() {
            // Expired since it was listed (rate-limit state lives for about a second).
            "none" => continue,
            "stream" => redis::cmd("XRANGE"),
            "hash" => redis::cmd("HGETALL"),
            "string" => redis::cmd("GET"),
            "set" => redis::cmd("SMEMBERS"),
            "zset" => redis::cmd("ZRANGE"),
            _ => redis::cmd("LRANGE"),
        };
        cmd.arg(&key);
        match kind.as_str() {
            "stream" => cmd.arg("-").arg("+"),
            "zset" | "list" => cmd.arg(0).arg(-1),
            _ => &mut cmd,
        };
        let dump: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        assert!(
            !format!("{dump:?}").contains(canary),
            "the key is in redis {key}"
        );
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&orch.pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "mindbus_entries"));
    for table in tables {
        let found: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{table}\" t WHERE t::text LIKE '%' || $1 || '%')"
        ))
        .bind(canary)
        .fetch_one(&orch.pool)
        .await
        .unwrap();
        assert!(!found, "the key is in table {table}");
    }
}
