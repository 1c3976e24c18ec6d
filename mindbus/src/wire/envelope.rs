//! The CloudEvents attributes every entry kind shares, and their documented defaults.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;
use uuid::Uuid;

use super::fields::{FieldReader, FieldWriter};
use super::{ContentType, EntryId, MessageId, TraceParent, WireError};

/// Where an entry was read from; the defaults for `id` and `time` derive from it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The stream key.
    pub stream: &'a str,
    /// The entry's id in that stream.
    pub entry: EntryId,
}

/// A decoded `data` field and the content type it came in (results answer in the same one).
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// How `data` is encoded on the wire.
    pub content_type: ContentType,
    /// The decoded value.
    pub value: Value,
}

impl Payload {
    /// A JSON payload.
    pub fn json(value: Value) -> Self {
        Self {
            content_type: ContentType::Json,
            value,
        }
    }
}

/// The attributes shared by commands, results, events and dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id: any text (see [`MessageId`]); MindBus writes UUIDv7s. Default: derived
    /// from the stream key and entry id, so a redelivered entry keeps its id.
    pub id: MessageId,
    /// What the entry means, e.g. `echo.say` for a command or `mindbus.result`.
    pub ty: String,
    /// Who produced it (a URI reference). Default: `urn:mindbus:anonymous`.
    pub source: String,
    /// When it was produced (RFC 3339). Default: the Redis server time in the entry id.
    pub time: Timestamp,
    /// The payload, encoded as `datacontenttype` says. Default: JSON `null`.
    pub data: Payload,
    /// W3C trace context. Default: a new trace whose id is the entry's `id`.
    pub traceparent: TraceParent,
    /// W3C trace state, passed through untouched.
    pub tracestate: Option<String>,
}

/// The `source` written when a producer gives none.
pub const ANONYMOUS_SOURCE: &str = "urn:mindbus:anonymous";

impl Envelope {
    /// A fresh envelope for an entry this process produces.
    pub fn new(ty: impl Into<String>, source: impl Into<String>, data: Payload) -> Self {
        let id = MessageId::new();
        Self {
            traceparent: TraceParent::rooted_at(&id),
            id,
            ty: ty.into(),
            source: source.into(),
            time: Timestamp::now(),
            data,
            tracestate: None,
        }
    }

    /// Reads the shared attributes, filling in the documented defaults.
    pub(crate) fn read(r: &mut FieldReader, origin: Origin<'_>) -> Result<Self, WireError> {
        let ty = r.required("type")?;
        let id = r
            .parse::<MessageId>("id")?
            .unwrap_or_else(|| derived_id(origin));
        let source = r
            .text("source")?
            .unwrap_or_else(|| ANONYMOUS_SOURCE.to_owned());
        let time = r
            .parse::<Timestamp>("time")?
            .unwrap_or_else(|| entry_time(origin.entry));
        let content_type = r
            .parse::<ContentType>("datacontenttype")?
            .unwrap_or_default();
        let data = match r.bytes("data") {
            Some(bytes) if !bytes.is_empty() => content_type.decode(bytes)?,
            _ => Value::Null,
        };
        let traceparent = r
            .parse::<TraceParent>("traceparent")?
            .unwrap_or_else(|| TraceParent::rooted_at(&id));
        Ok(Self {
            id,
            ty,
            source,
            time,
            data: Payload {
                content_type,
                value: data,
            },
            traceparent,
            tracestate: r.text("tracestate")?,
        })
    }

    /// Writes the shared attributes. Documented defaults are left off: `datacontenttype` when
    /// it is JSON, `data` when it is JSON `null`, and `id` and `time` unless `identity` says
    /// the entry carries them.
    pub(crate) fn write(&self, w: &mut FieldWriter, identity: Identity) -> Result<(), WireError> {
        let json = self.data.content_type == ContentType::Json;
        let data = if json && self.data.value.is_null() {
            None
        } else {
            Some(self.data.content_type.encode(&self.data.value)?)
        };
        let carried = identity == Identity::Carried;
        w.opt("id", carried.then_some(&self.id))
            .put("type", self.ty.as_str())
            .put("source", self.source.as_str())
            .opt("time", carried.then_some(self.time))
            .opt(
                "datacontenttype",
                (!json).then_some(self.data.content_type.as_str()),
            )
            .put_opt("data", data)
            .show("traceparent", self.traceparent)
            .opt("tracestate", self.tracestate.as_deref());
        Ok(())
    }
}

/// Whether an entry carries its own `id` and `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The `id` and `time` are written.
    Carried,
    /// The `id` and `time` are left out: every reader derives the same ones from the stream
    /// key and entry id (their documented defaults). Redis then takes in two fields fewer
    /// per entry, a quarter of a result's.
    FromEntry,
}

/// The id given to an entry that carries none: a UUIDv7 whose timestamp is the entry's and
/// whose other 80 bits are bytes 6 to 15 of UUIDv5(URL namespace, `"<stream key>/<entry id>"`)
/// (under the version and variant bits), so every reader of that entry, in any language,
/// derives the same id.
pub fn derived_id(origin: Origin<'_>) -> MessageId {
    let name = format!("{}/{}", origin.stream, origin.entry);
    let hashed = Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&hashed.as_bytes()[6..]);
    uuid::Builder::from_unix_timestamp_millis(origin.entry.ms, &random)
        .into_uuid()
        .into()
}

fn entry_time(entry: EntryId) -> Timestamp {
    let ms = i64::try_from(entry.ms).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Unknown fields, kept so that nothing a producer wrote is dropped.
pub type Extensions = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector is in `examples/python/agent.py`'s `derived_id`: other languages can
    /// check their own against it.
    #[test]
    fn derived_ids_follow_the_documented_recipe() {
        let origin = Origin {
            stream: "mindbus:cmd:{echo}",
            entry: "1700000000000-5".parse().unwrap(),
        };
        let id = derived_id(origin);
        assert_eq!(id.to_string(), "018bcfe5-6800-7f26-8052-2ca74f908c68");
        assert_eq!(id.as_uuid().unwrap().get_version_num(), 7);
        let other = Origin {
            entry: "1700000000000-6".parse().unwrap(),
            ..origin
        };
        assert_ne!(derived_id(other), id);
    }
}
