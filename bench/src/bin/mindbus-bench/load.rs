//! The load: the same commands for both targets, pipelined in, results read back from the
//! result stream and matched to their send times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mindbus::streams::{Connection, Redis, parse_read};
use mindbus::wire::{Command, Payload};
use serde_json::json;

/// Commands per pipeline in the throughput run (each pipeline to one role).
const CHUNK: usize = 256;

/// A pipeline of commands to one role: the role's index, the commands in it, the pipeline.
type RolePipeline = (usize, usize, redis::Pipeline);

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A key prefix with its own streams, and the roles the load goes to (in turn, a pipeline
/// each; on a Redis Cluster each role's streams are on the master of its slot).
pub struct Target {
    pub prefix: String,
    roles: Vec<String>,
    redis: Redis,
    writer: Connection,
}

impl Target {
    pub async fn new(redis: &Redis, prefix: &str, roles: &[String]) -> anyhow::Result<Self> {
        Ok(Self {
            prefix: prefix.into(),
            roles: roles.to_vec(),
            redis: redis.clone(),
            writer: redis.shared().await?,
        })
    }

    fn commands(&self, role: &str) -> String {
        format!("{}:cmd:{{{role}}}", self.prefix)
    }

    fn results(&self, role: &str) -> String {
        format!("{}:result:{{{role}}}", self.prefix)
    }

    /// Waits until every role's group has `n` consumers.
    pub async fn wait_consumers(&mut self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for role in self.roles.clone() {
            loop {
                let consumers: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(self.commands(&role))
                    .arg(&role)
                    .query_async(&mut self.writer)
                    .await;
                if consumers.is_ok_and(|c| c.len() >= n) {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{n} consumers of {role} did not join"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn command(i: usize) -> (String, Vec<(String, Vec<u8>)>) {
        let command = Command::new(
            "echo.say",
            Payload::json(json!({"i": i, "text": "benchmark"})),
        );
        (
            command.envelope.id.to_string(),
            command.encode().unwrap_or_default(),
        )
    }

    /// Sends `n` commands as fast as pipelining allows while reading results back (a reader
    /// per role). The commands are built before the clock starts and the results decoded
    /// after it stops, so the load generator takes as little as it can of the CPU the
    /// measured parties share.
    pub async fn throughput(&mut self, n: usize) -> anyhow::Result<Figures> {
        let (index, pipes) = self.pipelines(n);
        let mut collects = Vec::new();
        for (r, role) in self.roles.iter().enumerate() {
            let expected: usize = pipes
                .iter()
                .filter(|(of, _, _)| *of == r)
                .map(|(_, k, _)| k)
                .sum();
            let mut reader = self.redis.dedicated(READ_BLOCK).await?;
            let results = self.results(role);
            collects.push(tokio::spawn(async move {
                read_results(&mut reader, &results, expected).await
            }));
        }
        let mut sent_at = Vec::with_capacity(pipes.len());
        let start = Instant::now();
        for (_, _, pipe) in &pipes {
            sent_at.push(Instant::now());
            pipe.query_async::<()>(&mut self.writer).await?;
        }
        let mut replies = Vec::new();
        for collect in collects {
            replies.extend(collect.await??);
        }
        let elapsed = start.elapsed();
        let mut latencies = Vec::with_capacity(n);
        for (reply, at) in replies {
            for (_, entries) in parse_read(reply)? {
                for entry in entries {
                    let sent = correlation(&entry.fields.unwrap_or_default())
                        .and_then(|id| index.get(&id))
                        .map(|i| sent_at[i / CHUNK]);
                    if let Some(sent) = sent {
                        latencies.push(at.duration_since(sent).as_secs_f64() * 1e3);
                    }
                }
            }
        }
        Ok(figures(n as f64 / elapsed.as_secs_f64(), &mut latencies))
    }

    /// `n` commands in pipelines of `CHUNK`, the roles taking them in turn (each pipeline
    /// with its role's index and size), and each command id's position.
    fn pipelines(&self, n: usize) -> (HashMap<String, usize>, Vec<RolePipeline>) {
        let mut index = HashMap::with_capacity(n);
        let mut pipes: Vec<RolePipeline> = Vec::with_capacity(n.div_ceil(CHUNK));
        for i in 0..n {
            if i % CHUNK == 0 {
                let role = pipes.len() % self.roles.len();
                pipes.push((role, 0, redis::pipe()));
            }
            let (role, size, pipe) = pipes.last_mut().expect("pushed above");
            let (id, fields) = Self::command(i);
            let add = pipe.cmd("XADD");
            add.arg(self.commands(&self.roles[*role])).arg("*");
            for (k, v) in &fields {
                add.arg(k).arg(v.as_slice());
            }
            add.ignore();
            *size += 1;
            index.insert(id, i);
        }
        (index, pipes)
    }

    /// One command at a time to the first role: send, wait for its result, repeat.
    pub async fn one_in_flight(&mut self, samples: usize) -> anyhow::Result<Figures> {
        let mut latencies = Vec::with_capacity(samples);
        let mut after = "$".to_string();
        let role = self.roles[0].clone();
        let (commands, results) = (self.commands(&role), self.results(&role));
        let mut reader = self.redis.dedicated(READ_BLOCK).await?;
        let start = Instant::now();
        for i in 0..samples {
            let (id, fields) = Self::command(i);
            let sent = Instant::now();
            let mut add = redis::cmd("XADD");
            add.arg(&commands).arg("*");
            for (k, v) in &fields {
                add.arg(k).arg(v.as_slice());
            }
            if after == "$" {
                let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&results)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut self.writer)
                    .await?;
                after = last.ids.first().map_or("0-0".into(), |l| l.id.clone());
            }
            let _: String = add.query_async(&mut self.writer).await?;
            loop {
                let reply = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(10)
                    .arg("BLOCK")
                    .arg(5000)
                    .arg("STREAMS")
                    .arg(&results)
                    .arg(&after)
                    .query_async(&mut reader)
                    .await?;
                let entries: Vec<_> = parse_read(reply)?
                    .into_iter()
                    .flat_map(|(_, e)| e)
                    .collect();
                anyhow::ensure!(!entries.is_empty(), "no result within 5 s");
                let mut done = false;
                for entry in entries {
                    after = entry.id.to_string();
                    done |= correlation(&entry.fields.unwrap_or_default()).as_deref()
                        == Some(id.as_str());
                }
                if done {
                    break;
                }
            }
            latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        Ok(figures(
            samples as f64 / start.elapsed().as_secs_f64(),
            &mut latencies,
        ))
    }

    /// Deletes every key of the prefix, on every master.
    pub async fn cleanup(&mut self) -> anyhow::Result<()> {
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000);
            cmd
        };
        let mut keys = Vec::new();
        for (node, mut reply) in self.writer.on_every_master(&scan(0)).await? {
            loop {
                let (next, found): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                reply = self.writer.on_node(node.as_deref(), &scan(next)).await?;
            }
        }
        // One key per request: on a cluster they are in many slots.
        for key in keys {
            let _: () = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut self.writer)
                .await?;
        }
        Ok(())
    }
}

/// The longest blocking read of results.
const READ_BLOCK: Duration = Duration::from_secs(10);

fn correlation(fields: &[(String, Vec<u8>)]) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == "correlationid")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Reads the result stream until `n` entries have arrived; each reply is kept undecoded with
/// the time it arrived.
async fn read_results(
    conn: &mut Connection,
    stream: &str,
    n: usize,
) -> anyhow::Result<Vec<(redis::Value, Instant)>> {
    let mut replies = Vec::new();
    let mut after = "0-0".to_string();
    let mut arrived = 0;
    while arrived < n {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(2000)
            .arg("BLOCK")
            .arg(10_000)
            .arg("STREAMS")
            .arg(stream)
            .arg(&after)
            .query_async(conn)
            .await?;
        let now = Instant::now();
        let (count, last) = tally(&reply);
        anyhow::ensure!(count > 0, "results stopped after {arrived} of {n}");
        arrived += count;
        after = last.unwrap_or(after);
        replies.push((reply, now));
    }
    Ok(replies)
}

/// How many entries an `XREAD` reply of one stream holds, and the last one's id.
fn tally(reply: &redis::Value) -> (usize, Option<String>) {
    use redis::Value::{Array, BulkString};
    let Array(streams) = reply else {
        return (0, None);
    };
    let Some(Array(pair)) = streams.first() else {
        return (0, None);
    };
    let Some(Array(entries)) = pair.get(1) else {
        return (0, None);
    };
    let last = match entries.last() {
        Some(Array(entry)) => match entry.first() {
            Some(BulkString(id)) => Some(String::from_utf8_lossy(id).into_owned()),
            _ => None,
        },
        _ => None,
    };
    (entries.len(), last)
}

fn figures(per_second: f64, latencies: &mut [f64]) -> Figures {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Figures {
        per_second,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}
