//! `mindbus tail [STREAM...]`: follow streams live, decoded, with filters.

use std::time::{Duration, Instant};

use clap::Args;
use mindbus::bus::{Bus, Follower};

use super::show::describe;
use super::status::roles;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Streams to follow (default: every role's commands, results, events and dead
    /// letters; the streams of roles that appear later are picked up).
    streams: Vec<String>,
    /// Only entries whose type starts with this.
    #[arg(long = "type", env = "MINDBUS_TAIL_TYPE")]
    ty: Option<String>,
    /// Only entries of this role.
    #[arg(long, env = "MINDBUS_TAIL_ROLE")]
    role: Option<String>,
    /// Only entries about this command id.
    #[arg(long, env = "MINDBUS_TAIL_ID")]
    id: Option<String>,
    /// Print the streams' history first.
    #[arg(long, env = "MINDBUS_TAIL_FROM_START")]
    from_start: bool,
    /// Exit after printing this many entries.
    #[arg(long, env = "MINDBUS_TAIL_COUNT")]
    count: Option<usize>,
    /// Exit after this many milliseconds.
    #[arg(long, env = "MINDBUS_TAIL_FOR_MS")]
    for_ms: Option<u64>,
}

pub async fn run(bus: &Bus, args: TailArgs) -> anyhow::Result<()> {
    let automatic = args.streams.is_empty();
    let mut streams = args.streams.clone();
    if automatic {
        streams = every_stream(bus).await?;
    }
    let count = streams.len();
    let mut follower = Follower::new(
        bus.redis(),
        streams,
        args.from_start,
        Duration::from_millis(500),
    )
    .await?;
    // On stderr, so stdout holds entries only: from here on, nothing written is missed.
    eprintln!("following {count} stream(s)");
    let started = Instant::now();
    let mut rescanned = Instant::now();
    let mut printed = 0;
    loop {
        if args
            .for_ms
            .is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms))
        {
            return Ok(());
        }
        if automatic && rescanned.elapsed() > Duration::from_secs(2) {
            every_stream(bus)
                .await?
                .into_iter()
                .for_each(|s| follower.add(s));
            rescanned = Instant::now();
        }
        for (stream, entry) in follower.next().await? {
            let line = describe(bus.keys(), &stream, &entry);
            if !matches(&args, &line) {
                continue;
            }
            let short = stream
                .strip_prefix(bus.keys().prefix())
                .unwrap_or(&stream)
                .trim_start_matches(':');
            println!(
                "{} {short:<14} {:<28} id={} corr={} role={} {}",
                entry.id, line.ty, line.id, line.correlation, line.role, line.detail
            );
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
}

/// Every stream of every role.
async fn every_stream(bus: &Bus) -> anyhow::Result<Vec<String>> {
    Ok(roles(bus)
        .await?
        .iter()
        .flat_map(|role| bus.keys().role_streams(role))
        .collect())
}

fn matches(args: &TailArgs, line: &super::show::Line) -> bool {
    args.ty
        .as_ref()
        .is_none_or(|t| line.ty.starts_with(t.as_str()))
        && args.role.as_ref().is_none_or(|r| *r == line.role)
        && args
            .id
            .as_ref()
            .is_none_or(|id| *id == line.id || *id == line.correlation)
}
