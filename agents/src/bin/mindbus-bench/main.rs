//! `mindbus-bench`: command round trips through K echo agent processes, printed beside a
//! raw-Redis baseline measured in the same run (the same XADD, XREADGROUP, XADD result,
//! XACK cycle written with plain redis commands and no MindBus code), with the CPU each
//! party spent per round trip.

mod cpu;
mod load;
mod raw;

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::process::{Child, Command};

use cpu::{PerRoundTrip, Usage};
use load::{Figures, Target};

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Commands sent in the throughput run.
    #[arg(long, default_value_t = 50_000)]
    commands: usize,
    /// Agent processes (MindBus) and consumer processes (raw).
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Round trips in the one-in-flight latency run.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// (internal) The raw-Redis echo consumer.
    RawAgent {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        redis_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Mode::RawAgent { prefix, redis_url }) = args.mode {
        return raw::serve(&redis_url, &prefix).await;
    }
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut info = client.get_multiplexed_async_connection().await?;
    let mut rows = Vec::new();
    for (name, raw) in [("raw redis", true), ("mindbus", false)] {
        let mut target = Target::new(
            &client,
            &format!(
                "bench-{}-{}",
                if raw { "raw" } else { "mb" },
                std::process::id()
            ),
        )
        .await?;
        let children = spawn(&args, &target.prefix, raw)?;
        let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
        target.wait_consumers(args.agents).await?;
        let before = Usage::now(&mut info, &pids).await;
        let many = target.throughput(args.commands).await?;
        let cpu = before.per_round_trip(&Usage::now(&mut info, &pids).await, args.commands);
        let one = target.one_in_flight(args.samples).await?;
        stop(children).await;
        target.cleanup().await?;
        rows.push(Row {
            name,
            many,
            one,
            cpu,
        });
    }
    print_table(&args, &rows);
    Ok(())
}

fn spawn(args: &Args, prefix: &str, raw: bool) -> anyhow::Result<Vec<Child>> {
    let me = std::env::current_exe()?;
    (0..args.agents)
        .map(|_| {
            let mut cmd = if raw {
                let mut cmd = Command::new(&me);
                cmd.args([
                    "raw-agent",
                    "--prefix",
                    prefix,
                    "--redis-url",
                    &args.redis_url,
                ]);
                cmd
            } else {
                let mut cmd = Command::new(me.with_file_name("mindbus-agent"));
                cmd.args([
                    "--role",
                    "echo",
                    "--prefix",
                    prefix,
                    "--redis-url",
                    &args.redis_url,
                    "--concurrency",
                    "512",
                ]);
                cmd
            };
            cmd.env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting an agent (build with --bins)")
        })
        .collect()
}

async fn stop(children: Vec<Child>) {
    for mut child in children {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    }
}

/// One target's figures.
struct Row {
    name: &'static str,
    many: Figures,
    one: Figures,
    cpu: PerRoundTrip,
}

fn print_table(args: &Args, rows: &[Row]) {
    println!(
        "\n{} commands through {} echo process(es); one-in-flight: {} round trips",
        args.commands, args.agents, args.samples
    );
    println!(
        "{:<12} {:>14} {:>10} {:>10}   {:>12} {:>10}",
        "", "many: cmd/s", "p50 ms", "p99 ms", "one: p50 ms", "p99 ms"
    );
    for Row {
        name, many, one, ..
    } in rows
    {
        println!(
            "{name:<12} {:>14.0} {:>10.3} {:>10.3}   {:>12.3} {:>10.3}",
            many.per_second, many.p50_ms, many.p99_ms, one.p50_ms, one.p99_ms
        );
    }
    if let [raw, mb] = rows {
        println!(
            "mindbus/raw: throughput {:.0}%, one-in-flight p50 latency x{:.2}",
            100.0 * mb.many.per_second / raw.many.per_second,
            mb.one.p50_ms / raw.one.p50_ms
        );
    }
    println!("\nCPU per round trip in the throughput run, microseconds");
    println!(
        "{:<12} {:>10} {:>12} {:>8}",
        "", "redis", "consumers", "load"
    );
    for Row { name, cpu, .. } in rows {
        println!(
            "{name:<12} {:>10.1} {:>12.1} {:>8.1}",
            cpu.redis_us, cpu.consumers_us, cpu.load_us
        );
    }
}
