//! `mindbus-run-bench`: what orchestration costs. Runs of a chain of S echo steps through a
//! real `mindbus-orchestrator` and `mindbus-agent`, beside the same chains sent as plain
//! commands straight to the same agent (each waiting for the last one's result); then one
//! run fanning out to N echo commands, beside the same N commands sent plainly at once.
//! Both in one run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use mindbus::bus::{Bus, Follower};
use mindbus::config::RedisConfig;
use mindbus::wire::{Command, Event, ORCHESTRATOR_ROLE, Origin, Payload, RunCommand, RunEventKind};
use serde_json::json;
use tokio::process::Child;

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Runs (and plain chains) in the throughput part, all started at once.
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Steps per run.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Runs (and chains) one at a time in the latency part.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Items of the fan-out part (one run with one step over this many items); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    fan_out: usize,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Postgres URL for the run store (a database the benchmark may create tables in).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prefix = format!("bench-run-{}", std::process::id());
    let dir = tempdir_with_chain(args.steps)?;
    let mut children = vec![
        spawn("mindbus-agent", &["--role", "echo"], &args, &prefix)?,
        spawn(
            "mindbus-orchestrator",
            &["--workflows", &dir.to_string_lossy()],
            &args,
            &prefix,
        )?,
    ];
    let bus = Bus::connect(&RedisConfig {
        url: args.redis_url.clone().into(),
        prefix: prefix.clone(),
    })
    .await?;
    wait_ready(&bus).await?;
    let plain_many = timed(|| plain_chains(&bus, args.runs, args.steps)).await?;
    let runs_many = timed(|| runs(&bus, args.runs)).await?;
    let plain_one =
        mindbus_bench::one_at_a_time(args.samples, || plain_chains(&bus, 1, args.steps)).await?;
    let runs_one = mindbus_bench::one_at_a_time(args.samples, || runs(&bus, 1)).await?;
    let fan = if args.fan_out > 0 {
        let plain = timed(|| plain_batch(&bus, args.fan_out)).await?;
        let run = timed(|| fan_out(&bus, args.fan_out)).await?;
        Some((plain, run))
    } else {
        None
    };
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    report(&args, plain_many, runs_many, &plain_one, &runs_one);
    if let Some((plain, run)) = fan {
        report_fan_out(args.fan_out, plain, run);
    }
    Ok(())
}

fn tempdir_with_chain(steps: usize) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mindbus-run-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut yaml =
        String::from("name: chain\nsteps:\n  - id: s1\n    role: echo\n    input: {n: 1}\n");
    for i in 2..=steps {
        yaml.push_str(&format!(
            "  - id: s{i}\n    role: echo\n    needs: [s{p}]\n    input: {{n: \"{{{{ steps.s{p}.output.n + 1 }}}}\"}}\n",
            p = i - 1
        ));
    }
    std::fs::write(dir.join("chain.yaml"), yaml)?;
    std::fs::write(
        dir.join("fan.yaml"),
        "name: fan\ninputs:\n  n: {}\nsteps:\n  - id: fan\n    role: echo\n    for_each: \"range(inputs.n) | list\"\n    input: {i: \"{{ item }}\"}\n",
    )?;
    Ok(dir)
}

fn spawn(name: &str, extra: &[&str], args: &Args, prefix: &str) -> anyhow::Result<Child> {
    let env = &[
        ("DATABASE_URL", args.database_url.as_str()),
        ("MINDBUS_AGENT__CONCURRENCY", "512"),
    ];
    Ok(mindbus_bench::spawn_sibling(
        name,
        extra,
        &args.redis_url,
        prefix,
        env,
    )?)
}

/// Waits until the orchestrator answers (its migrations applied).
async fn wait_ready(bus: &Bus) -> anyhow::Result<()> {
    for _ in 0..60 {
        let ask = Command::new(
            RunCommand::List.as_str(),
            Payload::json(json!({"limit": 1})),
        );
        if bus
            .call(ORCHESTRATOR_ROLE, ask, Duration::from_secs(1))
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    anyhow::bail!("the orchestrator did not answer within a minute")
}

async fn timed<F, Fut>(work: F) -> anyhow::Result<Duration>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    work().await?;
    Ok(started.elapsed())
}

/// `chains` chains of `steps` commands, each command sent when the last one's result came.
async fn plain_chains(bus: &Bus, chains: usize, steps: usize) -> anyhow::Result<()> {
    let results = futures::stream::iter(0..chains)
        .map(|_| async move {
            let mut n = 0;
            for _ in 0..steps {
                let command = Command::new("echo.step", Payload::json(json!({"n": n + 1})));
                let result = bus.call("echo", command, Duration::from_secs(60)).await?;
                n = result.context("no result")?.envelope.data.value["n"]
                    .as_i64()
                    .unwrap_or(0);
            }
            anyhow::Ok(())
        })
        .buffer_unordered(chains.max(1))
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// `count` echo commands sent at once (pipelined on one connection), then every result
/// read from the result stream: the best the bus does for the same work as a fan-out.
async fn plain_batch(bus: &Bus, count: usize) -> anyhow::Result<()> {
    let mut follower = Follower::new(
        bus.redis(),
        vec![bus.keys().results("echo")],
        false,
        Duration::from_millis(500),
    )
    .await?;
    let commands: Vec<Command> = (0..count)
        .map(|i| Command::new("echo.step", Payload::json(json!({"i": i}))))
        .collect();
    let mut open: HashSet<String> = commands.iter().map(|c| c.envelope.id.to_string()).collect();
    let sent = futures::stream::iter(&commands)
        .map(|command| bus.publish("echo", command))
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    sent.into_iter().collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !open.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} results never came",
            open.len()
        );
        for (stream, entry) in follower.next().await? {
            let Some(fields) = entry.fields else { continue };
            let origin = Origin {
                stream: &stream,
                entry: entry.id,
            };
            if let Ok(result) = mindbus::wire::CommandResult::decode(fields, origin) {
                open.remove(&result.correlationid.to_string());
            }
        }
    }
    Ok(())
}

/// One run whose one step fans out to `items` echo commands, until it ends.
async fn fan_out(bus: &Bus, items: usize) -> anyhow::Result<()> {
    let start = Command::new(
        RunCommand::Start.as_str(),
        Payload::json(json!({"workflow": "fan", "input": {"n": items}})),
    );
    wait_ended(bus, vec![start]).await
}

/// Starts `count` runs at once and waits for every one's end event.
async fn runs(bus: &Bus, count: usize) -> anyhow::Result<()> {
    let starts = (0..count)
        .map(|_| {
            Command::new(
                RunCommand::Start.as_str(),
                Payload::json(json!({"workflow": "chain"})),
            )
        })
        .collect();
    wait_ended(bus, starts).await
}

/// Sends `starts` and waits until every run they start completes.
async fn wait_ended(bus: &Bus, starts: Vec<Command>) -> anyhow::Result<()> {
    let mut follower = Follower::new(
        bus.redis(),
        vec![bus.keys().events(mindbus::wire::ORCHESTRATOR_ROLE)],
        false,
        Duration::from_millis(500),
    )
    .await?;
    let mut open: HashSet<String> = HashSet::with_capacity(starts.len());
    for start in &starts {
        open.insert(start.envelope.id.to_string());
        bus.publish(ORCHESTRATOR_ROLE, start).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while !open.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "{} runs did not end", open.len());
        for (stream, entry) in follower.next().await? {
            let Some(fields) = entry.fields else { continue };
            let Ok(event) = Event::decode(
                fields,
                Origin {
                    stream: &stream,
                    entry: entry.id,
                },
            ) else {
                continue;
            };
            if event.envelope.ty == RunEventKind::Ended.as_str()
                && let Some(run) = event.runid
            {
                anyhow::ensure!(
                    event.envelope.data.value["status"] == "completed",
                    "run {run} did not complete: {}",
                    event.envelope.data.value["error"]
                );
                open.remove(&run);
            }
        }
    }
    Ok(())
}

fn report(
    args: &Args,
    plain_many: Duration,
    runs_many: Duration,
    plain_one: &[Duration],
    runs_one: &[Duration],
) {
    let per_s = |d: Duration| args.runs as f64 / d.as_secs_f64();
    println!(
        "chains of {} echo steps; {} at once for throughput, {} one at a time for latency",
        args.steps, args.runs, args.samples
    );
    println!(
        "{:<34} {:>12} {:>10} {:>10}",
        "", "chains/s", "p50 ms", "p99 ms"
    );
    println!(
        "{:<34} {:>12.1} {:>10.2} {:>10.2}",
        "plain commands (baseline)",
        per_s(plain_many),
        mindbus_bench::percentile_ms(plain_one, 0.5),
        mindbus_bench::percentile_ms(plain_one, 0.99)
    );
    println!(
        "{:<34} {:>12.1} {:>10.2} {:>10.2}",
        "workflow runs (orchestrator)",
        per_s(runs_many),
        mindbus_bench::percentile_ms(runs_one, 0.5),
        mindbus_bench::percentile_ms(runs_one, 0.99)
    );
    let added = (mindbus_bench::percentile_ms(runs_one, 0.5)
        - mindbus_bench::percentile_ms(plain_one, 0.5))
        / args.steps as f64;
    println!(
        "runs: {:.0}% of the baseline's throughput; {:.2} ms added per step at p50",
        100.0 * per_s(runs_many) / per_s(plain_many),
        added
    );
}

fn report_fan_out(items: usize, plain: Duration, run: Duration) {
    let per_s = |d: Duration| items as f64 / d.as_secs_f64();
    println!();
    println!("one fan-out of {items} echo commands");
    println!("{:<34} {:>12} {:>10}", "", "items/s", "total s");
    println!(
        "{:<34} {:>12.0} {:>10.2}",
        "plain commands at once (baseline)",
        per_s(plain),
        plain.as_secs_f64()
    );
    println!(
        "{:<34} {:>12.0} {:>10.2}",
        "one run, one fan-out step",
        per_s(run),
        run.as_secs_f64()
    );
    println!(
        "fan-out: {:.0}% of the baseline's throughput",
        100.0 * per_s(run) / per_s(plain)
    );
}
