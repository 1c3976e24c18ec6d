//! Server-sent events: a command's events from its role's event stream, or a run's from the
//! orchestrator's and its roles' event streams, each with its stream entry id as the SSE
//! `id`, so a client that reconnects with `Last-Event-ID` loses nothing (the follower hands
//! out the streams' merged history in entry-id order; a run's stream resumes at the
//! `Last-Event-ID` entry itself, a command's is read again from its start, so a stream
//! resumed after the last message ends at once instead of sending what followed it on
//! another stream). A command's result, sent last, goes under an id larger than every event
//! sent before it. One dedicated Redis connection per open stream, at most `max_streams` at once
//! and a key's `max_streams` of them per key. Reading starts no earlier than the reply TTL
//! ago, so one request can never make the gateway re-read the whole event stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use mindbus::bus::Follower;
use mindbus::wire::MessageId;
use mindbus::wire::{CommandResult, EntryId, Event, EventKind, Origin, RunEventKind};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::AppError;

/// Which events a stream carries.
#[derive(Debug, Clone)]
pub enum Filter {
    /// One command's, of roles in scope.
    Command(MessageId, Scope),
    /// One run's (its own transitions, and its commands' events of roles in scope).
    Run(Uuid, Scope),
}

impl Filter {
    /// The id, when it is a UUID (only a UUIDv7 says when to start reading).
    fn uuid(&self) -> Option<Uuid> {
        match self {
            Filter::Command(id, _) => id.as_uuid(),
            Filter::Run(id, _) => Some(*id),
        }
    }

    fn wants(&self, event: &Event) -> bool {
        match self {
            Filter::Command(id, roles) => {
                event.correlationid.as_ref() == Some(id)
                    && roles.allows_named(event.role.as_deref())
            }
            // The run's own transitions name no role: a key that may see the run sees
            // them; its commands' events only for roles in scope.
            Filter::Run(id, roles) => {
                event.runid.as_deref() == Some(id.to_string().as_str())
                    && event.role.as_deref().is_none_or(|role| roles.allows(role))
            }
        }
    }

    /// Whether `event` is the last one this stream sends.
    fn ends_with(&self, event: &Event) -> bool {
        match self {
            Filter::Command(..) => matches!(
                event.kind(),
                Some(
                    EventKind::Completed
                        | EventKind::Failed
                        | EventKind::Canceled
                        | EventKind::DeadLettered
                )
            ),
            Filter::Run(..) => event.envelope.ty == RunEventKind::Ended.as_str(),
        }
    }
}

/// How far before a command's or run's creation (by the gateway's clock) reading starts, so
/// a clock a little ahead of Redis's loses no event.
const CLOCK_MARGIN_MS: u64 = 5_000;
/// Longest life of one stream; the client resumes with `Last-Event-ID`.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// What an event stream reads: event streams, and for a command its reply stream, whose
/// result ends the stream when no `completed` event does (agents with
/// `agent.events: failures` write none).
#[derive(Debug)]
pub struct Sources {
    pub events: Vec<String>,
    pub reply: Option<String>,
}

struct Following {
    follower: Follower,
    filter: Filter,
    reply: Option<String>,
    /// Entries up to here were sent before (or precede the command or run): they still end
    /// the stream, but are not sent again.
    sent_through: EntryId,
    /// The largest id of an event this stream wants, sent or not: a result (sent last) goes
    /// under a larger id, so that a client resuming after it is not sent those events again
    /// and one resuming before it is sent the result.
    last_queued: EntryId,
    ready: VecDeque<SseEvent>,
    /// The last message was queued; the stream ends after this batch.
    ending: bool,
    done: bool,
    /// The command or run had ended when the stream opened: end once caught up.
    ended: bool,
    until: tokio::time::Instant,
    stop: tokio_util::sync::CancellationToken,
    _permits: Permits,
}

/// A place for one event stream, the key's and the gateway's: taken before anything is
/// looked up for the stream, so a key over its quota costs nothing more.
#[derive(Debug)]
pub struct Permits(#[allow(dead_code)] [OwnedSemaphorePermit; 2]);

/// Takes a place for one more of `caller`'s event streams (429 over its quota, 503 over the
/// gateway's).
pub fn reserve(state: &AppState, caller: &Caller) -> Result<Permits, AppError> {
    let own = caller.streams.clone().try_acquire_owned().map_err(|_| {
        AppError::OverQuota(
            "this key holds as many event streams open as it may; close one first".into(),
        )
    })?;
    let permit = state.streams().clone().try_acquire_owned().map_err(|_| {
        AppError::Unavailable("too many event streams are open; try again later".into())
    })?;
    Ok(Permits([own, permit]))
}

/// Answers with the events of `streams` that `filter` wants, starting after
/// `Last-Event-ID` or from the moment the command or run was created (its UUIDv7 carries the
/// millisecond). `ended` says the command or run is already over: the stream then closes
/// once it has sent what is left.
pub async fn respond(
    state: &AppState,
    permits: Permits,
    headers: &HeaderMap,
    filter: Filter,
    sources: Sources,
    ended: bool,
) -> Result<Response, AppError> {
    let Some(id) = filter.uuid().filter(|id| id.get_version_num() == 7) else {
        return Err(AppError::Invalid(
            "id: events can be followed for ids MindBus made (UUIDv7)".into(),
        ));
    };
    let resume = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => Some(
            id.parse::<EntryId>()
                .map_err(|e| AppError::Invalid(format!("Last-Event-ID header: {e}")))?,
        ),
        None => None,
    };
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let start = first_read(id, resume, now_ms, state.reply_ttl_secs());
    // A run's stream resumes at the Last-Event-ID entry itself. A command's is read from
    // its beginning whenever it is resumed, so that its result is sent under the same id on
    // every read, and whether the client had it is known.
    let from = match (&sources.reply, resume) {
        (Some(_), Some(_)) => first_read(id, None, now_ms, state.reply_ttl_secs()),
        _ => start,
    };
    let mut streams = sources.events;
    streams.extend(sources.reply.clone());
    let follower = Follower::after(
        state.bus().redis(),
        streams,
        from.predecessor(),
        Duration::from_secs(5),
    )
    .await?;
    let following = Following {
        follower,
        filter,
        reply: sources.reply,
        sent_through: start,
        last_queued: EntryId::ZERO,
        ready: VecDeque::new(),
        ending: false,
        done: false,
        ended,
        until: tokio::time::Instant::now() + MAX_LIFETIME,
        stop: state.stop().clone(),
        _permits: permits,
    };
    Ok(Sse::new(events(following))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Where reading starts: after `resume` (a `Last-Event-ID`), else a margin before the
/// millisecond the UUIDv7 `id` was made in; never before `ttl_secs` ago, so no request
/// makes the gateway read further back than results are kept.
fn first_read(id: Uuid, resume: Option<EntryId>, now_ms: u64, ttl_secs: u64) -> EntryId {
    let kept_since = EntryId {
        ms: now_ms.saturating_sub(ttl_secs.saturating_mul(1000)),
        seq: 0,
    };
    let earliest = before(id).max(kept_since);
    resume.map_or(earliest, |resume| resume.max(earliest))
}

/// The entry id a margin before the millisecond a UUIDv7 was made in.
fn before(id: Uuid) -> EntryId {
    let bytes = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[..6]);
    match u64::from_be_bytes(ms).checked_sub(CLOCK_MARGIN_MS) {
        Some(ms) => EntryId { ms, seq: u64::MAX },
        None => EntryId::ZERO,
    }
}

fn events(following: Following) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(following, |mut f| async move {
        loop {
            if let Some(event) = f.ready.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done || tokio::time::Instant::now() >= f.until {
                return None;
            }
            let batch = tokio::select! {
                _ = f.stop.cancelled() => return None,
                batch = f.follower.next() => batch,
            };
            match batch {
                Ok(batch) if batch.is_empty() && f.ended => return None,
                Ok(batch) => {
                    let mut result = None;
                    for (stream, entry) in batch {
                        let Some(fields) = entry.fields else { continue };
                        let sent = entry.id <= f.sent_through;
                        let origin = Origin {
                            stream: &stream,
                            entry: entry.id,
                        };
                        if f.reply.as_ref() == Some(&stream) {
                            result = CommandResult::decode(fields, origin)
                                .ok()
                                .map(|r| (entry.id, r));
                            continue;
                        }
                        let Ok(event) = Event::decode(fields, origin) else {
                            continue;
                        };
                        // What the streams held before the end is still sent after it.
                        if f.filter.wants(&event) {
                            if !sent {
                                f.ready.push_back(to_sse(entry.id, &event));
                            }
                            f.last_queued = f.last_queued.max(entry.id);
                            f.ending |= f.filter.ends_with(&event);
                        }
                    }
                    // The command's result is its last message when no event ended it
                    // (agents with `agent.events: failures` write no `completed`).
                    if let (false, Some((id, result))) = (f.ending, result) {
                        let id = if id > f.last_queued {
                            id
                        } else {
                            f.last_queued.successor()
                        };
                        if id > f.sent_through {
                            f.ready.push_back(result_to_sse(id, &result));
                        }
                        f.ending = true;
                    }
                    // The follower hands out every stream's entries up to the same id, so what
                    // was written before the end has been sent with it: the stream ends here.
                    f.done = f.ending;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream read failed; closing it");
                    return None;
                }
            }
        }
    })
}

fn result_to_sse(entry: EntryId, result: &CommandResult) -> SseEvent {
    SseEvent::default()
        .id(entry.to_string())
        .event("mindbus.result")
        .data(result.to_json().to_string())
}

fn to_sse(entry: EntryId, event: &Event) -> SseEvent {
    let body = json!({
        "id": event.envelope.id,
        "type": event.envelope.ty,
        "time": event.envelope.time.to_string(),
        "correlationid": event.correlationid,
        "runid": event.runid,
        "stepid": event.stepid,
        "role": event.role,
        "attempt": event.attempt,
        "data": event.envelope.data.value,
    });
    SseEvent::default()
        .id(entry.to_string())
        .event(event.envelope.ty.clone())
        .data(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_never_starts_before_the_reply_ttl() {
        let now_ms = 1_800_000_000_000;
        let hour_ago = EntryId {
            ms: now_ms - 3_600_000,
            seq: 0,
        };
        let zero: Uuid = "00000000-0000-7000-8000-000000000000".parse().unwrap();
        assert_eq!(first_read(zero, None, now_ms, 3600), hour_ago);
        assert_eq!(
            first_read(zero, Some(EntryId::ZERO), now_ms, 3600),
            hour_ago
        );
        let fresh = Uuid::now_v7();
        let made = before(fresh);
        let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap();
        assert_eq!(
            first_read(fresh, None, now, 3600),
            made,
            "a new id starts at its time"
        );
        let later = EntryId {
            ms: now + 1,
            seq: 7,
        };
        assert_eq!(first_read(fresh, Some(later), now, 3600), later);
    }
}
