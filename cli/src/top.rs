//! `mindbus top`: the mesh's numbers live in a terminal, from Redis alone. Per role: its
//! agents, commands published and finished per second (from the streams' `entries-added`
//! between two looks), commands not yet delivered (lag), delivered and unfinished
//! (pending), and dead letters. The same numbers as the mesh dashboard, for whoever has
//! only a shell.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use comfy_table::Table;
use mindbus::bus::{Bus, StreamInfo};
use mindbus::keys::Stream;

/// How `top` refreshes.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0, value_parser = interval)]
    every: f64,
    /// Stop after this many refreshes (default: until interrupted).
    #[arg(short = 'n', long)]
    count: Option<u64>,
}

fn interval(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.1..=3600.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err("must be from 0.1 to 3600 seconds".into())
    }
}

/// One role's numbers.
#[derive(Debug, Default, Clone, PartialEq)]
struct Row {
    agents: u64,
    published: Option<f64>,
    finished: Option<f64>,
    lag: Option<u64>,
    pending: u64,
    dead: u64,
}

/// Entries ever added to each stream, when looked at.
type Added = HashMap<String, u64>;

pub async fn run(bus: &Bus, args: &TopArgs) -> anyhow::Result<()> {
    let clear = std::io::stdout().is_terminal();
    let mut before: Option<(Instant, Added)> = None;
    let mut shown = 0;
    loop {
        let roles = crate::status::roles(bus).await?;
        let streams = bus.overview(&roles).await?;
        let now = Instant::now();
        let since = before.as_ref().map(|(at, added)| (now - *at, added));
        let rows = rows(&streams, since);
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        println!("{}", render(&rows, bus.keys().prefix()));
        before = Some((now, added(&streams)));
        shown += 1;
        if args.count.is_some_and(|count| shown >= count) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs_f64(args.every)).await;
    }
}

fn added(streams: &[StreamInfo]) -> Added {
    streams
        .iter()
        .filter_map(|s| Some((s.stream.clone(), s.added?)))
        .collect()
}

/// Each role's row; rates need the previous look (`since`: how long ago, what was added).
fn rows(streams: &[StreamInfo], since: Option<(Duration, &Added)>) -> Vec<(String, Row)> {
    let mut rows: Vec<(String, Row)> = Vec::new();
    for stream in streams {
        let index = match rows.iter().position(|(role, _)| *role == stream.role) {
            Some(index) => index,
            None => {
                rows.push((stream.role.clone(), Row::default()));
                rows.len() - 1
            }
        };
        let row = &mut rows[index].1;
        let rate = since.and_then(|(elapsed, before)| {
            let was = before.get(&stream.stream)?;
            let delta = stream.added?.checked_sub(*was)?;
            Some(delta as f64 / elapsed.as_secs_f64().max(1e-3))
        });
        match stream.kind {
            Stream::Commands => {
                row.published = rate;
                // The role's own group: named after the role.
                if let Some(group) = stream.groups.iter().find(|g| g.name == stream.role) {
                    row.agents = group.consumers;
                    row.lag = group.lag;
                    row.pending = group.pending;
                }
            }
            Stream::Results => row.finished = rate,
            Stream::DeadLetters => row.dead = stream.length,
            Stream::Events => {}
        }
    }
    rows
}

fn render(rows: &[(String, Row)], prefix: &str) -> String {
    let mut table = Table::new();
    table.set_header([
        "role",
        "agents",
        "in/s",
        "out/s",
        "lag",
        "pending",
        "dead letters",
    ]);
    let rate = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.1}"));
    for (role, row) in rows {
        table.add_row([
            role.clone(),
            row.agents.to_string(),
            rate(row.published),
            rate(row.finished),
            row.lag.map_or("-".into(), |l| l.to_string()),
            row.pending.to_string(),
            row.dead.to_string(),
        ]);
    }
    let time = jiff::Zoned::now().strftime("%H:%M:%S");
    format!(
        "mindbus top: {prefix} at {time} (in/s: commands published; out/s: results written)\n{table}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mindbus::bus::GroupInfo;

    fn stream(
        role: &str,
        kind: Stream,
        length: u64,
        added: u64,
        groups: Vec<GroupInfo>,
    ) -> StreamInfo {
        StreamInfo {
            stream: format!("p:{}:{{{role}}}", kind.as_str()),
            role: role.into(),
            kind,
            length,
            added: Some(added),
            groups,
        }
    }

    #[test]
    fn rows_take_rates_from_what_was_added_since_the_last_look() {
        let group = GroupInfo {
            name: "echo".into(),
            consumers: 3,
            pending: 4,
            lag: Some(7),
            last_delivered: "1-0".into(),
        };
        let streams = vec![
            stream("echo", Stream::Commands, 11, 100, vec![group]),
            stream("echo", Stream::Results, 90, 90, Vec::new()),
            stream("echo", Stream::DeadLetters, 2, 2, Vec::new()),
        ];
        let first = rows(&streams, None);
        assert_eq!(first[0].1.published, None);
        let before: Added = [
            ("p:cmd:{echo}".to_owned(), 80),
            ("p:result:{echo}".to_owned(), 85),
        ]
        .into();
        let rows = rows(&streams, Some((Duration::from_secs(2), &before)));
        assert_eq!(
            rows,
            [(
                "echo".to_owned(),
                Row {
                    agents: 3,
                    published: Some(10.0),
                    finished: Some(2.5),
                    lag: Some(7),
                    pending: 4,
                    dead: 2,
                }
            )]
        );
    }
}
