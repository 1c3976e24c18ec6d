//! Many concurrent waits for results on one connection: one loop follows the result stream
//! (without a group, so every client sees every result) and hands each result to the waiter
//! that registered its command id. The gateway waits this way for every request it serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Bus, Follower};
use crate::wire::MessageId;
use crate::wire::{CommandResult, EntryId, Origin};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Every registration waiting for one command id (several requests may wait for the same
/// command), by token.
type Waiting = Mutex<HashMap<MessageId, Vec<(u64, oneshot::Sender<CommandResult>)>>>;

/// Requests waiting for results, by command id.
#[derive(Debug, Default)]
pub struct Replies {
    waiting: Waiting,
    tokens: std::sync::atomic::AtomicU64,
}

/// One registered wait; dropping it forgets the registration.
#[derive(Debug)]
#[must_use = "a waiter registered and dropped waits for nothing"]
pub struct Waiter {
    replies: Arc<Replies>,
    id: MessageId,
    token: u64,
    rx: Option<oneshot::Receiver<CommandResult>>,
}

impl Replies {
    /// Starts following the result stream from its current end, until `stop` fires.
    pub async fn start(bus: Bus, stop: CancellationToken) -> Result<Arc<Self>, crate::Error> {
        let replies = Arc::new(Self::default());
        let results = bus.keys().results();
        let follower = Follower::new(&bus, vec![results], false, Duration::from_secs(2)).await?;
        tokio::spawn(follow(Arc::clone(&replies), bus, follower, stop));
        Ok(replies)
    }

    /// Registers a wait for `id`; register before publishing the command, so the result
    /// cannot come first.
    pub fn register(self: &Arc<Self>, id: &MessageId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let token = self
            .tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.entry(id.clone()).or_default().push((token, tx));
        }
        Waiter {
            replies: Arc::clone(self),
            id: id.clone(),
            token,
            rx: Some(rx),
        }
    }

    fn deliver(&self, result: CommandResult) {
        let waiters = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&result.correlationid))
            .unwrap_or_default();
        for (_, tx) in waiters {
            let _ = tx.send(result.clone());
        }
    }
}

impl Waiter {
    /// The result, or `None` when `timeout` runs out first.
    pub async fn wait(mut self, timeout: Duration) -> Option<CommandResult> {
        let rx = self.rx.take()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.replies.waiting.lock()
            && let Some(list) = waiting.get_mut(&self.id)
        {
            list.retain(|(token, _)| *token != self.token);
            if list.is_empty() {
                waiting.remove(&self.id);
            }
        }
    }
}

async fn follow(replies: Arc<Replies>, bus: Bus, mut follower: Follower, stop: CancellationToken) {
    let stream = bus.keys().results();
    let mut delays = crate::streams::retry_delays();
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = follower.next() => batch,
        };
        match batch {
            Ok(entries) => {
                delays = crate::streams::retry_delays();
                for (_, entry) in entries {
                    let Some(fields) = entry.fields else { continue };
                    let origin = Origin {
                        stream: &stream,
                        entry: entry.id,
                    };
                    if let Ok(result) = CommandResult::decode(fields, origin) {
                        replies.deliver(result);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "following results failed; reconnecting");
                let delay = delays.next().unwrap_or(Duration::from_secs(2));
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                let after = follower.position(&stream).unwrap_or(EntryId::ZERO);
                if let Ok(again) =
                    Follower::after(&bus, stream.clone(), after, Duration::from_secs(2)).await
                {
                    follower = again;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Payload, Status};

    #[tokio::test]
    async fn every_waiter_of_an_id_gets_the_result_and_a_dropped_one_takes_none_away() {
        let replies = Arc::new(Replies::default());
        let id = MessageId::new();
        let (first, second) = (replies.register(&id), replies.register(&id));
        drop(replies.register(&id));
        replies.deliver(CommandResult::new(
            id,
            Status::Completed,
            "t",
            Payload::json(serde_json::Value::Null),
        ));
        let wait = Duration::from_millis(100);
        assert!(first.wait(wait).await.is_some());
        assert!(second.wait(wait).await.is_some());
        assert!(replies.waiting.lock().unwrap().is_empty());
    }
}
