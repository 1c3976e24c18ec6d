//! The load: the same commands for both targets, pipelined in, results read back from the
//! result stream and matched to their send times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mindbus::streams::parse_read;
use mindbus::wire::{Command, Payload};
use redis::aio::MultiplexedConnection;
use serde_json::json;

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
        format!("{}:result", self.prefix)
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

    /// Sends `n` commands as fast as pipelining allows while reading results back.
    pub async fn throughput(&mut self, n: usize) -> anyhow::Result<Figures> {
        let mut sent_at = HashMap::with_capacity(n);
        let mut reader = self.reader.clone();
        let results = self.results();
        let collect = tokio::spawn(async move { read_results(&mut reader, &results, n).await });
        let start = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                let (id, fields) = Self::command(i);
                let add = pipe.cmd("XADD").arg(self.commands()).arg("*");
                for (k, v) in &fields {
                    add.arg(k).arg(v.as_slice());
                }
                add.ignore();
                sent_at.insert(id, Instant::now());
            }
            pipe.query_async::<()>(&mut self.writer).await?;
        }
        let arrivals = collect.await??;
        let elapsed = start.elapsed();
        let mut latencies: Vec<f64> = arrivals
            .iter()
            .filter_map(|(id, at)| {
                sent_at
                    .get(id)
                    .map(|s| at.duration_since(*s).as_secs_f64() * 1e3)
            })
            .collect();
        Ok(figures(n as f64 / elapsed.as_secs_f64(), &mut latencies))
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

async fn read_results(
    conn: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let mut out = Vec::with_capacity(n);
    let mut after = "0-0".to_string();
    while out.len() < n {
        let reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(2000)
            .arg("BLOCK")
            .arg(10_000)
            .arg("STREAMS")
            .arg(stream)
            .arg(&after)
            .query_async(conn)
            .await?;
        let entries: Vec<_> = parse_read(reply)?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        anyhow::ensure!(
            !entries.is_empty(),
            "results stopped after {} of {n}",
            out.len()
        );
        let now = Instant::now();
        for entry in entries {
            after = entry.id.to_string();
            if let Some(id) = correlation(&entry.fields.unwrap_or_default()) {
                out.push((id, now));
            }
        }
    }
    Ok(out)
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
