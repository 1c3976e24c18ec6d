//! The load: the same commands for both targets, pipelined in, results read back from the
//! result stream and matched to their send times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mindbus::streams::parse_read;
use mindbus::wire::{Command, Payload};
use redis::aio::MultiplexedConnection;
use serde_json::json;

/// Commands per pipeline in the throughput run.
const CHUNK: usize = 256;

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A key prefix with its own streams.
pub struct Target {
    pub prefix: String,
    writer: MultiplexedConnection,
    reader: MultiplexedConnection,
}

impl Target {
    pub async fn new(client: &redis::Client, prefix: &str) -> anyhow::Result<Self> {
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        Ok(Self {
            prefix: prefix.into(),
            writer: client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
            reader: client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        })
    }

    fn commands(&self) -> String {
        format!("{}:cmd:{{echo}}", self.prefix)
    }

    fn results(&self) -> String {
        format!("{}:result:{{echo}}", self.prefix)
    }

    pub async fn wait_consumers(&mut self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let consumers: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(self.commands())
                .arg("echo")
                .query_async(&mut self.writer)
                .await;
            if consumers.is_ok_and(|c| c.len() >= n) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("{n} consumers did not join")
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

    /// Sends `n` commands as fast as pipelining allows while reading results back. The
    /// commands are built before the clock starts and the results decoded after it stops,
    /// so the load generator takes as little as it can of the CPU the measured parties share.
    pub async fn throughput(&mut self, n: usize) -> anyhow::Result<Figures> {
        let (index, pipes) = self.pipelines(n);
        let mut reader = self.reader.clone();
        let results = self.results();
        let collect = tokio::spawn(async move { read_results(&mut reader, &results, n).await });
        let mut sent_at = Vec::with_capacity(pipes.len());
        let start = Instant::now();
        for pipe in &pipes {
            sent_at.push(Instant::now());
            pipe.query_async::<()>(&mut self.writer).await?;
        }
        let replies = collect.await??;
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

    /// `n` commands in pipelines of `CHUNK`, and each command id's position.
    fn pipelines(&self, n: usize) -> (HashMap<String, usize>, Vec<redis::Pipeline>) {
        let mut index = HashMap::with_capacity(n);
        let mut pipes = Vec::with_capacity(n.div_ceil(CHUNK));
        for i in 0..n {
            if i % CHUNK == 0 {
                pipes.push(redis::pipe());
            }
            let (id, fields) = Self::command(i);
            let add = pipes.last_mut().expect("pushed above").cmd("XADD");
            add.arg(self.commands()).arg("*");
            for (k, v) in &fields {
                add.arg(k).arg(v.as_slice());
            }
            add.ignore();
            index.insert(id, i);
        }
        (index, pipes)
    }

    /// One command at a time: send, wait for its result, repeat.
    pub async fn one_in_flight(&mut self, samples: usize) -> anyhow::Result<Figures> {
        let mut latencies = Vec::with_capacity(samples);
        let mut after = "$".to_string();
        let results = self.results();
        let start = Instant::now();
        for i in 0..samples {
            let (id, fields) = Self::command(i);
            let sent = Instant::now();
            let mut add = redis::cmd("XADD");
            add.arg(self.commands()).arg("*");
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
                    .query_async(&mut self.reader)
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

    pub async fn cleanup(&mut self) -> anyhow::Result<()> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut self.writer)
            .await?;
        for chunk in keys.chunks(1000) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut self.writer)
                .await?;
        }
        Ok(())
    }
}

fn correlation(fields: &[(String, Vec<u8>)]) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == "correlationid")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Reads the result stream until `n` entries have arrived; each reply is kept undecoded with
/// the time it arrived.
async fn read_results(
    conn: &mut MultiplexedConnection,
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
