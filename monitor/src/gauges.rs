//! The streams' gauges: the registered roles' streams sampled every few seconds, their
//! length, and each group's pending entries and lag, for Prometheus. The monitor does it
//! because it already follows every stream; one `XINFO STREAM` and one `XINFO GROUPS` per
//! stream. Only registered roles (those an agent started for, with a valid name) are
//! sampled, at most [`MAX_ROLES`] of them and [`MAX_GROUPS`] groups a stream, so a stream a
//! producer writes to by mistake makes no series and none grows without bound; a stream or
//! group that disappears reads 0 from then on. A failed look changes nothing.

use std::collections::HashSet;
use std::time::Duration;

use mindbus::bus::{Bus, StreamInfo};
use mindbus::config::RedisConfig;
use mindbus::telemetry::metrics as names;
use tokio_util::sync::CancellationToken;

/// How often the streams are sampled: a little more often than Prometheus scrapes.
const EVERY: Duration = Duration::from_secs(5);

/// Most roles sampled (in name order).
pub const MAX_ROLES: usize = 256;

/// Most groups of one stream sampled (the role's own and the monitor's first).
pub const MAX_GROUPS: usize = 8;

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
                    // A series whose value is unknown now is kept as it was, if it was set.
                    let seen: HashSet<Series> = now
                        .iter()
                        .filter(|(series, value)| value.is_some() || last.contains(series))
                        .map(|(series, _)| series.clone())
                        .collect();
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
    let mut roles = bus.roles().await?;
    roles.retain(|role| mindbus::keys::validate_role(role).is_ok());
    roles.truncate(MAX_ROLES);
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
    let mut groups: Vec<_> = stream.groups.iter().collect();
    // The role's own group and the monitor's first.
    groups.sort_by_key(|g| (g.name != stream.role, g.name != crate::GROUP));
    for group in groups.into_iter().take(MAX_GROUPS) {
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

#[cfg(test)]
mod tests {
    use mindbus::bus::GroupInfo;
    use mindbus::keys::Stream;

    use super::*;

    #[test]
    fn a_stream_with_many_groups_keeps_the_roles_and_the_monitors_first() {
        let group = |name: String| GroupInfo {
            name,
            consumers: 1,
            pending: 2,
            lag: Some(3),
            last_delivered: "0-0".into(),
        };
        let mut groups: Vec<GroupInfo> = (0..20).map(|i| group(format!("extra{i}"))).collect();
        groups.push(group(crate::GROUP.into()));
        groups.push(group("echo".into()));
        let stream = StreamInfo {
            stream: "p:cmd:{echo}".into(),
            role: "echo".into(),
            kind: Stream::Commands,
            length: 5,
            added: Some(5),
            groups,
        };
        let out = series(&stream);
        let group_names: HashSet<&str> = out
            .iter()
            .filter_map(|((_, labels), _)| labels.iter().find(|(k, _)| *k == "group"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(group_names.len(), MAX_GROUPS);
        assert!(group_names.contains("echo") && group_names.contains(crate::GROUP));
        // The length, then pending and lag of each group kept.
        assert_eq!(out.len(), 1 + 2 * MAX_GROUPS);
    }
}
