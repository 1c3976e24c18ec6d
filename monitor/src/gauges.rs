//! The streams' gauges: the registered roles' streams sampled every few seconds, their
//! length, and each group's pending entries and lag, for Prometheus. The monitor does it
//! because it already follows every stream; one `XINFO STREAM` and one `XINFO GROUPS` per
//! stream. Only registered roles (those an agent started for) are sampled, so a stream a
//! producer writes to by mistake makes no series; a stream or group that disappears reads
//! 0 from then on.

use std::collections::HashSet;
use std::time::Duration;

use mindbus::bus::{Bus, StreamInfo};
use mindbus::config::RedisConfig;
use mindbus::telemetry::metrics as names;
use tokio_util::sync::CancellationToken;

/// How often the streams are sampled: a little more often than Prometheus scrapes.
const EVERY: Duration = Duration::from_secs(5);

/// One gauge's name and labels.
type Series = (&'static str, Vec<(&'static str, String)>);

/// Samples until `stop` fires.
pub async fn sample_loop(redis: RedisConfig, stop: CancellationToken) {
    let mut bus = None;
    let mut last: HashSet<Series> = HashSet::new();
    while !stop.is_cancelled() {
        if bus.is_none() {
            bus = Bus::connect(&redis).await.ok();
        }
        if let Some(bus) = &bus {
            match sample(bus).await {
                Ok(now) => {
                    let seen: HashSet<Series> =
                        now.iter().map(|(series, _)| series.clone()).collect();
                    for (name, labels) in last.difference(&seen) {
                        metrics::gauge!(*name, labels).set(0.0);
                    }
                    for ((name, labels), value) in now {
                        if let Some(value) = value {
                            metrics::gauge!(name, &labels).set(value);
                        }
                    }
                    last = seen;
                }
                Err(e) => tracing::debug!(error = %e, "sampling the streams failed"),
            }
        }
        tokio::select! { () = stop.cancelled() => break, () = tokio::time::sleep(EVERY) => {} }
    }
}

/// Every gauge's value now (`None`: unknown, left as it was).
async fn sample(bus: &Bus) -> Result<Vec<(Series, Option<f64>)>, mindbus::Error> {
    let roles = bus.roles().await?;
    Ok(bus
        .overview(&roles)
        .await?
        .iter()
        .flat_map(series)
        .collect())
}

fn series(stream: &StreamInfo) -> Vec<(Series, Option<f64>)> {
    let labels = vec![
        ("stream", stream.stream.clone()),
        ("role", stream.role.clone()),
        ("kind", stream.kind.as_str().to_owned()),
    ];
    let mut out = vec![(
        (names::STREAM_LENGTH, labels.clone()),
        Some(stream.length as f64),
    )];
    for group in &stream.groups {
        let mut labels = labels.clone();
        labels.push(("group", group.name.clone()));
        out.push((
            (names::STREAM_PENDING, labels.clone()),
            Some(group.pending as f64),
        ));
        // Redis cannot tell the lag after some deletions.
        out.push(((names::STREAM_LAG, labels), group.lag.map(|lag| lag as f64)));
    }
    out
}
