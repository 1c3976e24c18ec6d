//! Waiting for one command's result on a connection of its own.

use std::time::Duration;

use crate::wire::MessageId;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use super::Bus;
use crate::Error;
use crate::streams::parse_read;
use crate::wire::{CommandResult, EntryId, Origin};

/// Longest single block, so a wait notices its deadline promptly.
const MAX_BLOCK: Duration = Duration::from_secs(5);

/// Waits for results on a dedicated connection. Keep one per concurrent waiter.
#[derive(Debug)]
pub struct ResultWaiter {
    conn: MultiplexedConnection,
    results: String,
}

impl ResultWaiter {
    /// Opens the waiter's own connection.
    pub async fn new(bus: &Bus) -> Result<Self, Error> {
        let conn = bus.redis().dedicated(MAX_BLOCK).await?;
        Ok(Self {
            conn,
            results: bus.keys().results(),
        })
    }

    /// Waits for the result of `command_id` on its `replyto` stream.
    pub async fn wait_reply(
        &mut self,
        reply: &str,
        command_id: &MessageId,
        timeout: Duration,
    ) -> Result<Option<CommandResult>, Error> {
        self.wait_on(reply, EntryId::ZERO, command_id, timeout)
            .await
    }

    /// Waits for the result of `command_id` on the shared result stream, looking at entries
    /// written from the millisecond of `command` on (pass the command's own entry id). Ids
    /// of different streams are not ordered within one millisecond: a fast agent's result
    /// can carry the very same id as its command, so the whole millisecond is read.
    pub async fn wait_result(
        &mut self,
        command: EntryId,
        command_id: &MessageId,
        timeout: Duration,
    ) -> Result<Option<CommandResult>, Error> {
        let stream = self.results.clone();
        let before = match command.ms.checked_sub(1) {
            Some(ms) => EntryId { ms, seq: u64::MAX },
            None => EntryId::ZERO,
        };
        self.wait_on(&stream, before, command_id, timeout).await
    }

    async fn wait_on(
        &mut self,
        stream: &str,
        mut after: EntryId,
        command_id: &MessageId,
        timeout: Duration,
    ) -> Result<Option<CommandResult>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let block = left.min(MAX_BLOCK).as_millis().max(1) as u64;
            let reply = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(stream)
                .arg(after.to_string())
                .query_async(&mut self.conn)
                .await?;
            for (_, entries) in parse_read(reply)? {
                for entry in entries {
                    after = entry.id;
                    let Some(fields) = entry.fields else { continue };
                    let origin = Origin {
                        stream,
                        entry: entry.id,
                    };
                    match CommandResult::decode(fields, origin) {
                        Ok(result) if result.correlationid == *command_id => {
                            return Ok(Some(result));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(stream, entry = %entry.id, error = %e, "skipping a malformed result")
                        }
                    }
                }
            }
        }
    }
}
