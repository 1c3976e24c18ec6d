//! The baseline consumer: plain redis commands, no MindBus code, tuned as a hand-written
//! consumer would be. After its first read, each round trip to Redis carries a batch's
//! results, one XACK of the batch and the next blocking XREADGROUP, in one pipeline (all of
//! one role's keys, so one slot on a Redis Cluster, where it uses redis-rs's cluster client).

use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;

pub async fn serve(url: &str, prefix: &str, role: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await?;
    if info.contains("cluster_enabled:1") {
        let cluster = redis::cluster::ClusterClient::builder([url])
            .response_timeout(Duration::from_secs(10))
            .build()?;
        consume(cluster.get_async_connection().await?, prefix, role).await
    } else {
        consume(conn, prefix, role).await
    }
}

async fn consume<C: ConnectionLike + Send>(
    mut conn: C,
    prefix: &str,
    role: &str,
) -> anyhow::Result<()> {
    let stream = format!("{prefix}:cmd:{{{role}}}");
    let results = format!("{prefix}:result:{{{role}}}");
    let consumer = format!("raw-{}", std::process::id());
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(role)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    // A blocked read does not register the consumer on Redis 7.0; a plain one does.
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(role)
        .arg(&consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg("0")
        .query_async(&mut conn)
        .await?;
    let read = || {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(role)
            .arg(&consumer)
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">");
        read
    };
    let mut reply: Value = read().query_async(&mut conn).await?;
    loop {
        let entries = mindbus_free_parse(reply);
        if entries.is_empty() {
            reply = read().query_async(&mut conn).await?;
            continue;
        }
        // One round trip per batch: every result, one XACK of the whole batch, and the
        // next blocking read.
        let mut pipe = redis::pipe();
        let mut ack = redis::cmd("XACK");
        ack.arg(&stream).arg(role);
        for (id, fields) in &entries {
            let mut add = redis::cmd("XADD");
            add.arg(&results)
                .arg("*")
                .arg("correlationid")
                .arg(find(fields, "id"))
                .arg("status")
                .arg("completed")
                .arg("data")
                .arg(find(fields, "data"));
            pipe.add_command(add).ignore();
            ack.arg(id);
        }
        pipe.add_command(ack).ignore();
        pipe.add_command(read());
        let (next,): (Value,) = pipe.query_async(&mut conn).await?;
        reply = next;
    }
}

fn find<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> &'a [u8] {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map_or(&[], |(_, v)| v)
}

/// An entry id and its fields, as raw bytes.
type RawEntry = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Parses an XREADGROUP reply by hand, so the baseline shares no code with MindBus.
fn mindbus_free_parse(reply: Value) -> Vec<RawEntry> {
    let mut out = Vec::new();
    let Value::Array(streams) = reply else {
        return out;
    };
    for stream in streams {
        let Value::Array(mut pair) = stream else {
            continue;
        };
        let Some(Value::Array(entries)) = pair.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            let (Some(Value::Array(flat)), Some(Value::BulkString(id))) =
                (parts.pop(), parts.pop())
            else {
                continue;
            };
            let mut fields = Vec::new();
            let mut it = flat.into_iter();
            while let (Some(Value::BulkString(k)), Some(Value::BulkString(v))) =
                (it.next(), it.next())
            {
                fields.push((k, v));
            }
            out.push((id, fields));
        }
    }
    out
}
