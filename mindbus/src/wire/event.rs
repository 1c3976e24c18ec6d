//! Events: what happened to a command, for people and the monitor to follow.

use std::fmt;
use std::str::FromStr;

use super::MessageId;
use super::WireError;
use super::envelope::{Envelope, Extensions, Identity, Origin, Payload};
use super::fields::{FieldReader, FieldWriter, Fields, PackedFields};

/// The lifecycle of a command, as `type` `mindbus.command.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An agent read the command.
    Received,
    /// The handler started (once per attempt).
    Started,
    /// The handler reported progress or a chunk of streamed text.
    Progress,
    /// An attempt failed and the command will be tried again.
    Retried,
    /// The command completed and its result was accepted.
    Completed,
    /// The command failed and its result was accepted.
    Failed,
    /// The command was cancelled.
    Canceled,
    /// The command was moved to the dead-letter stream.
    DeadLettered,
    /// A second run of an already answered command finished; its result was dropped.
    Duplicate,
    /// A model call's tokens, cost, latency and whether the cache answered it.
    LlmUsage,
}

const KINDS: [(EventKind, &str); 10] = [
    (EventKind::Received, "mindbus.command.received"),
    (EventKind::Started, "mindbus.command.started"),
    (EventKind::Progress, "mindbus.command.progress"),
    (EventKind::Retried, "mindbus.command.retried"),
    (EventKind::Completed, "mindbus.command.completed"),
    (EventKind::Failed, "mindbus.command.failed"),
    (EventKind::Canceled, "mindbus.command.canceled"),
    (EventKind::DeadLettered, "mindbus.command.deadlettered"),
    (EventKind::Duplicate, "mindbus.command.duplicate"),
    (EventKind::LlmUsage, "mindbus.llm.usage"),
];

impl EventKind {
    /// The event's `type`.
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("", |(_, name)| name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KINDS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(kind, _)| *kind)
            .ok_or_else(|| format!("`{s}` is not a command lifecycle event"))
    }
}

/// An event on a role's event stream, `<prefix>:event:{<role>}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The CloudEvents attributes; `type` names the event, `data` holds its details.
    pub envelope: Envelope,
    /// The command the event is about.
    pub correlationid: Option<MessageId>,
    /// The agent role involved.
    pub role: Option<String>,
    /// The attempt it happened in.
    pub attempt: Option<u32>,
    /// Copied from the command.
    pub runid: Option<String>,
    /// Copied from the command.
    pub stepid: Option<String>,
    /// Unknown fields, kept.
    pub extensions: Extensions,
}

impl Event {
    /// A new event of `kind` about a command.
    pub fn new(kind: EventKind, source: &str, correlationid: MessageId, data: Payload) -> Self {
        Self {
            envelope: Envelope::new(kind.as_str(), source, data),
            correlationid: Some(correlationid),
            role: None,
            attempt: None,
            runid: None,
            stepid: None,
            extensions: Extensions::new(),
        }
    }

    /// The lifecycle kind, when `type` is one of MindBus's own.
    pub fn kind(&self) -> Option<EventKind> {
        self.envelope.ty.parse().ok()
    }

    /// Decodes an event from stream fields.
    pub fn decode(
        fields: impl AsRef<[(String, Vec<u8>)]>,
        origin: Origin<'_>,
    ) -> Result<Self, WireError> {
        let mut r = FieldReader::new(fields.as_ref());
        Ok(Self {
            envelope: Envelope::read(&mut r, origin)?,
            correlationid: r.parse("correlationid")?,
            role: r.text("role")?,
            attempt: r.parse("attempt")?,
            runid: r.text("runid")?,
            stepid: r.text("stepid")?,
            extensions: r.rest()?,
        })
    }

    /// Encodes the event as stream fields.
    pub fn encode(&self) -> Result<Fields, WireError> {
        self.encode_as(Identity::Carried)
    }

    /// Encodes the event without its `id` and `time`: every reader derives the same ones
    /// from the stream key and entry id, their documented defaults. Agents write their
    /// lifecycle events this way, which saves Redis two fields per event. An event whose id must be known before
    /// it is written, or that is written to more than one stream, needs [`Event::encode`].
    /// A write retried after a lost reply may append an event twice; the two copies then
    /// have different ids.
    pub fn encode_compact(&self) -> Result<Fields, WireError> {
        self.encode_as(Identity::FromEntry)
    }

    /// [`Event::encode_compact`] into one buffer, as the agents' writer sends it.
    pub fn encode_compact_packed(&self) -> Result<PackedFields, WireError> {
        Ok(self.writer(Identity::FromEntry)?.finish_packed())
    }

    fn encode_as(&self, identity: Identity) -> Result<Fields, WireError> {
        Ok(self.writer(identity)?.finish())
    }

    fn writer(&self, identity: Identity) -> Result<FieldWriter, WireError> {
        let mut w = FieldWriter::default();
        self.envelope.write(&mut w, identity)?;
        w.opt("correlationid", self.correlationid.as_ref())
            .opt("role", self.role.as_deref())
            .opt("attempt", self.attempt)
            .opt("runid", self.runid.as_deref())
            .opt("stepid", self.stepid.as_deref())
            .extensions(&self.extensions);
        Ok(w)
    }
}

/// The `data` of a `mindbus.command.retried` event: what failed, and when the next attempt
/// starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Retried {
    pub errortype: String,
    pub error: String,
    pub delay_ms: u64,
}

/// The `data` of a `mindbus.command.failed` or `.canceled` event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failed {
    pub errortype: String,
    pub error: String,
}

/// The `data` of a `mindbus.command.dead_lettered` event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLettered {
    pub errortype: String,
    pub reason: String,
    pub deliveries: u32,
}

/// The `data` of a `mindbus.command.progress` event carrying streamed text (an LLM role's
/// answer as it is generated, or whole from the cache).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TextChunk {
    pub chunk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// What LLM calls used: tokens each way and their cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Answer tokens.
    pub tokens_out: u64,
    /// Cost in micro-USD.
    pub cost_micros: u64,
}

/// [`Usage`] as results and events report it: with the cost in USD too, for people reading
/// it (`cost_micros` is exact).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageReport {
    #[serde(flatten)]
    pub usage: Usage,
    pub cost_usd: f64,
}

impl From<Usage> for UsageReport {
    fn from(usage: Usage) -> Self {
        Self {
            usage,
            cost_usd: usage.cost_micros as f64 / 1e6,
        }
    }
}

/// The data of a `mindbus.llm.usage` event: one call that reached a provider (answered, or
/// `failed` after the provider took it), or a cache hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlmUsage {
    #[serde(flatten)]
    pub report: UsageReport,
    /// The model that answered, as `provider/name`.
    pub model: String,
    pub latency_ms: u64,
    /// Answered from the cache: nothing was spent.
    pub cachehit: bool,
    /// The provider reported no usage; tokens were estimated from the text.
    pub estimated: bool,
    /// The call failed after the provider took it.
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn event_details_keep_their_wire_names() {
        let chunk = TextChunk {
            chunk: "hi".into(),
            model: None,
            cached: false,
        };
        assert_eq!(
            serde_json::to_value(&chunk).unwrap(),
            serde_json::json!({"chunk": "hi"})
        );
        let cached = serde_json::json!({"chunk": "hi", "model": "m", "cached": true});
        assert!(serde_json::from_value::<TextChunk>(cached).unwrap().cached);
        let retried = Retried {
            errortype: "timeout".into(),
            error: "slow".into(),
            delay_ms: 50,
        };
        assert_eq!(
            serde_json::to_value(&retried).unwrap(),
            serde_json::json!({"errortype": "timeout", "error": "slow", "delay_ms": 50})
        );
        let usage = LlmUsage {
            report: Usage {
                tokens_in: 3,
                tokens_out: 4,
                cost_micros: 1_500,
            }
            .into(),
            model: "openai/m".into(),
            latency_ms: 9,
            cachehit: false,
            estimated: true,
            failed: false,
        };
        assert_eq!(
            serde_json::to_value(&usage).unwrap(),
            serde_json::json!({"tokens_in": 3, "tokens_out": 4, "cost_micros": 1_500,
                "cost_usd": 0.0015, "model": "openai/m", "latency_ms": 9, "cachehit": false,
                "estimated": true, "failed": false})
        );
    }
    use crate::wire::{ContentType, EntryId, derived_id};

    #[test]
    fn kinds_round_trip() {
        for (kind, name) in KINDS {
            assert_eq!(kind.as_str(), name);
            assert_eq!(name.parse::<EventKind>().unwrap(), kind);
        }
    }

    #[test]
    fn event_round_trips() {
        let mut event = Event::new(
            EventKind::Retried,
            "agent",
            MessageId::new(),
            Payload::json(json!({"delay_ms": 20})),
        );
        event.attempt = Some(2);
        event.role = Some("echo".into());
        let origin = Origin {
            stream: "mindbus:event",
            entry: EntryId::ZERO,
        };
        let back = Event::decode(event.encode().unwrap(), origin).unwrap();
        assert_eq!(back.kind(), Some(EventKind::Retried));
        assert_eq!(back, event);
    }

    #[test]
    fn a_compact_event_leaves_defaults_out_and_reads_back_the_same() {
        // As agents write `started`: no details, so no `data`.
        let event = Event::new(
            EventKind::Started,
            "agent",
            MessageId::new(),
            Payload::json(Value::Null),
        );
        let fields = event.encode_compact().unwrap();
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            !names.contains(&"id")
                && !names.contains(&"time")
                && !names.contains(&"datacontenttype")
                && !names.contains(&"data"),
            "{names:?}"
        );
        let origin = Origin {
            stream: "mindbus:event",
            entry: "1700000000000-1".parse().unwrap(),
        };
        let back = Event::decode(fields, origin).unwrap();
        assert_eq!(back.envelope.id, derived_id(origin));
        assert_eq!(back.envelope.time.as_millisecond(), 1_700_000_000_000);
        let mut expected = event;
        expected.envelope.id = back.envelope.id.clone();
        expected.envelope.time = back.envelope.time;
        assert_eq!(back, expected);
    }

    #[test]
    fn only_a_content_type_other_than_json_is_written() {
        let mut event = Event::new(
            EventKind::Progress,
            "agent",
            MessageId::new(),
            Payload::json(json!({"n": 1})),
        );
        event.envelope.data.content_type = ContentType::MsgPack;
        let fields = event.encode().unwrap();
        let written = fields.iter().find(|(n, _)| n == "datacontenttype");
        assert_eq!(
            written.map(|(_, v)| v.as_slice()),
            Some(&b"application/msgpack"[..])
        );
        let origin = Origin {
            stream: "mindbus:event",
            entry: EntryId::ZERO,
        };
        assert_eq!(Event::decode(fields, origin).unwrap(), event);
    }
}
