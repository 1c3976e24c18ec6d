//! Turning a stream entry into a row (pure: no IO). Malformed entries become rows too, raw
//! and flagged, so nothing is ever dropped.

use mindbus::keys::{Keys, Stream};
use mindbus::streams::StreamEntry;
use mindbus::wire::{
    Command, CommandResult, DeadLetter, Envelope, Event, Fields, MessageId, Origin, derived_id,
};
use serde_json::{Map, Value};

/// The value of the `kind` column for an entry of a `kind` stream.
fn kind_column(kind: Stream) -> &'static str {
    match kind {
        Stream::Commands => "command",
        Stream::Results => "result",
        Stream::Events => "event",
        Stream::DeadLetters => "deadletter",
    }
}

/// One row of `mindbus_entries`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub stream: String,
    pub entry_ms: i64,
    pub entry_seq: i64,
    pub kind: &'static str,
    pub ty: Option<String>,
    pub id: Option<String>,
    pub correlation_id: Option<String>,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub status: Option<String>,
    pub source: Option<String>,
    pub role: Option<String>,
    /// RFC 3339.
    pub time: Option<String>,
    pub trace_id: Option<String>,
    pub data: Option<Value>,
    pub fields: Value,
    /// Why the entry could not be decoded (or recorded whole), when it could not.
    pub malformed: Option<String>,
    /// The entry's size in the stream (names and values), for cutting batches.
    pub bytes: usize,
}

impl Record {
    /// Postgres `text` cannot hold U+0000 either: replace it in every text column.
    fn without_nul(mut self) -> Self {
        let clean = |s: &mut Option<String>| {
            if let Some(text) = s.as_mut().filter(|t| t.contains('\0')) {
                *text = text.replace('\0', "\u{fffd}");
            }
        };
        self.stream = self.stream.replace('\0', "\u{fffd}");
        for column in [
            &mut self.ty,
            &mut self.run_id,
            &mut self.step_id,
            &mut self.status,
            &mut self.source,
            &mut self.role,
            &mut self.time,
            &mut self.trace_id,
            &mut self.malformed,
        ] {
            clean(column);
        }
        self
    }

    /// The same entry reduced to what Postgres cannot refuse: its fields (cut to a
    /// preview when Postgres refused the row for its size) and why.
    pub fn bare(&self, why: &str, too_large: bool) -> Self {
        let fields = match (&self.fields, too_large) {
            (Value::Object(map), true) => preview(
                map.iter()
                    .map(|(name, value)| (name.as_str(), value.to_string().into_bytes())),
                map.len(),
            ),
            _ => mindbus::wire::without_nul(self.fields.clone()),
        };
        Record {
            stream: self.stream.clone(),
            entry_ms: self.entry_ms,
            entry_seq: self.entry_seq,
            kind: self.kind,
            fields,
            malformed: Some(
                format!("stored bare, postgres refused the row: {why}").replace('\0', ""),
            ),
            ..Record::default()
        }
    }
}

/// Fields of an entry too large to record whole that go into its preview.
const PREVIEW_FIELDS: usize = 100;
/// Bytes of each value kept in a preview.
const PREVIEW_BYTES: usize = 256;

/// The row for one entry (`None` for an entry deleted before it was read). An entry over
/// `max_bytes` becomes a flagged preview: its first field names and the start of each value.
pub fn record(keys: &Keys, stream: &str, entry: &StreamEntry, max_bytes: usize) -> Option<Record> {
    let fields = entry.fields.as_ref()?;
    let (kind, role) = keys
        .parse_stream(stream)
        .map_or((Stream::Events, None), |(kind, role)| (kind, Some(role)));
    let bytes = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
    let origin = Origin {
        stream,
        entry: entry.id,
    };
    let mut row = Record {
        stream: stream.to_owned(),
        entry_ms: i64::try_from(entry.id.ms).unwrap_or(i64::MAX),
        entry_seq: i64::try_from(entry.id.seq).unwrap_or(i64::MAX),
        kind: kind_column(kind),
        role: role.map(str::to_owned),
        bytes,
        ..Record::default()
    };
    if bytes > max_bytes {
        let pairs = fields.iter().map(|(n, v)| (n.as_str(), v.clone()));
        row.fields = preview(pairs, fields.len());
        row.bytes = PREVIEW_FIELDS * (PREVIEW_BYTES + 64);
        row.malformed = Some(format!(
            "too large to record whole: {bytes} bytes in {} fields (monitor.max_row_bytes is \
             {max_bytes}); recorded as a preview of its fields",
            fields.len()
        ));
        row.ty = text_field(fields, "type");
        row.id = Some(usable_id(fields, origin));
        return Some(row.without_nul());
    }
    row.fields = fields_json(fields);
    let decoded = match kind {
        Stream::Commands => Command::decode(fields, origin).map(|c| {
            row.run_id = c.runid;
            row.step_id = c.stepid;
            envelope(&mut row, c.envelope);
        }),
        Stream::Results => CommandResult::decode(fields, origin).map(|r| {
            row.correlation_id = Some(r.correlationid.to_string());
            row.status = Some(r.status.as_str().to_owned());
            row.role = r.role;
            row.run_id = r.runid;
            row.step_id = r.stepid;
            envelope(&mut row, r.envelope);
        }),
        Stream::Events => Event::decode(fields, origin).map(|e| {
            row.correlation_id = e.correlationid.map(|id| id.to_string());
            row.role = e.role;
            row.run_id = e.runid;
            row.step_id = e.stepid;
            envelope(&mut row, e.envelope);
        }),
        Stream::DeadLetters => DeadLetter::decode(fields.clone()).map(|d| {
            row.status = Some(d.errortype.to_string());
            row.role = keys.commands_role(&d.stream).map(str::to_owned);
            row.time = Some(d.time.to_string());
            let text = |name: &str| {
                d.original
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
            };
            row.ty = text("type");
            row.id = text("id");
            row.run_id = text("runid");
        }),
    };
    if let Err(e) = decoded {
        row.malformed = Some(e.to_string());
        row.ty = text_field(fields, "type");
        row.id = Some(usable_id(fields, origin));
    }
    Some(row.without_nul())
}

/// The id of an entry that does not decode: its own when usable, else the one every reader
/// derives for it.
fn usable_id(fields: &Fields, origin: Origin<'_>) -> String {
    mindbus::wire::field_text(fields, "id")
        .and_then(|id| id.parse::<MessageId>().ok())
        .unwrap_or_else(|| derived_id(origin))
        .to_string()
}

fn text_field(fields: &Fields, name: &str) -> Option<String> {
    mindbus::wire::field_text(fields, name).map(str::to_owned)
}

/// The first [`PREVIEW_FIELDS`] of `count` fields, each value cut to [`PREVIEW_BYTES`]
/// (as text, invalid UTF-8 replaced), and how many fields were left out.
fn preview<'a>(fields: impl Iterator<Item = (&'a str, Vec<u8>)>, count: usize) -> Value {
    let mut map = Map::new();
    for (name, value) in fields.take(PREVIEW_FIELDS) {
        let cut = &value[..value.len().min(PREVIEW_BYTES)];
        let text = String::from_utf8_lossy(cut).replace('\0', "\u{fffd}");
        map.insert(name.replace('\0', "\u{fffd}"), Value::String(text));
    }
    if count > PREVIEW_FIELDS {
        map.insert(
            "(left out)".into(),
            Value::String(format!("{} more fields", count - PREVIEW_FIELDS)),
        );
    }
    Value::Object(map)
}

fn envelope(row: &mut Record, envelope: Envelope) {
    row.ty = Some(envelope.ty);
    row.id = Some(envelope.id.to_string());
    row.source = Some(envelope.source);
    row.time = Some(envelope.time.to_string());
    row.trace_id = Some(envelope.traceparent.trace_id_hex());
    row.data = Some(mindbus::wire::without_nul(envelope.data.value));
}

/// Every field as JSON: text as a string, binary (e.g. MessagePack `data`) as `{"hex": ...}`.
fn fields_json(fields: &Fields) -> Value {
    let mut map = Map::new();
    for (name, value) in fields {
        let json = match std::str::from_utf8(value) {
            Ok(text) => Value::String(text.replace('\0', "\u{fffd}")),
            Err(_) => {
                serde_json::json!({"hex": value.iter().map(|b| format!("{b:02x}")).collect::<String>()})
            }
        };
        map.insert(name.replace('\0', "\u{fffd}"), json);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use mindbus::wire::{EntryId, Payload};
    use serde_json::json;

    use super::*;

    const MAX: usize = 1 << 20;

    fn entry(fields: Fields) -> StreamEntry {
        StreamEntry {
            id: EntryId { ms: 5, seq: 2 },
            fields: Some(fields),
        }
    }

    #[test]
    fn a_command_gets_typed_columns() {
        let keys = Keys::new("mb");
        let mut command = Command::new(
            "echo.say",
            Payload {
                content_type: mindbus::wire::ContentType::MsgPack,
                value: json!({"t": "a\0b"}),
            },
        );
        command.runid = Some("r1".into());
        let row = record(
            &keys,
            "mb:cmd:{echo}",
            &entry(command.encode().unwrap()),
            MAX,
        )
        .unwrap();
        assert_eq!(row.kind, "command");
        assert_eq!(row.id, Some(command.envelope.id.to_string()));
        assert_eq!(row.role.as_deref(), Some("echo"));
        assert_eq!(row.run_id.as_deref(), Some("r1"));
        assert_eq!(
            row.data,
            Some(json!({"t": "a\u{fffd}b"})),
            "MessagePack data is stored as JSON, NUL-free"
        );
        assert!(
            row.fields["data"].get("hex").is_some(),
            "binary fields are kept, as hex"
        );
        assert_eq!((row.entry_ms, row.entry_seq), (5, 2));
    }

    #[test]
    fn nul_never_reaches_a_text_column() {
        let keys = Keys::new("mb");
        let fields = vec![
            ("type".into(), b"a\0b".to_vec()),
            ("runid".into(), b"r\0".to_vec()),
        ];
        let row = record(&keys, "mb:cmd:{echo}", &entry(fields), MAX).unwrap();
        assert_eq!(row.ty.as_deref(), Some("a\u{fffd}b"));
        assert_eq!(row.run_id.as_deref(), Some("r\u{fffd}"));
    }

    #[test]
    fn a_malformed_entry_is_kept_raw_and_flagged() {
        let keys = Keys::new("mb");
        let row = record(
            &keys,
            "mb:result:{echo}",
            &entry(vec![("type".into(), b"mindbus.result".to_vec())]),
            MAX,
        )
        .unwrap();
        assert!(
            row.malformed.as_deref().unwrap().contains("status"),
            "{row:?}"
        );
        assert_eq!(row.ty.as_deref(), Some("mindbus.result"));
        assert_eq!(row.fields, json!({"type": "mindbus.result"}));
    }

    #[test]
    fn an_entry_over_the_row_limit_is_a_flagged_preview() {
        let keys = Keys::new("mb");
        let mut fields: Fields = vec![("type".into(), b"echo.say".to_vec())];
        fields.extend((0..300).map(|i| (format!("f{i}"), vec![b'x'; 10_000])));
        let row = record(&keys, "mb:cmd:{echo}", &entry(fields), MAX).unwrap();
        let why = row.malformed.as_deref().unwrap();
        assert!(
            why.contains("too large") && why.contains("301 fields"),
            "{why}"
        );
        assert_eq!(row.ty.as_deref(), Some("echo.say"));
        let kept = row.fields.as_object().unwrap();
        assert_eq!(kept.len(), PREVIEW_FIELDS + 1);
        assert_eq!(kept["f0"].as_str().unwrap().len(), PREVIEW_BYTES);
        assert!(row.bytes < MAX);
    }
}
