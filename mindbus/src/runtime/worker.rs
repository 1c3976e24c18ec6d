//! Handling one delivered entry: decode, check, run with retries, finish.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Shared;
use super::handler::{Context, HandlerError};
use super::outcome::Ending;
use super::writer::{Finish, Write};
use crate::config::LifecycleEvents;
use crate::group::Delivery;
use crate::telemetry::spans;
use crate::wire::{
    Command, EntryId, ErrorType, EventKind, Failure, Fields, Origin, Payload, Retried, derived_id,
    field_text,
};

enum Invocation {
    Done(Result<Value, HandlerError>),
    Panicked(String),
    Canceled,
    DeadlineExceeded,
    Aborted,
}

impl Shared {
    /// Starts handling `delivery` unless it already runs here; the permit is held until the
    /// command's finish is written.
    pub(crate) fn dispatch(self: &Arc<Self>, delivery: Delivery, permit: OwnedSemaphorePermit) {
        let token = CancellationToken::new();
        if !self.cancellations.claim(delivery.entry.id, token.clone()) {
            return;
        }
        let shared = Arc::clone(self);
        let in_flight = self.metrics.in_flight();
        self.workers.spawn(async move {
            let entry = delivery.entry.id;
            shared.process(delivery, token).await;
            shared.cancellations.end(entry);
            drop((permit, in_flight));
        });
    }

    async fn process(&self, delivery: Delivery, token: CancellationToken) {
        let started = Instant::now();
        let id = delivery.entry.id;
        let finish = match delivery.entry.fields {
            // Deleted while pending: there is nothing to run, only to acknowledge.
            None => Some(Finish {
                entry: Some(id),
                ..Finish::default()
            }),
            Some(fields) => {
                self.handle_entry(id, fields, delivery.deliveries, token)
                    .await
            }
        };
        if let Some(mut finish) = finish {
            let duplicate = std::mem::take(&mut finish.on_duplicate);
            let outcome = finish.outcome;
            let accepted = self.write_finish(finish).await;
            if let Some(accepted) = accepted {
                self.metrics.finished(outcome, accepted);
                self.metrics
                    .duration
                    .record(started.elapsed().as_secs_f64());
            }
            if accepted == Some(false) && !duplicate.is_empty() {
                let _ = self.writes.send(Write::Event(duplicate)).await;
            }
        }
    }

    /// Queues a finish and waits until it is written; `Some(true)` if its result was accepted.
    pub(crate) async fn write_finish(&self, finish: Finish) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(Write::Finish(Box::new(finish), tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    pub(crate) async fn emit(&self, kind: EventKind, command: &Command, attempt: u32, data: Value) {
        if let Some(fields) = self.event_fields(kind, command, attempt, data) {
            let _ = self.writes.send(Write::Event(fields)).await;
        }
    }

    /// A `received` or `started` event, when the agent writes them (`agent.events`).
    async fn emit_lifecycle(&self, kind: EventKind, command: &Command, attempt: u32) {
        if self.config.events == LifecycleEvents::All {
            self.emit(kind, command, attempt, Value::Null).await;
        }
    }

    async fn handle_entry(
        &self,
        id: EntryId,
        fields: Fields,
        deliveries: u32,
        token: CancellationToken,
    ) -> Option<Finish> {
        let origin = Origin {
            stream: &self.stream,
            entry: id,
        };
        let decoded = Command::decode(&fields, origin)
            .map_err(|e| e.to_string())
            .and_then(|command| self.check_replyto(command));
        let command = match decoded {
            Ok(mut command) => {
                // Its results and events carry its trace state as parsed, never more.
                let state = command.envelope.tracestate.take();
                command.envelope.tracestate =
                    state.as_deref().and_then(spans::tracestate_to_pass_on);
                Arc::new(command)
            }
            Err(reason) => {
                tracing::warn!(entry = %id, stream = %self.stream, error = %reason, "dead-lettering a malformed command");
                let stub = salvage(&fields, origin, &self.keys, &self.role);
                return Some(self.dead_letter(
                    id,
                    fields,
                    &stub,
                    deliveries,
                    ErrorType::Malformed,
                    reason,
                ));
            }
        };
        let max = command.maxattempts.unwrap_or(self.config.maxattempts);
        if deliveries > max {
            let reason = format!("delivered {deliveries} times; maxattempts is {max}");
            return Some(self.dead_letter(
                id,
                fields,
                &command,
                deliveries,
                ErrorType::MaxAttemptsExceeded,
                reason,
            ));
        }
        if self
            .cancellations
            .start(id, &command.envelope.id, command.runid.as_deref())
        {
            return Some(self.finish(id, &command, deliveries, Ending::Canceled));
        }
        if command
            .deadline
            .is_some_and(|d| d <= jiff::Timestamp::now())
        {
            let failure = deadline_failure("the deadline passed before the command started");
            return Some(self.finish(id, &command, deliveries, Ending::Failed(failure)));
        }
        let span = spans::consumer(&self.stream, &self.role, &command, deliveries);
        async {
            // The delivery count is the event's `attempt`.
            self.emit_lifecycle(EventKind::Received, &command, deliveries)
                .await;
            self.attempts(id, command, deliveries, max, fields, token)
                .await
        }
        .instrument(span)
        .await
    }

    /// A command whose `replyto` is not a reply stream of its role is malformed.
    fn check_replyto(&self, command: Command) -> Result<Command, String> {
        match command
            .replyto
            .as_deref()
            .map(|key| self.keys.check_reply(key, &self.role))
        {
            Some(Err(e)) => Err(format!("field `replyto` is invalid: {e}")),
            _ => Ok(command),
        }
    }

    async fn attempts(
        &self,
        id: EntryId,
        command: Arc<Command>,
        first: u32,
        max: u32,
        fields: Fields,
        token: CancellationToken,
    ) -> Option<Finish> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.retry_base_ms))
            .with_max_delay(Duration::from_millis(self.config.retry_max_ms))
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = first;
        loop {
            self.emit_lifecycle(EventKind::Started, &command, attempt)
                .await;
            let invoked = self
                .invoke(&command, attempt, &token)
                .instrument(spans::attempt(attempt))
                .await;
            let failure = match invoked {
                Invocation::Done(Ok(value)) => {
                    return Some(self.finish(id, &command, attempt, Ending::Completed(value)));
                }
                Invocation::Done(Err(e)) if !e.retryable => {
                    let failure = Failure {
                        errortype: e.errortype,
                        error: e.message,
                        retryable: false,
                    };
                    return Some(self.finish(id, &command, attempt, Ending::Failed(failure)));
                }
                Invocation::Done(Err(e)) => e,
                Invocation::Panicked(message) => {
                    HandlerError::retryable(message).with_type(ErrorType::Panicked)
                }
                Invocation::Canceled => {
                    return Some(self.finish(id, &command, attempt, Ending::Canceled));
                }
                Invocation::DeadlineExceeded => {
                    let failure = deadline_failure("the deadline passed while the command ran");
                    return Some(self.finish(id, &command, attempt, Ending::Failed(failure)));
                }
                Invocation::Aborted => return None,
            };
            tracing::warn!(command.id = %command.envelope.id, trace_id = %command.envelope.traceparent.trace_id_hex(), attempt, error = %failure, "attempt failed");
            if attempt >= max {
                let reason = format!("{attempt} attempts failed; the last with {failure}");
                return Some(self.dead_letter(
                    id,
                    fields,
                    &command,
                    attempt,
                    ErrorType::MaxAttemptsExceeded,
                    reason,
                ));
            }
            let delay = delays
                .next()
                .unwrap_or(Duration::from_millis(self.config.retry_max_ms));
            let detail = Retried {
                errortype: failure.errortype.as_str().to_owned(),
                error: failure.message.clone(),
                delay_ms: delay.as_millis() as u64,
            };
            let detail = serde_json::to_value(detail).unwrap_or_default();
            self.metrics.retries.increment(1);
            self.emit(EventKind::Retried, &command, attempt, detail)
                .await;
            tokio::select! {
                _ = self.abort.cancelled() => return None,
                _ = token.cancelled() => return Some(self.finish(id, &command, attempt, Ending::Canceled)),
                _ = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
            if let Err(e) = self.leases.set_attempt(id, attempt).await {
                tracing::warn!(entry = %id, error = %e, "could not record the attempt count");
            }
        }
    }

    async fn invoke(
        &self,
        command: &Arc<Command>,
        attempt: u32,
        token: &CancellationToken,
    ) -> Invocation {
        let handler_token = token.child_token();
        let ctx = Context {
            command: Arc::clone(command),
            attempt,
            cancel: handler_token.clone(),
            progress: self.progress.clone(),
        };
        let call = AssertUnwindSafe(self.handler.call(ctx)).catch_unwind();
        let until_deadline = command.deadline.map(|d| {
            Duration::try_from(d.duration_since(jiff::Timestamp::now())).unwrap_or(Duration::ZERO)
        });
        let deadline = async move {
            match until_deadline {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = self.abort.cancelled() => Invocation::Aborted,
            _ = token.cancelled() => Invocation::Canceled,
            _ = deadline => Invocation::DeadlineExceeded,
            result = call => match result {
                Ok(result) => Invocation::Done(result),
                Err(panic) => Invocation::Panicked(panic_message(panic.as_ref())),
            },
        };
        handler_token.cancel();
        outcome
    }
}

fn deadline_failure(message: &str) -> Failure {
    Failure {
        errortype: ErrorType::DeadlineExceeded,
        error: message.into(),
        retryable: false,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    format!(
        "handler panicked: {}",
        text.unwrap_or_else(|| "(no message)".into())
    )
}

/// What can be read from a malformed entry, so its failed result reaches whoever waits:
/// its `id` and `replyto` when they are usable.
fn salvage(fields: &Fields, origin: Origin<'_>, keys: &crate::keys::Keys, role: &str) -> Command {
    let text = |name: &str| field_text(fields, name);
    let mut stub = Command::new(
        text("type").unwrap_or("malformed"),
        Payload::json(Value::Null),
    );
    stub.envelope.id = text("id")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| derived_id(origin));
    stub.envelope.traceparent = crate::wire::TraceParent::rooted_at(&stub.envelope.id);
    stub.replyto = text("replyto")
        .filter(|key| keys.check_reply(key, role).is_ok())
        .map(str::to_owned);
    stub
}
