//! Results: the one accepted outcome of a command.

use std::fmt;
use std::str::FromStr;

use super::MessageId;
use super::envelope::{Envelope, Extensions, Identity, Origin, Payload};
use super::fields::{FieldReader, FieldWriter, Fields, PackedFields};
use super::{ErrorType, WireError};

/// The `type` of every result entry.
pub const RESULT_TYPE: &str = "mindbus.result";

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The handler returned a value.
    Completed,
    /// The command was not run, or its handler failed; see `errortype`.
    Failed,
    /// The command was cancelled before or while it ran.
    Canceled,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "completed" => Ok(Status::Completed),
            "failed" => Ok(Status::Failed),
            "canceled" => Ok(Status::Canceled),
            other => Err(format!(
                "`{other}` is not one of completed, failed, canceled"
            )),
        }
    }
}

/// Why a command did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A machine-readable category.
    pub errortype: ErrorType,
    /// A human-readable message.
    pub error: String,
    /// Whether sending the same command again may succeed.
    pub retryable: bool,
}

/// A result on its role's result stream, `<prefix>:result:{<role>}` (and on the command's
/// `replyto` stream).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// The CloudEvents attributes; `data` is the handler's output.
    pub envelope: Envelope,
    /// The command's `id`.
    pub correlationid: MessageId,
    /// How the command ended.
    pub status: Status,
    /// Which delivery produced this result. Default (and left off the wire): 1.
    pub attempt: u32,
    /// The agent role that answered.
    pub role: Option<String>,
    /// Set unless `status` is `completed`.
    pub failure: Option<Failure>,
    /// Copied from the command.
    pub runid: Option<String>,
    /// Copied from the command.
    pub stepid: Option<String>,
    /// Unknown fields, kept.
    pub extensions: Extensions,
}

impl CommandResult {
    /// A result answering a command with the given id.
    pub fn new(correlationid: MessageId, status: Status, source: &str, data: Payload) -> Self {
        Self {
            envelope: Envelope::new(RESULT_TYPE, source, data),
            correlationid,
            status,
            attempt: 1,
            role: None,
            failure: None,
            runid: None,
            stepid: None,
            extensions: Extensions::new(),
        }
    }

    /// The result as one JSON object, as people and HTTP clients see it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "correlationid": self.correlationid.to_string(),
            "status": self.status.as_str(),
            "attempt": self.attempt,
            "role": self.role,
            "data": self.envelope.data.value,
        });
        if let Some(failure) = &self.failure {
            out["errortype"] = serde_json::json!(failure.errortype.as_str());
            out["error"] = serde_json::json!(failure.error);
            out["retryable"] = serde_json::json!(failure.retryable);
        }
        out
    }

    /// The command a result entry answers, read without decoding the rest (for a reader
    /// that skips the results nobody waits for).
    pub fn answers(fields: &[(String, Vec<u8>)]) -> Option<MessageId> {
        super::field_text(fields, "correlationid")?.parse().ok()
    }

    /// Decodes a result from stream fields.
    pub fn decode(
        fields: impl AsRef<[(String, Vec<u8>)]>,
        origin: Origin<'_>,
    ) -> Result<Self, WireError> {
        let mut r = FieldReader::new(fields.as_ref());
        let envelope = Envelope::read(&mut r, origin)?;
        let status: Status = r.parse_required("status")?;
        let failure = read_failure(&mut r, status)?;
        Ok(Self {
            envelope,
            correlationid: r.parse_required("correlationid")?,
            status,
            attempt: r.parse("attempt")?.unwrap_or(1),
            role: r.text("role")?,
            failure,
            runid: r.text("runid")?,
            stepid: r.text("stepid")?,
            extensions: r.rest()?,
        })
    }

    /// Encodes the result as stream fields.
    pub fn encode(&self) -> Result<Fields, WireError> {
        Ok(self.writer(Identity::Carried)?.finish())
    }

    /// Encodes the result without its `id` and `time`, into one buffer, as the agents'
    /// writer sends it: every reader derives them from the stream key and entry id, their
    /// documented defaults. The copy on a `replyto` stream then has an id of its own;
    /// results are matched to commands by `correlationid`, never by their own id.
    pub fn encode_compact_packed(&self) -> Result<PackedFields, WireError> {
        Ok(self.writer(Identity::FromEntry)?.finish_packed())
    }

    fn writer(&self, identity: Identity) -> Result<FieldWriter, WireError> {
        let mut w = FieldWriter::default();
        self.envelope.write(&mut w, identity)?;
        w.show("correlationid", &self.correlationid)
            .show("status", self.status)
            .opt("attempt", (self.attempt != 1).then_some(self.attempt))
            .opt("role", self.role.as_deref());
        if let Some(failure) = &self.failure {
            w.show("errortype", &failure.errortype)
                .put("error", failure.error.as_str())
                .show("retryable", failure.retryable);
        }
        w.opt("runid", self.runid.as_deref())
            .opt("stepid", self.stepid.as_deref())
            .extensions(&self.extensions);
        Ok(w)
    }
}

fn read_failure(r: &mut FieldReader, status: Status) -> Result<Option<Failure>, WireError> {
    if status == Status::Completed {
        // Failure fields on a completed result are left in place, as unknown fields.
        return Ok(None);
    }
    let errortype: ErrorType = r
        .parse("errortype")?
        .ok_or(WireError::MissingField { field: "errortype" })?;
    let error = r.text("error")?;
    let retryable = r.parse::<bool>("retryable")?.unwrap_or(false);
    Ok(Some(Failure {
        error: error.unwrap_or_else(|| errortype.to_string()),
        errortype,
        retryable,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::EntryId;

    const ORIGIN: Origin<'static> = Origin {
        stream: "mindbus:result",
        entry: EntryId { ms: 1, seq: 0 },
    };

    /// A result without data that did not complete, for `why`.
    fn unsuccessful(status: Status, errortype: ErrorType, why: &str) -> CommandResult {
        let mut result = CommandResult::new(
            MessageId::new(),
            status,
            "agent",
            Payload::json(json!(null)),
        );
        result.failure = Some(Failure {
            errortype,
            error: why.into(),
            retryable: false,
        });
        result
    }

    #[test]
    fn failed_result_round_trips() {
        let mut result = unsuccessful(
            Status::Failed,
            ErrorType::DeadlineExceeded,
            "deadline passed before start",
        );
        result.attempt = 2;
        result.role = Some("echo".into());
        assert_eq!(
            CommandResult::decode(result.encode().unwrap(), ORIGIN).unwrap(),
            result
        );
    }

    #[test]
    fn a_first_attempt_without_data_leaves_both_off_and_reads_back_the_same() {
        let result = unsuccessful(
            Status::Canceled,
            ErrorType::Canceled,
            "the command was cancelled",
        );
        let fields = result.encode().unwrap();
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            !names.contains(&"attempt") && !names.contains(&"data"),
            "{names:?}"
        );
        assert_eq!(CommandResult::decode(fields, ORIGIN).unwrap(), result);
    }

    #[test]
    fn failure_without_errortype_is_malformed() {
        let mut result = CommandResult::new(
            MessageId::new(),
            Status::Completed,
            "agent",
            Payload::json(json!(1)),
        );
        let mut fields = result.encode().unwrap();
        for (name, value) in &mut fields {
            if name == "status" {
                *value = b"failed".to_vec();
            }
        }
        let err = CommandResult::decode(fields, ORIGIN).unwrap_err();
        assert_eq!(err.field(), Some("errortype"));
        result.status = Status::Canceled;
        assert!(CommandResult::decode(result.encode().unwrap(), ORIGIN).is_err());
    }
}
