//! A key prefix and a database of its own per test, workflow files in a temporary folder,
//! in-process echo agents (the real runtime) and real `mindbus-orchestrator` processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mindbus::bus::Bus;
use mindbus::config::RedisConfig;
use mindbus::wire::{Command, CommandResult, ORCHESTRATOR_ROLE, Payload, RunCommand, Status};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::testenv::{TestDb, delete_prefix, eventually, redis_url, unique};

/// How a run ended, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
}

pub struct Orch {
    pub prefix: String,
    pub db: TestDb,
    pub bus: Bus,
    pub pool: PgPool,
    workflows: tempfile::TempDir,
    agents: CancellationToken,
}

impl Orch {
    /// A mesh whose orchestrators know `workflows` (file name, YAML).
    pub async fn new(name: &str, workflows: &[(&str, &str)]) -> Self {
        let prefix = unique(&format!("t-orch-{name}"));
        let db = TestDb::new(&format!("orch_{name}")).await;
        let pool = db.pool().await;
        let bus = Bus::connect(&RedisConfig {
            url: redis_url().into(),
            prefix: prefix.clone(),
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (file, yaml) in workflows {
            std::fs::write(dir.path().join(file), yaml).unwrap();
        }
        Self {
            prefix,
            db,
            bus,
            pool,
            workflows: dir,
            agents: CancellationToken::new(),
        }
    }

    /// A mesh with an echo agent and one orchestrator running (kept alive by the `Child`).
    pub async fn up(name: &str, workflows: &[(&str, &str)]) -> (Self, Child) {
        let orch = Self::new(name, workflows).await;
        orch.agent();
        let child = orch.orchestrator(2_000);
        (orch, child)
    }

    /// Starts an echo agent in this process.
    pub fn agent(&self) {
        crate::testenv::spawn_echo(&self.prefix, 512, self.agents.clone());
    }

    /// Starts a `mindbus-orchestrator` process; `resend_after_ms` is how long a committed,
    /// unsent command waits before another orchestrator sends it.
    pub fn orchestrator(&self, resend_after_ms: u64) -> Child {
        self.orchestrator_command(resend_after_ms).spawn().unwrap()
    }

    /// The command that starts a `mindbus-orchestrator` process on this mesh, for a test to
    /// add settings to.
    pub fn orchestrator_command(&self, resend_after_ms: u64) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbus-orchestrator"));
        command
            .args(["--prefix", &self.prefix, "--redis-url", &redis_url()])
            .args(["--database-url", &self.db.url, "--lease-ms", "1000"])
            .arg("--workflows")
            .arg(self.workflows.path())
            .env("RUST_LOG", "warn")
            .env("MINDBUS_ORCHESTRATOR__TICK_MS", "50")
            .env(
                "MINDBUS_ORCHESTRATOR__RESEND_AFTER_MS",
                resend_after_ms.to_string(),
            )
            // Run commands a killed orchestrator was handling are taken over after 1 s.
            .env("MINDBUS_AGENT__LEASE_MS", "1000")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// The `mindbus` CLI against this mesh.
    pub fn cli(&self) -> std::process::Command {
        let path =
            PathBuf::from(env!("CARGO_BIN_EXE_mindbus-orchestrator")).with_file_name("mindbus");
        assert!(
            path.exists(),
            "run the tests with `cargo nextest run --workspace`"
        );
        let mut cmd = std::process::Command::new(path);
        cmd.args(["--prefix", &self.prefix, "--redis-url", &redis_url()]);
        cmd
    }

    /// Runs the CLI with `args` to success and reads what it printed as JSON.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let mut cli = self.cli();
        cli.args(args);
        let out = tokio::task::spawn_blocking(move || cli.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "mindbus {args:?}: {stderr}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("mindbus {args:?}: {e}"))
    }

    /// Publishes a `run.start` (as any producer would, without waiting); the run's id is
    /// the command's id.
    pub async fn start(&self, workflow: &str, input: Value) -> Uuid {
        let command = Command::new(
            RunCommand::Start.as_str(),
            Payload::json(json!({"workflow": workflow, "input": input})),
        );
        self.bus.publish(ORCHESTRATOR_ROLE, &command).await.unwrap();
        mindbus::wire::run_id(&command.envelope.id)
    }

    /// Sends a run command and waits for the orchestrator's answer.
    pub async fn ask(&self, kind: RunCommand, data: Value) -> CommandResult {
        self.bus
            .call(
                ORCHESTRATOR_ROLE,
                Command::new(kind.as_str(), Payload::json(data)),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
            .expect("the orchestrator answers")
    }

    /// The stored end of a run, `None` while it runs (or before the store exists).
    pub async fn ended(&self, run: Uuid) -> Option<Ended> {
        let row: Option<(String, Option<Value>, Option<String>)> = sqlx::query_as(
            "SELECT status, output, error FROM mindbus_runs WHERE id = $1 AND status <> 'running'",
        )
        .bind(run)
        .fetch_optional(&self.pool)
        .await
        .ok()
        .flatten();
        row.map(|(status, output, error)| Ended {
            status,
            output,
            error,
        })
    }

    /// Waits until every run in `runs` ended, and returns how.
    pub async fn wait_ended(&self, runs: &[Uuid], timeout: Duration) -> Vec<Ended> {
        let what = format!("not all of {} runs ended", runs.len());
        eventually(timeout, &what, || async {
            let mut ended = Vec::with_capacity(runs.len());
            for run in runs {
                ended.push(self.ended(*run).await?);
            }
            Some(ended)
        })
        .await
    }

    /// Waits until the orchestrator has stored a run.
    pub async fn wait_stored(&self, run: Uuid) {
        let sql = "SELECT id FROM mindbus_runs WHERE id = $1";
        self.wait_row(sql, run, "was not stored").await;
    }

    /// Waits until a run has sent a command, and returns its id.
    pub async fn wait_command(&self, run: Uuid) -> Uuid {
        let sql = "SELECT command_id FROM mindbus_run_commands WHERE run_id = $1 LIMIT 1";
        self.wait_row(sql, run, "sent no command").await
    }

    /// Waits until `sql` (with `run` as `$1`) returns an id.
    async fn wait_row(&self, sql: &str, run: Uuid, failure: &str) -> Uuid {
        let what = format!("run {run} {failure}");
        eventually(Duration::from_secs(20), &what, || async {
            sqlx::query_scalar(sql)
                .bind(run)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten()
        })
        .await
    }

    /// Waits for the result of an `echo` command (published by the orchestrator, perhaps
    /// answered already) on echo's result stream.
    pub async fn wait_result(&self, command: Uuid) -> CommandResult {
        let stream = self.bus.keys().results("echo");
        let id = mindbus::wire::MessageId::from(command);
        eventually(
            Duration::from_secs(20),
            &format!("a result for {command}"),
            || async {
                let entries = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut self.bus.connection())
                    .await
                    .ok()?;
                mindbus::streams::parse_range(entries)
                    .ok()?
                    .into_iter()
                    .filter_map(|entry| {
                        let origin = mindbus::wire::Origin {
                            stream: &stream,
                            entry: entry.id,
                        };
                        CommandResult::decode(entry.fields?, origin).ok()
                    })
                    .find(|result| result.correlationid == id)
            },
        )
        .await
    }

    /// Every entry of `<prefix>:<suffix>`, as its fields.
    pub async fn entries(&self, suffix: &str) -> Vec<Vec<(String, String)>> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{}:{suffix}", self.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut self.bus.connection())
            .await
            .unwrap();
        entries.into_iter().map(|(_, fields)| fields).collect()
    }

    /// Every run event of `type` `ty` (on the orchestrator's event stream), as (runid,
    /// stepid, data).
    pub async fn events(&self, ty: &str) -> Vec<(String, Option<String>, Value)> {
        let get = |fields: &[(String, String)], name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        self.entries("event:{orchestrator}")
            .await
            .into_iter()
            .filter(|fields| get(fields, "type").as_deref() == Some(ty))
            .map(|fields| {
                let data = get(&fields, "data").unwrap_or_default();
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                (
                    get(&fields, "runid").unwrap_or_default(),
                    get(&fields, "stepid"),
                    data,
                )
            })
            .collect()
    }
}

impl Drop for Orch {
    fn drop(&mut self) {
        self.agents.cancel();
        delete_prefix(&self.prefix);
    }
}

/// Whether a result completed.
pub fn completed(result: &CommandResult) -> bool {
    result.status == Status::Completed
}
