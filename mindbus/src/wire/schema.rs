//! JSON Schemas of the flat entries, as other languages see them in Redis: every field a
//! string. The committed copies live in `schemas/`; a test regenerates them and fails when
//! they are stale, and checks the golden examples beside them against both the schemas and
//! this crate's decoders.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

/// The attributes every entry kind shares.
#[allow(dead_code)]
#[derive(JsonSchema)]
struct EnvelopeFields {
    /// Unique id: any text of 1 to 256 bytes without control characters (MindBus writes
    /// UUIDv7s). Default: derived from the stream key and entry id, so every reader and
    /// every redelivery of the entry has the same id: a UUIDv7 of the entry's milliseconds,
    /// then bytes 6 to 15 of UUIDv5(URL namespace, "<stream key>/<entry id>"), under the
    /// version 7 and RFC 4122 variant bits.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")
    )]
    id: Option<String>,
    /// What the entry means, e.g. `echo.say` for a command or `mindbus.result`.
    #[schemars(rename = "type", length(min = 1))]
    ty: String,
    /// Who produced it (a URI reference). Default: `urn:mindbus:anonymous`.
    source: Option<String>,
    /// When it was produced, RFC 3339. Default: the time in the Redis entry id.
    #[schemars(extend("format" = "date-time"))]
    time: Option<String>,
    /// How `data` is encoded: `application/json` (default) or `application/msgpack`.
    #[schemars(regex(pattern = r"^application/(json|msgpack|x-msgpack|vnd\.msgpack)\s*(;.*)?$"))]
    datacontenttype: Option<String>,
    /// The payload. Default: JSON `null`.
    data: Option<String>,
    /// W3C trace context. Default: a new trace whose trace id is the entry's `id` when it is a
    /// UUID, else the bytes of UUIDv5(URL namespace, id).
    #[schemars(regex(pattern = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"))]
    traceparent: Option<String>,
    /// W3C trace state, passed through.
    tracestate: Option<String>,
    /// Any other field is kept as it is.
    #[schemars(flatten)]
    extensions: BTreeMap<String, String>,
}

/// A command on `<prefix>:cmd:{<role>}`. Only `type` is required.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(title = "MindBus command entry")]
struct CommandFields {
    #[schemars(flatten)]
    envelope: EnvelopeFields,
    /// A reply stream the result is also written to: `<prefix>:reply:{<role>}:<token>`,
    /// with the role the command is sent to and a token of 1 to 128 of `A-Z a-z 0-9 . _ -`;
    /// any other key makes the command malformed.
    #[schemars(regex(pattern = r"^.+:reply:\{[a-z0-9_-]{1,64}\}:[A-Za-z0-9._-]{1,128}$"))]
    replyto: Option<String>,
    /// RFC 3339; an expired command is not started and a running one is stopped.
    #[schemars(extend("format" = "date-time"))]
    deadline: Option<String>,
    /// Deliveries before dead-lettering, at least 1. Default: the agent's setting (5).
    #[schemars(regex(pattern = r"^\s*[1-9][0-9]*\s*$"))]
    maxattempts: Option<String>,
    /// Commands of one role with the same key yield one accepted result (for the agents'
    /// dedup_ttl_secs, a day by default); a later one is acknowledged as a duplicate. Without
    /// a key, only a second run of the same entry (after a reclaim) is a duplicate.
    idempotencykey: Option<String>,
    /// The workflow run this command belongs to.
    runid: Option<String>,
    /// The workflow step this command belongs to.
    stepid: Option<String>,
    /// The id of the entry that caused this one.
    causationid: Option<String>,
}

/// How a command ended.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
enum StatusField {
    Completed,
    Failed,
    Canceled,
}

/// A result on its role's `<prefix>:result:{<role>}` and on the command's `replyto` stream.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(title = "MindBus result entry")]
struct ResultFields {
    #[schemars(flatten)]
    envelope: EnvelopeFields,
    /// The command's `id`.
    #[schemars(length(min = 1, max = 256))]
    correlationid: String,
    /// `completed`, `failed` or `canceled`.
    status: StatusField,
    /// Which delivery produced the result, from 1. Default: 1.
    #[schemars(regex(pattern = r"^[1-9][0-9]*$"))]
    attempt: Option<String>,
    /// The agent role that answered.
    role: Option<String>,
    /// Required unless `status` is `completed`, e.g. `deadline_exceeded`, `handler_error`.
    errortype: Option<String>,
    /// A human-readable failure message.
    error: Option<String>,
    /// `true` when sending the command again may succeed.
    #[schemars(regex(pattern = "^(true|false)$"))]
    retryable: Option<String>,
    /// Copied from the command.
    runid: Option<String>,
    /// Copied from the command.
    stepid: Option<String>,
}

/// An event on a role's `<prefix>:event:{<role>}`, e.g. `mindbus.command.started`.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(title = "MindBus event entry")]
struct EventFields {
    #[schemars(flatten)]
    envelope: EnvelopeFields,
    /// The command the event is about.
    #[schemars(length(min = 1, max = 256))]
    correlationid: Option<String>,
    /// The agent role involved.
    role: Option<String>,
    /// The attempt it happened in.
    #[schemars(regex(pattern = r"^[1-9][0-9]*$"))]
    attempt: Option<String>,
    /// Copied from the command.
    runid: Option<String>,
    /// Copied from the command.
    stepid: Option<String>,
}

/// A dead letter on a role's `<prefix>:dlq:{<role>}`: the original entry's fields plus these.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(title = "MindBus dead-letter entry")]
struct DeadLetterFields {
    /// The stream the original entry came from.
    dlqstream: String,
    /// The original entry's id there.
    #[schemars(regex(pattern = r"^[0-9]+-[0-9]+$"))]
    dlqentryid: String,
    /// How many times it was delivered.
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    dlqdeliveries: String,
    /// The category of the last failure, e.g. `malformed` or `max_attempts_exceeded`.
    dlqerrortype: String,
    /// Why, naming the field when the entry was malformed.
    dlqreason: String,
    /// The consumer that gave up on it.
    dlqconsumer: Option<String>,
    /// When it was dead-lettered, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    dlqtime: String,
    /// The original entry's fields, unchanged.
    #[schemars(flatten)]
    original: BTreeMap<String, String>,
}

/// The entry kinds, as `(file stem, schema)`, in the order they are written to `schemas/`.
pub fn entry_schemas() -> Vec<(&'static str, Schema)> {
    let generator = || {
        SchemaSettings::draft2020_12()
            .with_transform(RecursiveTransform(no_null))
            .into_generator()
    };
    vec![
        (
            "command",
            generator().into_root_schema_for::<CommandFields>(),
        ),
        ("result", generator().into_root_schema_for::<ResultFields>()),
        ("event", generator().into_root_schema_for::<EventFields>()),
        (
            "deadletter",
            generator().into_root_schema_for::<DeadLetterFields>(),
        ),
    ]
}

/// Redis has no null: an optional field is one that may be left out, never one set to null.
fn no_null(schema: &mut Schema) {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema.insert("type".into(), only);
        }
    }
}
