//! The one way to wait for a result: one loop per [`Bus`] and role follows the role's result
//! stream (without a group, so every client sees every result) and hands each result to
//! whoever registered its command id. `Bus::call`, the gateway and the CLI all wait this
//! way, so a process waits for any number of commands over one connection per role.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Follower;
use crate::Error;
use crate::keys::{Keys, validate_role};
use crate::streams::{Redis, retry_delays};
use crate::wire::{CommandResult, EntryId, MessageId, Origin};

/// Longest blocking read of the result stream.
const BLOCK: Duration = Duration::from_secs(2);

/// Every registration waiting for one command id (several may wait for the same command),
/// by token.
type Waiting = Mutex<HashMap<MessageId, Vec<(u64, oneshot::Sender<CommandResult>)>>>;

/// Waits for results, by command id; the loops following result streams stop once this is
/// dropped.
#[derive(Debug)]
pub struct Results {
    redis: Redis,
    keys: Keys,
    waiting: Waiting,
    tokens: AtomicU64,
    /// The roles whose result streams are followed.
    followed: tokio::sync::Mutex<HashSet<String>>,
    stop: CancellationToken,
    _stop: DropGuard,
}

/// One registered wait; dropping it forgets the registration.
#[derive(Debug)]
#[must_use = "a wait registered and dropped waits for nothing"]
pub struct ResultWait {
    results: Arc<Results>,
    id: MessageId,
    token: u64,
    rx: Option<oneshot::Receiver<CommandResult>>,
}

impl Results {
    /// Waits for results of the deployment `keys` names on `redis`; follows nothing until a
    /// wait is registered.
    pub(super) fn new(redis: Redis, keys: Keys) -> Arc<Self> {
        let stop = CancellationToken::new();
        Arc::new(Self {
            redis,
            keys,
            waiting: Mutex::default(),
            tokens: AtomicU64::default(),
            followed: tokio::sync::Mutex::default(),
            stop: stop.clone(),
            _stop: stop.drop_guard(),
        })
    }

    /// Registers a wait for the result of command `id` of `role`; register before publishing
    /// the command, so the result cannot come first. The role's result stream is followed
    /// from its current end the first time one of its commands is waited for.
    pub async fn register(
        self: &Arc<Self>,
        role: &str,
        id: &MessageId,
    ) -> Result<ResultWait, Error> {
        validate_role(role).map_err(Error::Config)?;
        self.follow(role).await?;
        let (tx, rx) = oneshot::channel();
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.entry(id.clone()).or_default().push((token, tx));
        }
        Ok(ResultWait {
            results: Arc::clone(self),
            id: id.clone(),
            token,
            rx: Some(rx),
        })
    }

    /// Starts following `role`'s result stream unless it is followed.
    async fn follow(self: &Arc<Self>, role: &str) -> Result<(), Error> {
        let mut followed = self.followed.lock().await;
        if followed.contains(role) {
            return Ok(());
        }
        let stream = self.keys.results(role);
        let follower = Follower::new(&self.redis, vec![stream.clone()], false, BLOCK).await?;
        tokio::spawn(follow(
            Arc::downgrade(self),
            self.redis.clone(),
            stream,
            follower,
            self.stop.clone(),
        ));
        followed.insert(role.to_owned());
        Ok(())
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

    /// Whether anyone waits for `id`, so results nobody waits for are not decoded whole.
    fn is_awaited(&self, id: &MessageId) -> bool {
        self.waiting
            .lock()
            .is_ok_and(|waiting| waiting.contains_key(id))
    }
}

impl ResultWait {
    /// The result, or `None` when `timeout` runs out first.
    pub async fn wait(mut self, timeout: Duration) -> Option<CommandResult> {
        let rx = self.rx.take()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }
}

impl Drop for ResultWait {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.results.waiting.lock()
            && let Some(list) = waiting.get_mut(&self.id)
        {
            list.retain(|(token, _)| *token != self.token);
            if list.is_empty() {
                waiting.remove(&self.id);
            }
        }
    }
}

/// Follows one result stream until `stop` fires or the [`Results`] are gone, reconnecting
/// after failures from where it stood.
async fn follow(
    results: Weak<Results>,
    redis: Redis,
    stream: String,
    mut follower: Follower,
    stop: CancellationToken,
) {
    let mut delays = retry_delays();
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = follower.next() => batch,
        };
        let Some(results) = results.upgrade() else {
            return;
        };
        match batch {
            Ok(entries) => {
                delays = retry_delays();
                for (_, entry) in entries {
                    let Some(fields) = entry.fields else { continue };
                    let awaited = CommandResult::answers(&fields);
                    if !awaited.is_some_and(|id| results.is_awaited(&id)) {
                        continue;
                    }
                    let origin = Origin {
                        stream: &stream,
                        entry: entry.id,
                    };
                    match CommandResult::decode(fields, origin) {
                        Ok(result) => results.deliver(result),
                        Err(e) => {
                            tracing::warn!(entry = %entry.id, error = %e, "skipping a malformed result")
                        }
                    }
                }
            }
            Err(e) => {
                drop(results);
                tracing::warn!(error = %e, "following results failed; reconnecting");
                let delay = delays.next().unwrap_or(Duration::from_secs(2));
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                let after = follower.position(&stream).unwrap_or(EntryId::ZERO);
                if let Ok(again) = Follower::after(&redis, vec![stream.clone()], after, BLOCK).await
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
    async fn every_wait_for_an_id_gets_the_result_and_a_dropped_one_takes_none_away() {
        // Nothing connects: the role counts as followed already.
        let redis = Redis::open(&"redis://127.0.0.1:1".to_owned().into()).unwrap();
        let results = Results::new(redis, Keys::new("t"));
        results.followed.lock().await.insert("echo".into());
        let id = MessageId::new();
        let first = results.register("echo", &id).await.unwrap();
        let second = results.register("echo", &id).await.unwrap();
        drop(results.register("echo", &id).await.unwrap());
        assert!(results.is_awaited(&id));
        assert!(!results.is_awaited(&MessageId::new()));
        results.deliver(CommandResult::new(
            id,
            Status::Completed,
            "t",
            Payload::json(serde_json::Value::Null),
        ));
        let wait = Duration::from_millis(100);
        assert!(first.wait(wait).await.is_some());
        assert!(second.wait(wait).await.is_some());
        assert!(results.waiting.lock().unwrap().is_empty());
    }
}
