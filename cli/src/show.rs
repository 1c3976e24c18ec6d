//! Rendering entries for people: one line each for `tail`, JSON for `send --wait`.

use mindbus::keys::{Keys, Stream};
use mindbus::streams::StreamEntry;
use mindbus::wire::{Command, CommandResult, DeadLetter, Event, Origin};

/// Which of a role's streams a key is (a reply stream holds results); `None` for others.
pub fn kind_of(keys: &Keys, stream: &str) -> Option<Stream> {
    match keys.parse_stream(stream) {
        Some((kind, _)) => Some(kind),
        None if stream.starts_with(&format!("{}:reply:", keys.prefix())) => Some(Stream::Results),
        None => None,
    }
}

/// The decoded facts `tail` shows and filters on.
#[derive(Debug, Default)]
pub struct Line {
    pub ty: String,
    pub id: String,
    pub correlation: String,
    pub role: String,
    pub detail: String,
}

pub fn describe(keys: &Keys, stream: &str, entry: &StreamEntry) -> Line {
    let Some(fields) = entry.fields.as_ref() else {
        return Line {
            detail: "(deleted)".into(),
            ..Line::default()
        };
    };
    let origin = Origin {
        stream,
        entry: entry.id,
    };
    let role = keys.role_of(stream).unwrap_or_default().to_owned();
    let decoded = match kind_of(keys, stream) {
        Some(Stream::Commands) => Command::decode(fields, origin).map(|c| Line {
            ty: c.envelope.ty,
            id: c.envelope.id.to_string(),
            role,
            detail: format!("data={}", c.envelope.data.value),
            ..Line::default()
        }),
        Some(Stream::Results) => CommandResult::decode(fields, origin).map(|r| Line {
            ty: r.envelope.ty.clone(),
            id: r.envelope.id.to_string(),
            correlation: r.correlationid.to_string(),
            role: r.role.clone().unwrap_or_default(),
            detail: format!(
                "status={} attempt={} {}",
                r.status,
                r.attempt,
                failure_or_data(&r)
            ),
        }),
        Some(Stream::Events) => Event::decode(fields, origin).map(|e| Line {
            ty: e.envelope.ty,
            id: e.envelope.id.to_string(),
            correlation: e.correlationid.map(|c| c.to_string()).unwrap_or_default(),
            role: e.role.unwrap_or_default(),
            detail: format!(
                "attempt={} data={}",
                e.attempt.unwrap_or_default(),
                e.envelope.data.value
            ),
        }),
        Some(Stream::DeadLetters) => DeadLetter::decode(fields.clone()).map(|d| Line {
            ty: "mindbus.deadletter".into(),
            role: keys.commands_role(&d.stream).unwrap_or_default().to_owned(),
            detail: format!(
                "from={} {} deliveries={} errortype={} reason={:?}",
                d.stream, d.entry, d.deliveries, d.errortype, d.reason
            ),
            ..Line::default()
        }),
        None => Err(mindbus::wire::WireError::invalid(
            "type",
            "unknown stream kind",
        )),
    };
    decoded.unwrap_or_else(|e| Line {
        detail: format!("undecodable ({e}): {}", raw(fields)),
        ..Line::default()
    })
}

fn failure_or_data(result: &CommandResult) -> String {
    match &result.failure {
        Some(f) => format!("errortype={} error={:?}", f.errortype, f.error),
        None => format!("data={}", result.envelope.data.value),
    }
}

pub fn raw(fields: &[(String, Vec<u8>)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join(" ")
}
