//! `mindbus status`: every stream with its length, groups, consumers, pending and lag.

use comfy_table::Table;
use mindbus::bus::Bus;
use mindbus::streams::info_map;
use redis::Value;

/// Every role's command stream (sorted).
pub async fn command_streams(bus: &Bus) -> anyhow::Result<Vec<String>> {
    Ok(mindbus::streams::command_streams(&mut bus.connection(), bus.keys()).await?)
}

fn show(value: Option<&Value>) -> String {
    match value {
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        Some(Value::Nil) | None => "-".into(),
        Some(other) => format!("{other:?}"),
    }
}

pub async fn run(bus: &Bus) -> anyhow::Result<()> {
    let mut conn = bus.connection();
    let mut streams = command_streams(bus).await?;
    streams.extend(bus.keys().shared_streams());
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
    for stream in &streams {
        let info: Result<Value, _> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query_async(&mut conn)
            .await;
        let Ok(info) = info else {
            table.add_row([stream.as_str(), "0", "-", "-", "-", "-", "-"]);
            continue;
        };
        let length = show(info_map(info).get("length"));
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut conn)
            .await?;
        let Value::Array(groups) = groups else {
            continue;
        };
        if groups.is_empty() {
            table.add_row([
                stream.clone(),
                length.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for group in groups {
            let g = info_map(group);
            table.add_row([
                stream.clone(),
                length.clone(),
                show(g.get("name")),
                show(g.get("consumers")),
                show(g.get("pending")),
                show(g.get("lag")),
                show(g.get("last-delivered-id")),
            ]);
        }
    }
    println!("{table}");
    let dead: u64 = redis::cmd("XLEN")
        .arg(bus.keys().dead_letters())
        .query_async(&mut conn)
        .await?;
    println!("dead letters: {dead} (mindbus dlq list)");
    Ok(())
}
