//! `mindbus status`: every stream with its length, groups, consumers, pending and lag.

use comfy_table::Table;
use mindbus::bus::Bus;
use mindbus::keys::Stream;

/// Every role with a command stream (sorted).
pub async fn roles(bus: &Bus) -> anyhow::Result<Vec<String>> {
    Ok(mindbus::streams::roles(&mut bus.connection(), bus.keys()).await?)
}

pub async fn run(bus: &Bus) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.set_header([
        "stream",
        "length",
        "group",
        "consumers",
        "pending",
        "lag",
        "last delivered",
    ]);
    let mut dead = 0;
    // Every command stream, registered or not (a producer may write to a role no agent has
    // started for yet).
    for stream in bus.overview(&roles(bus).await?).await? {
        if stream.kind == Stream::DeadLetters {
            dead += stream.length;
        }
        let length = stream.length.to_string();
        if stream.groups.is_empty() {
            table.add_row([stream.stream.as_str(), &length, "-", "-", "-", "-", "-"]);
        }
        for g in &stream.groups {
            let lag = g.lag.map_or("-".into(), |l| l.to_string());
            table.add_row([
                stream.stream.clone(),
                length.clone(),
                g.name.clone(),
                g.consumers.to_string(),
                g.pending.to_string(),
                lag,
                g.last_delivered.clone(),
            ]);
        }
    }
    println!("{table}");
    println!("dead letters: {dead} (mindbus dlq list)");
    Ok(())
}
