//! Cancellation: every agent follows the control stream (no group: every agent sees every
//! entry) and stops the commands it names, or skips them if they have not started. An
//! entry names one command (`correlationid`) or a whole run (`runid`, no `correlationid`):
//! then every command of that run stops or is skipped, however many it has.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wire::MessageId;
use tokio_util::sync::CancellationToken;

use crate::streams::{Redis, parse_read};
use crate::wire::{Cancel, EntryId};

/// How far back a starting agent reads the control stream for cancellations.
const LOOKBACK: Duration = Duration::from_secs(86_400);
/// Control entries read at once.
const READ_COUNT: usize = 1000;
/// Most cancellations remembered.
const REMEMBERED: usize = 10_000;

/// What a running command is: its id and its run.
#[derive(Debug, Default)]
struct Running {
    command: Option<MessageId>,
    run: Option<String>,
    token: CancellationToken,
}

impl Running {
    fn is(&self, target: &Cancel) -> bool {
        match target {
            Cancel::Command(id) => self.command.as_ref() == Some(id),
            Cancel::Run(run) => self.run.as_ref() == Some(run),
        }
    }
}

/// The commands running in this process and the cancellations seen.
#[derive(Debug, Default)]
pub(crate) struct Cancellations {
    running: Mutex<HashMap<EntryId, Running>>,
    seen: Mutex<(HashSet<Cancel>, VecDeque<Cancel>)>,
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
        running.insert(
            entry,
            Running {
                token,
                ..Running::default()
            },
        );
        true
    }

    /// Names the command (and run) a claimed entry holds, then reports whether either was
    /// already cancelled. (Name first: the listener records first and looks second, so
    /// neither order misses a cancellation.)
    pub fn start(&self, entry: EntryId, command: &MessageId, run: Option<&str>) -> bool {
        if let Some(slot) = lock(&self.running).get_mut(&entry) {
            slot.command = Some(command.clone());
            slot.run = run.map(str::to_owned);
        }
        let seen = lock(&self.seen);
        seen.0.contains(&Cancel::Command(command.clone()))
            || run.is_some_and(|run| seen.0.contains(&Cancel::Run(run.to_owned())))
    }

    /// Forgets a command that is done with.
    pub fn end(&self, entry: EntryId) {
        lock(&self.running).remove(&entry);
    }

    /// The entries being worked on here.
    pub fn running(&self) -> Vec<EntryId> {
        lock(&self.running).keys().copied().collect()
    }

    /// Records a cancellation and stops what it names that runs here.
    pub fn cancel(&self, target: Cancel) {
        {
            let mut seen = lock(&self.seen);
            if seen.0.insert(target.clone()) {
                seen.1.push_back(target.clone());
                if seen.1.len() > REMEMBERED {
                    let oldest = seen.1.pop_front();
                    oldest.map(|old| seen.0.remove(&old));
                }
            }
        }
        for running in lock(&self.running).values() {
            if running.is(&target) {
                running.token.cancel();
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
                if let Some(cancel) = entry.fields.as_deref().and_then(Cancel::decode) {
                    cancellations.cancel(cancel);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_before_start_is_seen_at_start() {
        let c = Cancellations::default();
        let id = MessageId::new();
        c.cancel(Cancel::Command(id.clone()));
        assert!(c.claim(EntryId::ZERO, CancellationToken::new()));
        assert!(c.start(EntryId::ZERO, &id, None));
    }

    #[test]
    fn a_cancelled_run_stops_its_commands_running_or_not() {
        let c = Cancellations::default();
        let token = CancellationToken::new();
        assert!(c.claim(EntryId::ZERO, token.clone()));
        assert!(!c.start(EntryId::ZERO, &MessageId::new(), Some("run-1")));
        c.cancel(Cancel::Run("run-1".into()));
        assert!(token.is_cancelled(), "a running command of the run");
        let later = EntryId { ms: 1, seq: 0 };
        assert!(c.claim(later, CancellationToken::new()));
        assert!(
            c.start(later, &MessageId::new(), Some("run-1")),
            "one not started yet"
        );
        let other = EntryId { ms: 2, seq: 0 };
        assert!(c.claim(other, CancellationToken::new()));
        assert!(
            !c.start(other, &MessageId::new(), Some("run-2")),
            "another run's"
        );
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
        assert!(!c.start(EntryId::ZERO, &id, None));
        c.cancel(Cancel::Command(id));
        assert!(token.is_cancelled());
    }
}
