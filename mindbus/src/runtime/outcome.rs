//! Building the entries a finished command leaves behind: result, events, dead letter.

use serde_json::Value;

use super::Shared;
use super::measure::Outcome;
use super::writer::Finish;
use crate::config::LifecycleEvents;
use crate::wire::{
    Command, CommandResult, DeadLetter, DeadLettered, EntryId, ErrorType, Event, EventKind, Failed,
    Failure, Fields, PackedFields, Payload, Status,
};

/// A lifecycle event about `command`, carrying its trace context and run ids.
pub(crate) fn event(
    kind: EventKind,
    source: &str,
    role: &str,
    command: &Command,
    attempt: u32,
    data: Value,
) -> Event {
    let mut event = Event::new(
        kind,
        source,
        command.envelope.id.clone(),
        Payload::json(data),
    );
    event.envelope.traceparent = command.envelope.traceparent;
    event.envelope.tracestate = command.envelope.tracestate.clone();
    event.role = Some(role.to_owned());
    event.attempt = Some(attempt);
    event.runid = command.runid.clone();
    event.stepid = command.stepid.clone();
    event
}

/// How a command ended, before it is written.
#[derive(Debug)]
pub(crate) enum Ending {
    Completed(Value),
    Failed(Failure),
    Canceled,
}

impl Shared {
    pub(crate) fn event_fields(
        &self,
        kind: EventKind,
        command: &Command,
        attempt: u32,
        data: Value,
    ) -> Option<PackedFields> {
        let event = event(kind, &self.source, &self.role, command, attempt, data);
        event
            .encode_compact_packed()
            .map_err(|e| tracing::error!(error = %e, "cannot encode an event"))
            .ok()
    }

    /// The finish for a command that ended, one way or another.
    pub(crate) fn finish(
        &self,
        entry: EntryId,
        command: &Command,
        attempt: u32,
        ending: Ending,
    ) -> Finish {
        let (status, data, failure) = match ending {
            Ending::Completed(value) => (Status::Completed, value, None),
            Ending::Failed(failure) => (Status::Failed, Value::Null, Some(failure)),
            Ending::Canceled => (Status::Canceled, Value::Null, Some(canceled())),
        };
        let kind = match status {
            Status::Completed => EventKind::Completed,
            Status::Failed => EventKind::Failed,
            Status::Canceled => EventKind::Canceled,
        };
        let detail = failure.as_ref().map_or(Value::Null, |f| {
            let failed = Failed {
                errortype: f.errortype.as_str().to_owned(),
                error: f.error.clone(),
            };
            serde_json::to_value(failed).unwrap_or_default()
        });
        let result = self.result(command, attempt, status, data, failure);
        // Without a `completed` event, a duplicate is told apart by the agent instead of the
        // script, so the finish carries the result alone.
        let silent = status == Status::Completed && self.config.events == LifecycleEvents::Failures;
        let (event, on_duplicate) = if silent {
            let duplicate = self.event_fields(EventKind::Duplicate, command, attempt, Value::Null);
            (PackedFields::default(), duplicate.unwrap_or_default())
        } else {
            let event = self.event_fields(kind, command, attempt, detail);
            (event.unwrap_or_default(), PackedFields::default())
        };
        Finish {
            entry: Some(entry),
            done_key: command
                .idempotencykey
                .as_deref()
                .map(|key| self.keys.done(&self.role, key))
                .unwrap_or_default(),
            replyto: command.replyto.clone(),
            result,
            event,
            on_duplicate,
            dead_letter: PackedFields::default(),
            outcome: match status {
                Status::Completed => Outcome::Completed,
                Status::Failed => Outcome::Failed,
                Status::Canceled => Outcome::Canceled,
            },
        }
    }

    fn result(
        &self,
        command: &Command,
        attempt: u32,
        status: Status,
        data: Value,
        failure: Option<Failure>,
    ) -> PackedFields {
        let content_type = command.envelope.data.content_type;
        let mut result = CommandResult::new(
            command.envelope.id.clone(),
            status,
            &self.source,
            Payload {
                content_type,
                value: data,
            },
        );
        result.envelope.traceparent = command.envelope.traceparent;
        result.envelope.tracestate = command.envelope.tracestate.clone();
        result.attempt = attempt;
        result.role = Some(self.role.clone());
        result.failure = failure;
        result.runid = command.runid.clone();
        result.stepid = command.stepid.clone();
        match result.encode_compact_packed() {
            Ok(fields) => fields,
            Err(e) => {
                // The handler's output cannot be encoded as the command's content type.
                result.envelope.data = Payload::json(Value::Null);
                result.status = Status::Failed;
                result.failure = Some(Failure {
                    errortype: ErrorType::HandlerError,
                    error: e.to_string(),
                    retryable: false,
                });
                result.encode_compact_packed().unwrap_or_default()
            }
        }
    }

    /// The finish that moves an entry to the dead-letter stream, answering its command (when
    /// it has one) with a failed result so no client waits forever.
    pub(crate) fn dead_letter(
        &self,
        entry: EntryId,
        original: Fields,
        command: &Command,
        deliveries: u32,
        errortype: ErrorType,
        reason: String,
    ) -> Finish {
        let failure = Failure {
            errortype: errortype.clone(),
            error: reason.clone(),
            retryable: false,
        };
        let mut finish = self.finish(entry, command, deliveries, Ending::Failed(failure));
        let letter = DeadLetter {
            stream: self.stream.clone(),
            entry,
            deliveries,
            errortype: errortype.clone(),
            reason: reason.clone(),
            consumer: self.consumer.clone(),
            time: jiff::Timestamp::now(),
            original,
        };
        finish.dead_letter = PackedFields::from(&letter.encode());
        finish.outcome = match errortype {
            ErrorType::Malformed => Outcome::Malformed,
            _ => Outcome::Exhausted,
        };
        let detail = DeadLettered {
            errortype: errortype.as_str().to_owned(),
            reason: reason.clone(),
            deliveries,
        };
        let detail = serde_json::to_value(detail).unwrap_or_default();
        finish.event = self
            .event_fields(EventKind::DeadLettered, command, deliveries, detail)
            .unwrap_or_default();
        finish
    }
}

fn canceled() -> Failure {
    Failure {
        errortype: ErrorType::Canceled,
        error: "the command was cancelled".into(),
        retryable: false,
    }
}
