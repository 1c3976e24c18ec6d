//! Measuring for the benchmark binaries: round trips one at a time, and percentiles.

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `work` `samples` times, one after another; returns each duration, sorted.
pub async fn one_at_a_time<F, Fut, E>(samples: usize, mut work: F) -> Result<Vec<Duration>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        work().await?;
        out.push(started.elapsed());
    }
    out.sort();
    Ok(out)
}

/// The `p` percentile (0 to 1) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A MindBus binary built beside the running one, on `redis_url` and `prefix`, quiet, with
/// `env` set; killed when dropped.
pub fn spawn_sibling(
    name: &str,
    args: &[&str],
    redis_url: &str,
    prefix: &str,
    env: &[(&str, &str)],
) -> std::io::Result<tokio::process::Child> {
    let path = std::env::current_exe()?.with_file_name(name);
    tokio::process::Command::new(&path)
        .args(args)
        .args(["--prefix", prefix, "--redis-url", redis_url])
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "starting {} (build the workspace's binaries first): {e}",
                    path.display()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_sorted_samples() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 0.5), 51.0);
        assert_eq!(percentile_ms(&samples, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
