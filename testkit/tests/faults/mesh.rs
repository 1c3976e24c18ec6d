//! A mesh of real processes under one key prefix: agents, monitors and orchestrators are
//! the release binaries' debug builds, started and killed like any process.

use std::time::Duration;

use mindbus::bus::Bus;
use mindbus::config::RedisConfig;
use mindbus::keys::Stream;
use mindbus::wire::{Command, CommandResult, MessageId, Origin, Payload};
use mindbus_testkit::{Tally, binary, entries};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command as Process};
use tokio::time::Instant;

pub struct Mesh {
    pub url: String,
    pub prefix: String,
    pub bus: Bus,
    /// The role the agents serve (with the echo handler) and commands go to.
    pub role: String,
}

impl Mesh {
    /// A mesh of `echo` agents on the Redis at `url`.
    pub async fn on(url: &str, name: &str) -> Self {
        Self::of_role(url, name, "echo").await
    }

    /// A mesh of echo agents serving `role`.
    pub async fn of_role(url: &str, name: &str, role: &str) -> Self {
        let prefix = crate::testenv::unique(&format!("t-fault-{name}"));
        let config = RedisConfig {
            url: url.to_owned().into(),
            prefix: prefix.clone(),
        };
        let bus = Bus::connect(&config).await.expect("redis is reachable");
        Self {
            url: url.to_owned(),
            prefix,
            bus,
            role: role.to_owned(),
        }
    }

    /// The key of one of the role's streams.
    pub fn role_stream(&self, kind: Stream) -> String {
        self.bus.keys().stream(kind, &self.role)
    }

    /// Starts one of the mesh's binaries on this prefix.
    pub fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
        Process::new(binary(name))
            .args(["--prefix", &self.prefix, "--redis-url", &self.url])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"))
    }

    /// `n` echo agents: with a one-second lease and 16 slots, or the shipped defaults.
    pub fn agents(&self, n: usize) -> Vec<Child> {
        self.agents_with(n, &[])
    }

    /// Like [`Mesh::agents`], writing every lifecycle event (`agent.events: all`), for a
    /// test that checks none is written twice.
    pub fn timeline_agents(&self, n: usize) -> Vec<Child> {
        self.agents_with(n, &[("MINDBUS_AGENT__EVENTS", "all")])
    }

    fn agents_with(&self, n: usize, env: &[(&str, &str)]) -> Vec<Child> {
        let mut flags = vec!["--role", &self.role, "--echo"];
        if !shipped_defaults() {
            flags.extend(["--lease-ms", "1000", "--concurrency", "16"]);
        }
        (0..n)
            .map(|_| self.spawn("mindbus-agent", &flags, env))
            .collect()
    }

    /// Publishes `n` echo commands (each working `sleep_ms`) and returns their ids.
    pub async fn publish(&self, n: usize, sleep_ms: u64) -> Vec<MessageId> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let command = echo(i, sleep_ms);
            self.bus.publish(&self.role, &command).await.unwrap();
            ids.push(command.envelope.id);
        }
        ids
    }

    /// Every accepted result.
    pub async fn results(&self) -> Vec<CommandResult> {
        let stream = self.role_stream(Stream::Results);
        entries(&mut self.bus.connection(), &stream)
            .await
            .into_iter()
            .filter_map(|(entry, fields)| {
                CommandResult::decode(
                    fields,
                    Origin {
                        stream: &stream,
                        entry,
                    },
                )
                .ok()
            })
            .collect()
    }

    /// The tally of `sent` by the accepted results.
    pub async fn tally(&self, sent: &[MessageId]) -> Tally {
        let results = self.results().await;
        Tally::of(sent, results.iter().map(|r| &r.correlationid))
    }

    /// Waits until every command of `sent` has a result (or `timeout` passes), and returns
    /// when the last one came, measured from `since`.
    pub async fn wait_answered(
        &self,
        sent: &[MessageId],
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            let tally = self.tally(sent).await;
            if tally.lost.is_empty() || Instant::now() >= deadline {
                return since.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Entries of the echo group pending for the agent with process id `pid` (consumer
    /// names carry the pid).
    pub async fn pending_of(&self, pid: u32) -> usize {
        let stream = self.role_stream(Stream::Commands);
        let marker = format!("-{pid}-");
        mindbus_testkit::pending(&mut self.bus.connection(), &stream, &self.role)
            .await
            .iter()
            .filter(|(_, consumer, _)| consumer.contains(&marker))
            .count()
    }

    /// How many events of `ty` the event stream holds.
    pub async fn events_of(&self, ty: &str) -> usize {
        let stream = self.role_stream(Stream::Events);
        entries(&mut self.bus.connection(), &stream)
            .await
            .iter()
            .filter(|(_, fields)| mindbus::wire::field_text(fields, "type") == Some(ty))
            .count()
    }

    /// Events written more than once: the same type, command and attempt again.
    pub async fn repeated_events(&self) -> usize {
        let stream = self.role_stream(Stream::Events);
        let mut seen = std::collections::HashSet::new();
        entries(&mut self.bus.connection(), &stream)
            .await
            .iter()
            .map(|(_, fields)| {
                let field = |name| mindbus::wire::field_text(fields, name).map(str::to_owned);
                (field("type"), field("correlationid"), field("attempt"))
            })
            .filter(|event| !seen.insert(event.clone()))
            .count()
    }

    /// Waits until the result stream holds `n` entries.
    pub async fn wait_results(&self, n: usize, timeout: Duration) {
        let stream = self.role_stream(Stream::Results);
        let what = format!("{stream} did not reach {n} entries");
        crate::testenv::eventually(timeout, &what, || async {
            let len: usize = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut self.bus.connection())
                .await
                .ok()?;
            (len >= n).then_some(())
        })
        .await
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if self.url == crate::testenv::redis_url() {
            crate::testenv::delete_prefix(&self.prefix);
        }
    }
}

/// Whether the suite runs at the shipped defaults (`MINDBUS_FAULT_DEFAULTS=1`: leases of
/// 30 s for agents and the monitor, 10 s for orchestrators, 64 slots) rather than with
/// one-second leases, which keep the suite quick.
pub fn shipped_defaults() -> bool {
    std::env::var("MINDBUS_FAULT_DEFAULTS").is_ok_and(|v| v == "1")
}

/// The agents' lease in this run.
pub fn agent_lease() -> Duration {
    if shipped_defaults() {
        Duration::from_millis(mindbus::config::AgentConfig::default().lease_ms)
    } else {
        Duration::from_secs(1)
    }
}

/// An echo command carrying `i`, working `sleep_ms`.
pub fn echo(i: usize, sleep_ms: u64) -> Command {
    let data: Value = serde_json::json!({"i": i, "sleep_ms": sleep_ms});
    Command::new("echo.say", Payload::json(data))
}

/// Sends `signal` to a child process.
pub fn signal(child: &Child, signal: Signal) {
    let pid = child.id().expect("the process runs");
    kill(Pid::from_raw(pid as i32), signal).expect("signal sent");
}
