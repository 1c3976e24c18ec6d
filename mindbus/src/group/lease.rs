//! Leases on a consumer's own pending entries: renewing them while they are worked on,
//! setting the delivery count on in-process retries, and handing them back on shutdown.
//!
//! Each operation goes through one script that first checks the entry is still ours, so a
//! consumer that stalled never steals back an entry another consumer has reclaimed.

use std::time::Duration;

use crate::streams::Connection;
use redis::Script;

use crate::Error;
use crate::wire::EntryId;

/// Operations on our own pending entries.
#[derive(Debug, Clone)]
pub struct Leases {
    conn: Connection,
    script: Script,
    stream: String,
    group: String,
    consumer: String,
}

impl Leases {
    /// Leases of `consumer`'s entries of `stream` in `group`.
    pub fn new(conn: Connection, stream: &str, group: &str, consumer: &str) -> Self {
        Self {
            conn,
            script: Script::new(include_str!("lease.lua")),
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
        }
    }

    /// Resets the idle time of entries still ours; returns those another consumer took.
    pub async fn renew(&self, entries: &[EntryId]) -> Result<Vec<EntryId>, Error> {
        self.call("renew", 0, entries.iter().map(|e| (*e, None)))
            .await
    }

    /// Records that `entry` is on its `attempt`-th delivery, so a crash keeps the count.
    pub async fn set_attempt(&self, entry: EntryId, attempt: u32) -> Result<(), Error> {
        self.call("renew", 0, [(entry, Some(attempt))])
            .await
            .map(drop)
    }

    /// Makes entries immediately reclaimable by other consumers (their idle time becomes
    /// `idle`, at least the lease).
    pub async fn hand_back(&self, entries: &[EntryId], idle: Duration) -> Result<(), Error> {
        self.call(
            "handback",
            idle.as_millis() as u64,
            entries.iter().map(|e| (*e, None)),
        )
        .await
        .map(drop)
    }

    async fn call(
        &self,
        mode: &str,
        idle_ms: u64,
        entries: impl IntoIterator<Item = (EntryId, Option<u32>)>,
    ) -> Result<Vec<EntryId>, Error> {
        let mut invocation = self.script.key(&self.stream);
        invocation
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(mode)
            .arg(idle_ms);
        let mut any = false;
        for (entry, attempt) in entries {
            any = true;
            invocation
                .arg(entry.to_string())
                .arg(attempt.map(|a| a.to_string()).unwrap_or_default());
        }
        if !any {
            return Ok(Vec::new());
        }
        let lost: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        lost.iter()
            .map(|id| id.parse().map_err(Error::Protocol))
            .collect()
    }
}
