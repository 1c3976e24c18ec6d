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
