//! Commands: what a producer asks an agent role to do.

use jiff::Timestamp;

use super::WireError;
use super::envelope::{Envelope, Extensions, Identity, Origin, Payload};
use super::fields::{FieldReader, FieldWriter, Fields};

/// A command on `<prefix>:cmd:{<role>}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The CloudEvents attributes.
    pub envelope: Envelope,
    /// A stream the result is also written to, so a client can wait on its own key.
    pub replyto: Option<String>,
    /// After this instant the command is not started; a running one is stopped.
    pub deadline: Option<Timestamp>,
    /// How many deliveries before the command is dead-lettered. Default: the agent's setting.
    pub maxattempts: Option<u32>,
    /// Commands of one role with the same key yield one accepted result (for the agents'
    /// `dedup_ttl_secs`); a later one is acknowledged as a duplicate. Without a key, only a
    /// second run of the same entry (after a reclaim) is recognised as a duplicate.
    pub idempotencykey: Option<String>,
    /// The workflow run this command belongs to.
    pub runid: Option<String>,
    /// The workflow step this command belongs to.
    pub stepid: Option<String>,
    /// The id of the entry that caused this command.
    pub causationid: Option<String>,
    /// Unknown fields, kept.
    pub extensions: Extensions,
}

/// The field naming whom a command's LLM calls are charged to (per-tenant budgets). It is
/// an extension field: roles without budgets ignore it.
pub const TENANT_FIELD: &str = "tenant";

/// Most fields a command entry may have. Commands carry a dozen; the bound keeps every
/// entry small enough to be dead-lettered whole by one script call.
pub const MAX_COMMAND_FIELDS: usize = 1_000;
/// Most bytes (names and values) a command entry may hold.
pub const MAX_COMMAND_BYTES: usize = 8 << 20;

/// Refuses an entry over [`MAX_COMMAND_FIELDS`] or [`MAX_COMMAND_BYTES`].
fn check_size(fields: &[(String, Vec<u8>)]) -> Result<(), WireError> {
    if fields.len() > MAX_COMMAND_FIELDS {
        return Err(WireError::TooLarge(format!(
            "the entry has {} fields; a command may have at most {MAX_COMMAND_FIELDS}",
            fields.len()
        )));
    }
    let bytes: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > MAX_COMMAND_BYTES {
        return Err(WireError::TooLarge(format!(
            "the entry holds {bytes} bytes; a command may hold at most {MAX_COMMAND_BYTES}"
        )));
    }
    Ok(())
}

impl Command {
    /// The tenant the command spends for, if it names one.
    pub fn tenant(&self) -> Option<&str> {
        self.extensions.get(TENANT_FIELD).map(String::as_str)
    }

    /// Charges the command to `tenant`, replacing any tenant it named.
    pub fn set_tenant(&mut self, tenant: &str) {
        self.extensions
            .insert(TENANT_FIELD.to_owned(), tenant.to_owned());
    }

    /// A new command of type `ty` carrying `data`.
    pub fn new(ty: impl Into<String>, data: Payload) -> Self {
        Self {
            envelope: Envelope::new(ty, super::envelope::ANONYMOUS_SOURCE, data),
            replyto: None,
            deadline: None,
            maxattempts: None,
            idempotencykey: None,
            runid: None,
            stepid: None,
            causationid: None,
            extensions: Extensions::new(),
        }
    }

    /// Decodes a command from stream fields, applying the documented defaults.
    pub fn decode(
        fields: impl AsRef<[(String, Vec<u8>)]>,
        origin: Origin<'_>,
    ) -> Result<Self, WireError> {
        check_size(fields.as_ref())?;
        let mut r = FieldReader::new(fields.as_ref());
        let envelope = Envelope::read(&mut r, origin)?;
        let maxattempts = r.parse::<u32>("maxattempts")?;
        if maxattempts == Some(0) {
            return Err(WireError::invalid("maxattempts", "must be at least 1"));
        }
        Ok(Self {
            envelope,
            replyto: r.text("replyto")?,
            deadline: r.parse("deadline")?,
            maxattempts,
            idempotencykey: r.text("idempotencykey")?,
            runid: r.text("runid")?,
            stepid: r.text("stepid")?,
            causationid: r.text("causationid")?,
            extensions: r.rest()?,
        })
    }

    /// Encodes the command as stream fields.
    pub fn encode(&self) -> Result<Fields, WireError> {
        let mut w = FieldWriter::default();
        self.envelope.write(&mut w, Identity::Carried)?;
        w.opt("replyto", self.replyto.as_deref())
            .opt("deadline", self.deadline)
            .opt("maxattempts", self.maxattempts)
            .opt("idempotencykey", self.idempotencykey.as_deref())
            .opt("runid", self.runid.as_deref())
            .opt("stepid", self.stepid.as_deref())
            .opt("causationid", self.causationid.as_deref())
            .extensions(&self.extensions);
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::{ContentType, EntryId, derived_id};

    const ORIGIN: Origin<'static> = Origin {
        stream: "mindbus:cmd:{echo}",
        entry: EntryId {
            ms: 1_700_000_000_000,
            seq: 3,
        },
    };

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn smallest_command_gets_defaults() {
        let cmd = Command::decode(
            fields(&[("type", "echo.say"), ("data", r#"{"text":"hi"}"#)]),
            ORIGIN,
        )
        .unwrap();
        assert_eq!(cmd.envelope.ty, "echo.say");
        assert_eq!(cmd.envelope.data.value, json!({"text": "hi"}));
        assert_eq!(cmd.envelope.data.content_type, ContentType::Json);
        assert_eq!(cmd.envelope.id, derived_id(ORIGIN));
        assert_eq!(cmd.envelope.id.as_uuid().unwrap().get_version_num(), 7);
        assert_eq!(cmd.envelope.time.as_millisecond(), 1_700_000_000_000);
        assert_eq!(cmd.envelope.source, "urn:mindbus:anonymous");
        assert_eq!(cmd.maxattempts, None);
    }

    #[test]
    fn round_trips_through_fields_in_both_encodings() {
        for content_type in [ContentType::Json, ContentType::MsgPack] {
            let mut cmd = Command::new(
                "echo.say",
                Payload {
                    content_type,
                    value: json!({"n": [1, 2]}),
                },
            );
            cmd.replyto = Some("reply:1".into());
            cmd.maxattempts = Some(3);
            cmd.deadline = Some(Timestamp::from_second(1_800_000_000).unwrap());
            cmd.extensions.insert("tenant".into(), "acme".into());
            let back = Command::decode(cmd.encode().unwrap(), ORIGIN).unwrap();
            assert_eq!(back, cmd);
        }
    }

    #[test]
    fn malformed_entries_name_the_field() {
        let cases = [
            (fields(&[("data", "{}")]), "type"),
            (fields(&[("type", "a"), ("data", "{not json")]), "data"),
            (
                fields(&[("type", "a"), ("maxattempts", "0")]),
                "maxattempts",
            ),
            (
                fields(&[("type", "a"), ("deadline", "tomorrow")]),
                "deadline",
            ),
            (fields(&[("type", "a"), ("id", "4\u{1}2")]), "id"),
            (
                fields(&[("type", "a"), ("datacontenttype", "text/plain")]),
                "datacontenttype",
            ),
            (
                fields(&[("type", "a"), ("traceparent", "00-xyz")]),
                "traceparent",
            ),
        ];
        for (input, field) in cases {
            let err = Command::decode(input, ORIGIN).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
    }
}
