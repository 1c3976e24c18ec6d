//! Parsing what Redis answers to stream commands (`XREAD`, `XREADGROUP`, `XAUTOCLAIM`,
//! `XPENDING`), keeping `data` as bytes and noticing entries deleted while pending.

use redis::Value;

use crate::Error;
use crate::wire::{EntryId, Fields};

/// One entry as read from a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// The entry id.
    pub id: EntryId,
    /// Its fields; `None` when the entry was deleted (trimmed) while still pending.
    pub fields: Option<Fields>,
}

fn unexpected(what: &str, value: &Value) -> Error {
    Error::Protocol(format!("unexpected {what} reply: {value:?}"))
}

fn text(value: &Value) -> Result<String, Error> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| unexpected("non-UTF-8 name", value))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(unexpected("string", other)),
    }
}

fn bytes(value: Value) -> Result<Vec<u8>, Error> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(unexpected("field value", &other)),
    }
}

fn entry_id(value: &Value) -> Result<EntryId, Error> {
    text(value)?.parse().map_err(Error::Protocol)
}

fn fields(value: Value) -> Result<Option<Fields>, Error> {
    let items = match value {
        Value::Nil => return Ok(None),
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => return Err(unexpected("fields", &other)),
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        // A name that is not UTF-8 must not make the whole reply unreadable (the entry
        // would then be stuck in a pending list); the decoders report it as malformed.
        let name = String::from_utf8(bytes(name)?)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        out.push((name, bytes(value)?));
    }
    Ok(Some(out))
}

fn entries(value: Value) -> Result<Vec<StreamEntry>, Error> {
    let Value::Array(items) = value else {
        return Err(unexpected("entries", &value));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Array(mut pair) if pair.len() == 2 => {
                let raw = pair.pop().unwrap_or(Value::Nil);
                Ok(StreamEntry {
                    id: entry_id(&pair[0])?,
                    fields: fields(raw)?,
                })
            }
            other => Err(unexpected("entry", &other)),
        })
        .collect()
}

/// Parses an `XRANGE`/`XREVRANGE` reply: the entries of one stream.
pub fn parse_range(value: Value) -> Result<Vec<StreamEntry>, Error> {
    entries(value)
}

/// Parses an `XREAD`/`XREADGROUP` reply into `(stream, entries)` pairs; a timeout is empty.
pub fn parse_read(value: Value) -> Result<Vec<(String, Vec<StreamEntry>)>, Error> {
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let list = pair.pop().unwrap_or(Value::Nil);
                    Ok((pair.pop().unwrap_or(Value::Nil), list))
                }
                other => Err(unexpected("stream", &other)),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(unexpected("read", &other)),
    };
    streams
        .into_iter()
        .map(|(key, list)| Ok((text(&key)?, entries(list)?)))
        .collect()
}

/// Parses an `XAUTOCLAIM` reply into the next cursor and the claimed entries (entries
/// deleted meanwhile are dropped from the pending list by Redis 7 and not returned here).
pub fn parse_autoclaim(value: Value) -> Result<(EntryId, Vec<StreamEntry>), Error> {
    let Value::Array(mut parts) = value else {
        return Err(unexpected("XAUTOCLAIM", &value));
    };
    if parts.len() < 2 {
        return Err(Error::Protocol("XAUTOCLAIM reply too short".into()));
    }
    let claimed = parts.remove(1);
    Ok((entry_id(&parts[0])?, entries(claimed)?))
}

/// Parses an extended `XPENDING` reply into `(id, consumer, deliveries)`.
pub fn parse_pending(value: Value) -> Result<Vec<(EntryId, String, u32)>, Error> {
    let Value::Array(items) = value else {
        return Err(unexpected("XPENDING", &value));
    };
    items
        .into_iter()
        .map(|item| match &item {
            Value::Array(row) if row.len() == 4 => {
                let deliveries = text(&row[3])?
                    .parse()
                    .map_err(|_| unexpected("delivery count", &row[3]))?;
                Ok((entry_id(&row[0])?, text(&row[1])?, deliveries))
            }
            other => Err(unexpected("pending row", other)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_reply_keeps_deleted_entries_visible() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("mindbus:cmd:{echo}"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("type"), bulk("echo.say")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let parsed = parse_read(reply).unwrap();
        assert_eq!(parsed[0].0, "mindbus:cmd:{echo}");
        assert_eq!(
            parsed[0].1[0].fields,
            Some(vec![("type".into(), b"echo.say".to_vec())])
        );
        assert_eq!(parsed[0].1[1].fields, None);
        assert!(parse_read(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn pending_rows_parse() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("5-1"),
            bulk("c1"),
            Value::Int(10),
            Value::Int(3),
        ])]);
        assert_eq!(
            parse_pending(reply).unwrap(),
            vec![(EntryId { ms: 5, seq: 1 }, "c1".to_string(), 3)]
        );
    }
}
