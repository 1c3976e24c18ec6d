//! Cancellation: every agent follows the control stream (no group: every agent sees every
//! entry) and stops the commands it names, or skips them if they have not started.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wire::MessageId;
use tokio_util::sync::CancellationToken;

use crate::bus::CONTROL_CANCEL;
use crate::streams::{Redis, parse_read};
use crate::wire::{EntryId, Origin};

/// How far back a starting agent reads the control stream for cancellations.
const LOOKBACK: Duration = Duration::from_secs(86_400);
/// Control entries read at once.
const READ_COUNT: usize = 1000;
/// Most cancellations remembered.
const REMEMBERED: usize = 10_000;

/// The commands running in this process and the cancellations seen.
#[derive(Debug, Default)]
pub(crate) struct Cancellations {
    running: Mutex<HashMap<EntryId, (Option<MessageId>, CancellationToken)>>,
    seen: Mutex<(HashSet<MessageId>, VecDeque<MessageId>)>,
    /// Fires once the listener has read the control stream's history.
    caught_up: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Cancellations {
    /// Waits until the control stream's history has been read (or `stop` fires): commands
    /// are taken only then, so one cancelled before this agent started is never run.
    pub async fn wait_caught_up(&self, stop: &CancellationToken) {
        tokio::select! { _ = stop.cancelled() => {}, _ = self.caught_up.cancelled() => {} }
    }

    /// Takes `entry` for this process; `false` when it already runs here (an entry can come
    /// back through a reclaim while its first run is still going).
    pub fn claim(&self, entry: EntryId, token: CancellationToken) -> bool {
        let mut running = lock(&self.running);
        if running.contains_key(&entry) {
            return false;
        }
        running.insert(entry, (None, token));
        true
    }

    /// Names the command a claimed entry holds, then reports whether it was already
    /// cancelled. (Name first: the listener records first and looks second, so neither
    /// order misses a cancellation.)
    pub fn start(&self, entry: EntryId, command: &MessageId) -> bool {
        if let Some(slot) = lock(&self.running).get_mut(&entry) {
            slot.0 = Some(command.clone());
        }
        lock(&self.seen).0.contains(command)
    }

    /// Forgets a command that is done with.
    pub fn end(&self, entry: EntryId) {
        lock(&self.running).remove(&entry);
    }

    /// The entries being worked on here.
    pub fn running(&self) -> Vec<EntryId> {
        lock(&self.running).keys().copied().collect()
    }

    /// Records a cancellation and stops the command if it runs here.
    pub fn cancel(&self, command: MessageId) {
        {
            let mut seen = lock(&self.seen);
            if seen.0.insert(command.clone()) {
                seen.1.push_back(command.clone());
                if seen.1.len() > REMEMBERED {
                    let oldest = seen.1.pop_front();
                    oldest.map(|old| seen.0.remove(&old));
                }
            }
        }
        for (id, token) in lock(&self.running).values() {
            if id.as_ref() == Some(&command) {
                token.cancel();
            }
        }
    }
}

/// Follows the control stream until `stop` fires, reconnecting as needed.
pub(crate) async fn listen(
    redis: Redis,
    stream: String,
    cancellations: Arc<Cancellations>,
    stop: CancellationToken,
) {
    let since = jiff::Timestamp::now().as_millisecond() - LOOKBACK.as_millis() as i64;
    let mut position = EntryId {
        ms: since.max(0) as u64,
        seq: 0,
    };
    let block = Duration::from_secs(2);
    while !stop.is_cancelled() {
        let Ok(mut conn) = redis.dedicated(block).await else {
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(block) => continue }
        };
        loop {
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT").arg(READ_COUNT);
            // History is read without blocking, so an agent starts as soon as it has it.
            if cancellations.caught_up.is_cancelled() {
                read.arg("BLOCK").arg(block.as_millis() as u64);
            }
            read.arg("STREAMS").arg(&stream).arg(position.to_string());
            let reply = tokio::select! { _ = stop.cancelled() => return, reply = read.query_async(&mut conn) => reply };
            let Ok(entries) = reply.map_err(crate::Error::from).and_then(parse_read) else {
                break;
            };
            let entries: Vec<_> = entries.into_iter().flat_map(|(_, e)| e).collect();
            if entries.len() < READ_COUNT {
                cancellations.caught_up.cancel();
            }
            for entry in entries {
                position = entry.id;
                if let Some(command) = cancelled_command(&stream, entry.id, entry.fields) {
                    cancellations.cancel(command);
                }
            }
        }
    }
}

fn cancelled_command(
    stream: &str,
    id: EntryId,
    fields: Option<crate::wire::Fields>,
) -> Option<MessageId> {
    let event = crate::wire::Event::decode(fields?, Origin { stream, entry: id }).ok()?;
    (event.envelope.ty == CONTROL_CANCEL).then_some(event.correlationid?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_before_start_is_seen_at_start() {
        let c = Cancellations::default();
        let id = MessageId::new();
        c.cancel(id.clone());
        assert!(c.claim(EntryId::ZERO, CancellationToken::new()));
        assert!(c.start(EntryId::ZERO, &id));
    }

    #[test]
    fn cancel_while_running_fires_the_token() {
        let c = Cancellations::default();
        let id = MessageId::new();
        let token = CancellationToken::new();
        assert!(c.claim(EntryId::ZERO, token.clone()));
        assert!(
            !c.claim(EntryId::ZERO, CancellationToken::new()),
            "claimed twice"
        );
        assert!(!c.start(EntryId::ZERO, &id));
        c.cancel(id);
        assert!(token.is_cancelled());
    }
}
