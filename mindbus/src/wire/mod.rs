//! The wire contract: typed entries and their flat Redis stream fields.
//!
//! This module does no IO. Every entry is a set of flat string fields named after
//! CloudEvents 1.0 attributes (`id`, `type`, `source`, `time`, `datacontenttype`, `data`),
//! readable in `redis-cli`. Decoding applies the documented defaults, keeps unknown fields,
//! and fails with a [`WireError`] that names the offending field.

mod codec;
mod command;
mod control;
mod dead_letter;
mod entry_id;
mod envelope;
mod error;
mod error_type;
mod event;
mod fields;
mod id;
mod result;
mod run;
pub mod schema;
mod trace;

pub use codec::{Codec, ContentType, Json, MsgPack, without_nul};
pub use command::{Command, MAX_COMMAND_BYTES, MAX_COMMAND_FIELDS, TENANT_FIELD};
pub use control::{CANCEL_TYPE, Cancel};
pub use dead_letter::{DLQ_FIELD_PREFIX, DeadLetter};
pub use entry_id::EntryId;
pub use envelope::{ANONYMOUS_SOURCE, Envelope, Extensions, Origin, Payload, derived_id};
pub use error::WireError;
pub use error_type::ErrorType;
pub use event::{
    DeadLettered, Event, EventKind, Failed, LlmUsage, Retried, TextChunk, Usage, UsageReport,
};
pub use fields::{Fields, PackedFields, field_text};
pub use id::{MAX_ID_BYTES, MessageId};
pub use result::{CommandResult, Failure, RESULT_TYPE, Status};
pub use run::{
    Approval, GetRun, ListRuns, ORCHESTRATOR_ROLE, OVER_QUOTA, PartPage, RunChange, RunCommand,
    RunEnded, RunEventKind, RunList, RunPartPage, RunRef, RunRequest, RunRequestError, RunStarted,
    RunStatus, RunStep, RunSummary, RunView, StartRun, StepView, run_id,
};
pub use trace::TraceParent;
