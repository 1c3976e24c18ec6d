//! Test support: a private key prefix per test, agent processes, and waiting on streams.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use mindbus::bus::Bus;
use mindbus::config::RedisConfig;
use mindbus::streams::parse_read;
use mindbus::wire::{CommandResult, DeadLetter, EntryId, Event, Fields, Origin};
use tokio::process::{Child, Command};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A test's own key prefix on the shared Redis; its keys are deleted on drop.
pub struct Mesh {
    pub url: String,
    pub prefix: String,
    pub bus: Bus,
}

impl Mesh {
    pub async fn new(name: &str) -> Self {
        Self::on(&redis_url(), name).await
    }

    pub async fn on(url: &str, name: &str) -> Self {
        let prefix = format!("t-{name}-{:08x}", rand_u32());
        let config = RedisConfig {
            url: url.to_string().into(),
            prefix: prefix.clone(),
        };
        let bus = Bus::connect(&config).await.expect("redis is reachable");
        Self {
            url: url.into(),
            prefix,
            bus,
        }
    }

    /// Starts `mindbus-agent --role echo` with extra flags.
    pub fn agent(&self, extra: &[&str]) -> Child {
        self.agent_command(extra).spawn().expect("agent starts")
    }

    /// Like [`Mesh::agent`], with environment variables set.
    pub fn agent_with_env(&self, env: &[(&str, &str)]) -> Child {
        self.agent_command(&[])
            .envs(env.iter().copied())
            .spawn()
            .expect("agent starts")
    }

    /// Like [`Mesh::agent`], writing every lifecycle event (`agent.events: all`, not the
    /// default), for tests that watch a command being received and started.
    pub fn timeline_agent(&self, extra: &[&str]) -> Child {
        self.agent_command(extra)
            .env("MINDBUS_AGENT__EVENTS", "all")
            .spawn()
            .expect("agent starts")
    }

    /// Like [`Mesh::agent`], with environment variables set, writing its warnings to `log`.
    pub fn agent_logging(&self, env: &[(&str, &str)], log: std::fs::File) -> Child {
        self.agent_command(&[])
            .envs(env.iter().copied())
            .stderr(log)
            .spawn()
            .expect("agent starts")
    }

    fn agent_command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mindbus-agent"));
        command
            .args([
                "--role",
                "echo",
                "--prefix",
                &self.prefix,
                "--redis-url",
                &self.url,
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            // The default lifecycle events, whatever the shell exports, unless a test asks.
            .env_remove("MINDBUS_AGENT__EVENTS")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs the `mindbus` CLI (built beside the agent) against this mesh.
    pub fn cli(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(mindbus_testkit::binary("mindbus"));
        cmd.args(["--prefix", &self.prefix, "--redis-url", &self.url]);
        cmd
    }

    /// `redis-cli XADD <prefix>:cmd:{echo} * <fields...>`, as a user would type it.
    pub fn xadd_cli(&self, fields: &[&str]) -> String {
        let stream = self.stream("cmd:{echo}");
        let mut args = vec!["XADD", stream.as_str(), "*"];
        args.extend_from_slice(fields);
        redis_cli(&self.url, &args)
    }

    /// Sends `command` to the echo role and waits up to 20 s for its result.
    pub async fn call(&self, command: mindbus::wire::Command) -> CommandResult {
        self.bus
            .call("echo", command, Duration::from_secs(20))
            .await
            .unwrap()
            .expect("a result")
    }

    /// The echo group's pending entries: (entry, consumer, deliveries).
    pub async fn pending(&self) -> Vec<(EntryId, String, u32)> {
        let stream = self.stream("cmd:{echo}");
        mindbus_testkit::pending(&mut self.bus.connection(), &stream, "echo").await
    }

    /// Whether any command's handler ever started (known only to a [`Mesh::timeline_agent`]).
    pub async fn any_started(&self) -> bool {
        self.events()
            .await
            .iter()
            .any(|e| e.kind() == Some(mindbus::wire::EventKind::Started))
    }

    pub fn stream(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Every entry of a stream.
    pub async fn entries(&self, stream: &str) -> Vec<(EntryId, Fields)> {
        let mut out = Vec::new();
        let mut after = EntryId::ZERO.to_string();
        loop {
            let reply = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(10_000)
                .arg("STREAMS")
                .arg(stream)
                .arg(&after)
                .query_async(&mut self.bus.connection())
                .await
                .unwrap();
            let batch: Vec<_> = parse_read(reply)
                .unwrap()
                .into_iter()
                .flat_map(|(_, e)| e)
                .collect();
            let Some(last) = batch.last() else { return out };
            after = last.id.to_string();
            out.extend(batch.into_iter().filter_map(|e| Some((e.id, e.fields?))));
        }
    }

    /// Adds `n` small entries to `stream`, in one pipeline.
    pub async fn fill(&self, stream: &str, n: usize) {
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("n")
                .arg(i)
                .ignore();
        }
        let _: () = pipe.query_async(&mut self.bus.connection()).await.unwrap();
    }

    /// Every dead letter, decoded.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.entries(&self.stream("dlq:{echo}"))
            .await
            .into_iter()
            .map(|(_, fields)| DeadLetter::decode(fields).unwrap())
            .collect()
    }

    /// Every result of `echo` commands, decoded.
    pub async fn results(&self) -> Vec<CommandResult> {
        self.results_of("echo").await
    }

    /// Every result of `role`'s commands, decoded.
    pub async fn results_of(&self, role: &str) -> Vec<CommandResult> {
        let stream = self.bus.keys().results(role);
        self.entries(&stream)
            .await
            .into_iter()
            .map(|(id, f)| {
                CommandResult::decode(
                    f,
                    Origin {
                        stream: &stream,
                        entry: id,
                    },
                )
                .unwrap()
            })
            .collect()
    }

    /// Every event of `echo`, decoded.
    pub async fn events(&self) -> Vec<Event> {
        self.events_of("echo").await
    }

    /// Every event of `role`, decoded.
    pub async fn events_of(&self, role: &str) -> Vec<Event> {
        let stream = self.bus.keys().events(role);
        self.entries(&stream)
            .await
            .into_iter()
            .map(|(id, f)| {
                Event::decode(
                    f,
                    Origin {
                        stream: &stream,
                        entry: id,
                    },
                )
                .unwrap()
            })
            .collect()
    }

    /// Waits until echo's result stream holds `n` entries, or panics after `timeout`.
    pub async fn wait_results(&self, n: usize, timeout: Duration) -> Vec<CommandResult> {
        self.wait_results_of("echo", n, timeout).await
    }

    /// Waits until `role`'s result stream holds `n` entries, or panics after `timeout`.
    pub async fn wait_results_of(
        &self,
        role: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<CommandResult> {
        self.wait_len(&self.bus.keys().results(role), n, timeout)
            .await;
        self.results_of(role).await
    }

    /// Waits until `stream` has at least `n` entries.
    pub async fn wait_len(&self, stream: &str, n: usize, timeout: Duration) {
        let what = format!("{stream} did not reach {n} entries in {timeout:?}");
        crate::testenv::eventually(timeout, &what, || async {
            let len: usize = redis::cmd("XLEN")
                .arg(stream)
                .query_async(&mut self.bus.connection())
                .await
                .ok()?;
            (len >= n).then_some(())
        })
        .await;
    }

    /// Waits until the echo group has `n` consumers that have read at least once.
    pub async fn wait_consumers(&self, n: usize) {
        let what = format!("{n} consumers did not join");
        crate::testenv::eventually(Duration::from_secs(20), &what, || async {
            let consumers: Vec<redis::Value> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(self.stream("cmd:{echo}"))
                .arg("echo")
                .query_async(&mut self.bus.connection())
                .await
                .ok()?;
            (consumers.len() >= n).then_some(())
        })
        .await;
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

pub fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16) ^ (uuid::Uuid::now_v7().as_u128() as u32)
}

/// Results per command id.
pub fn by_command(results: &[CommandResult]) -> HashMap<mindbus::wire::MessageId, usize> {
    let mut counts = HashMap::new();
    for r in results {
        *counts.entry(r.correlationid.clone()).or_default() += 1;
    }
    counts
}

/// Runs `redis-cli` against `url` with `args`, returning its output.
pub fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "redis-cli failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
