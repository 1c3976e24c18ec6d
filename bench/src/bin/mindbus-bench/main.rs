//! `mindbus-bench`: command round trips through K echo agent processes, printed beside a
//! raw-Redis baseline measured in the same run (a tuned consumer written with plain redis
//! commands and no MindBus code: each round trip carries a batch's results, one XACK and
//! the next blocking read), with the CPU each party spent per round trip. On a Redis Cluster
//! (any node's URL) with `--roles N`, the load spreads over N echo roles, so over the
//! masters their slots are on, and Redis's CPU is summed over every master.

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
    /// Agent processes (MindBus) and consumer processes (raw), per role.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Echo roles the load is spread over (`echo`, or `echo-0` .. `echo-<N-1>`).
    #[arg(long, default_value_t = 1)]
    roles: usize,
    /// Round trips in the one-in-flight latency run.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Rounds of raw and MindBus, in alternating order; the table shows their medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The agents' `agent.events`: `failures` (the default), `outcomes` or `all`.
    #[arg(long, default_value = "failures", value_parser = ["all", "outcomes", "failures"])]
    events: String,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// (internal) The raw-Redis echo consumer.
    RawAgent {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        redis_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Mode::RawAgent {
        prefix,
        role,
        redis_url,
    }) = args.mode
    {
        return raw::serve(&redis_url, &prefix, &role).await;
    }
    let redis = mindbus::streams::Redis::open(&args.redis_url.clone().into())?;
    let mut info = redis.shared().await?;
    let masters = cpu::masters(&mut info).await;
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        // Alternate which goes first, so a machine that speeds up or slows down during the
        // run does not favour one side.
        let raw_first = round % 2 == 0;
        let first = measure(&args, &redis, &mut info, raw_first).await?;
        let second = measure(&args, &redis, &mut info, !raw_first).await?;
        let (raw, mb) = if raw_first {
            (first, second)
        } else {
            (second, first)
        };
        print_round(round + 1, &raw, &mb);
        rounds.push((raw, mb));
    }
    print_table(&args, masters, &rounds);
    Ok(())
}

/// One run of the throughput and one-in-flight measurements against fresh consumers.
async fn measure(
    args: &Args,
    redis: &mindbus::streams::Redis,
    info: &mut mindbus::streams::Connection,
    raw: bool,
) -> anyhow::Result<Row> {
    let name = if raw { "raw" } else { "mb" };
    let prefix = format!("bench-{name}-{}", std::process::id());
    let roles = roles(args.roles);
    let mut target = Target::new(redis, &prefix, &roles).await?;
    let children = spawn(args, &target.prefix, &roles, raw)?;
    let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
    target.wait_consumers(args.agents).await?;
    let before = Usage::now(info, &pids).await;
    let many = target.throughput(args.commands).await?;
    let cpu = before.per_round_trip(&Usage::now(info, &pids).await, args.commands);
    let one = target.one_in_flight(args.samples).await?;
    stop(children).await;
    target.cleanup().await?;
    Ok(Row { many, one, cpu })
}

/// The echo roles of a run with `n` of them.
fn roles(n: usize) -> Vec<String> {
    match n {
        0 | 1 => vec!["echo".to_owned()],
        n => (0..n).map(|i| format!("echo-{i}")).collect(),
    }
}

fn spawn(args: &Args, prefix: &str, roles: &[String], raw: bool) -> anyhow::Result<Vec<Child>> {
    let me = std::env::current_exe()?;
    let each = roles
        .iter()
        .flat_map(|role| std::iter::repeat_n(role, args.agents));
    each.map(|role| {
        let mut cmd = if raw {
            let mut cmd = Command::new(&me);
            cmd.args([
                "raw-agent",
                "--prefix",
                prefix,
                "--role",
                role,
                "--redis-url",
                &args.redis_url,
            ]);
            cmd
        } else {
            let mut cmd = Command::new(me.with_file_name("mindbus-agent"));
            cmd.args([
                "--role",
                role,
                "--echo",
                "--prefix",
                prefix,
                "--redis-url",
                &args.redis_url,
                "--concurrency",
                "512",
            ])
            .env("MINDBUS_AGENT__EVENTS", &args.events);
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

/// One target's figures in one round.
struct Row {
    many: Figures,
    one: Figures,
    cpu: PerRoundTrip,
}

/// MindBus's throughput as a share of raw, and its one-in-flight p50 as a multiple of raw's.
fn ratios(raw: &Row, mb: &Row) -> (f64, f64) {
    (
        100.0 * mb.many.per_second / raw.many.per_second,
        mb.one.p50_ms / raw.one.p50_ms,
    )
}

fn print_round(n: usize, raw: &Row, mb: &Row) {
    let (throughput, latency) = ratios(raw, mb);
    println!(
        "round {n}: raw {:.0} cmd/s, mindbus {:.0} cmd/s ({throughput:.0}%); one in flight p50 \
         {:.3} vs {:.3} ms (x{latency:.2})",
        raw.many.per_second, mb.many.per_second, raw.one.p50_ms, mb.one.p50_ms
    );
}

/// The median of each figure over the rounds.
fn median_row<'a>(rows: impl Iterator<Item = &'a Row> + Clone) -> Row {
    let of = |f: fn(&Row) -> f64| median(rows.clone().map(f).collect());
    Row {
        many: Figures {
            per_second: of(|r| r.many.per_second),
            p50_ms: of(|r| r.many.p50_ms),
            p99_ms: of(|r| r.many.p99_ms),
        },
        one: Figures {
            per_second: of(|r| r.one.per_second),
            p50_ms: of(|r| r.one.p50_ms),
            p99_ms: of(|r| r.one.p99_ms),
        },
        cpu: PerRoundTrip {
            redis_us: of(|r| r.cpu.redis_us),
            consumers_us: of(|r| r.cpu.consumers_us),
            load_us: of(|r| r.cpu.load_us),
        },
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_table(args: &Args, masters: usize, rounds: &[(Row, Row)]) {
    let rows = [
        ("raw redis", median_row(rounds.iter().map(|(raw, _)| raw))),
        ("mindbus", median_row(rounds.iter().map(|(_, mb)| mb))),
    ];
    println!(
        "\n{} commands over {} role(s) on {masters} Redis master(s), {} echo process(es) per role \
         (agent.events: {}); one-in-flight: {} round trips; median of {} round(s)",
        args.commands,
        args.roles.max(1),
        args.agents,
        args.events,
        args.samples,
        rounds.len()
    );
    println!(
        "{:<12} {:>14} {:>10} {:>10}   {:>12} {:>10}",
        "", "many: cmd/s", "p50 ms", "p99 ms", "one: p50 ms", "p99 ms"
    );
    for (name, Row { many, one, .. }) in &rows {
        println!(
            "{name:<12} {:>14.0} {:>10.3} {:>10.3}   {:>12.3} {:>10.3}",
            many.per_second, many.p50_ms, many.p99_ms, one.p50_ms, one.p99_ms
        );
    }
    let throughput = median(rounds.iter().map(|(r, m)| ratios(r, m).0).collect());
    let latency = median(rounds.iter().map(|(r, m)| ratios(r, m).1).collect());
    println!(
        "mindbus/raw (median of the rounds' ratios): throughput {throughput:.0}%, one-in-flight \
         p50 latency x{latency:.2}"
    );
    println!("\nCPU per round trip in the throughput run, microseconds");
    println!(
        "{:<12} {:>10} {:>12} {:>8}",
        "", "redis", "consumers", "load"
    );
    for (name, Row { cpu, .. }) in &rows {
        println!(
            "{name:<12} {:>10.1} {:>12.1} {:>8.1}",
            cpu.redis_us, cpu.consumers_us, cpu.load_us
        );
    }
    let redis = median(
        rounds
            .iter()
            .map(|(r, m)| m.cpu.redis_us / r.cpu.redis_us)
            .collect(),
    );
    println!("mindbus/raw Redis CPU per round trip (median of the rounds' ratios): x{redis:.2}");
}
