//! `mindbus-gateway-bench`: an HTTP request to an echo result through a real
//! `mindbus-gateway`, beside the same commands sent straight over the bus and awaited the
//! way the gateway awaits them (one follower of the role's result stream for all waits), in one
//! run, against the same echo agent: the difference is the gateway's own cost.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use mindbus::bus::Bus;
use mindbus::config::RedisConfig;
use mindbus::wire::{Command, Payload};
use serde_json::json;
use tokio::process::Child;

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Commands in the throughput part.
    #[arg(long, default_value_t = 10_000)]
    commands: usize,
    /// Requests in flight in the throughput part.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Round trips one at a time, for latency.
    #[arg(long, default_value_t = 1_000)]
    samples: usize,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

const KEY: &str = "bench-key";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prefix = format!("bench-gw-{}", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut children = vec![
        spawn("mindbus-agent", &["--role", "echo"], &args, &prefix)?,
        spawn(
            "mindbus-gateway",
            &["--listen", &format!("127.0.0.1:{port}")],
            &args,
            &prefix,
        )?,
    ];
    let bus = Bus::connect(&RedisConfig {
        url: args.redis_url.clone().into(),
        prefix: prefix.clone(),
    })
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    wait_ready(&http, &base).await?;
    // The gateway takes commands only for roles an agent has started for.
    let mut registered = false;
    for _ in 0..200 {
        registered = bus.has_role("echo").await?;
        if registered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(registered, "the echo agent did not start");
    let direct = || async { over_bus(&bus).await };
    let gateway = || async { over_http(&http, &base).await };
    let bus_many = throughput(args.commands, args.concurrency, direct).await?;
    let http_many = throughput(args.commands, args.concurrency, gateway).await?;
    let bus_one = mindbus_bench::one_at_a_time(args.samples, direct).await?;
    let http_one = mindbus_bench::one_at_a_time(args.samples, gateway).await?;
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(bus.keys().commands("echo"))
        .query_async(&mut bus.connection())
        .await;
    println!(
        "{} commands, {} in flight; {} one at a time",
        args.commands, args.concurrency, args.samples
    );
    println!(
        "{:<28} {:>12} {:>10} {:>10}",
        "", "commands/s", "p50 ms", "p99 ms"
    );
    for (name, many, one) in [
        ("bus (baseline)", bus_many, &bus_one),
        ("http gateway", http_many, &http_one),
    ] {
        println!(
            "{name:<28} {many:>12.0} {:>10.2} {:>10.2}",
            mindbus_bench::percentile_ms(one, 0.5),
            mindbus_bench::percentile_ms(one, 0.99)
        );
    }
    println!(
        "gateway: {:.0}% of the bus's throughput; p50 x{:.2}, p99 x{:.2}",
        100.0 * http_many / bus_many,
        mindbus_bench::percentile_ms(&http_one, 0.5) / mindbus_bench::percentile_ms(&bus_one, 0.5),
        mindbus_bench::percentile_ms(&http_one, 0.99)
            / mindbus_bench::percentile_ms(&bus_one, 0.99)
    );
    Ok(())
}

fn spawn(name: &str, extra: &[&str], args: &Args, prefix: &str) -> anyhow::Result<Child> {
    let env = &[
        ("MINDBUS_GATEWAY_API_KEY", KEY),
        ("MINDBUS_AGENT__CONCURRENCY", "256"),
        ("MINDBUS_GATEWAY__METRICS_LISTEN", "127.0.0.1:0"),
    ];
    Ok(mindbus_bench::spawn_sibling(
        name,
        extra,
        &args.redis_url,
        prefix,
        env,
    )?)
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the gateway did not become ready")
}

async fn over_bus(bus: &Bus) -> anyhow::Result<()> {
    let command = Command::new("echo.say", Payload::json(json!({"text": "hi"})));
    bus.call("echo", command, Duration::from_secs(30))
        .await?
        .context("no result")?;
    Ok(())
}

async fn over_http(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/v1/roles/echo/commands?wait_ms=30000"))
        .bearer_auth(KEY)
        .json(&json!({"type": "echo.say", "data": {"text": "hi"}}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    Ok(())
}

/// Commands per second with `concurrency` in flight.
async fn throughput<F, Fut>(commands: usize, concurrency: usize, one: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..commands)
        .map(|_| one())
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(commands as f64 / started.elapsed().as_secs_f64())
}
