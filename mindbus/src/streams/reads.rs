//! Blocking reads of several streams at once, on one server or across a cluster's slots.
//!
//! One server takes every stream in one `XREADGROUP` (or `XREAD`). A cluster takes only
//! keys of one slot per command, and a role's streams are in its own slot, so a reader of
//! several roles sends one blocking read per slot, each on its own connection, all at
//! once. As soon as one comes back, the others are woken with `CLIENT UNBLOCK` (they answer
//! as if their block ran out, with whatever they already hold), so a round ends when its
//! first stream has entries and hands out everything every slot gave, as one read would.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use redis::Cmd;
use redis::cluster_routing::Slot;

use super::server::by_slot;
use super::{ReadConnection, Redis, StreamEntry};
use crate::Error;

/// How often a read that has not answered yet is unblocked again (its `XREADGROUP` may
/// reach the server after the first `CLIENT UNBLOCK` did).
const UNBLOCK_AGAIN: Duration = Duration::from_millis(20);

/// What a read returns: entries by stream.
pub type StreamsRead = Vec<(String, Vec<StreamEntry>)>;

/// Blocking reads of a set of streams; see the module documentation.
#[derive(Debug)]
pub struct Reads {
    redis: Redis,
    block: Duration,
    /// A connection per slot read (`None`: the one server's).
    conns: HashMap<Option<Slot>, ReadConnection>,
    /// A connection per node, for `CLIENT UNBLOCK`.
    unblockers: HashMap<String, ReadConnection>,
}

impl Reads {
    /// Reads on `redis`, blocking up to `block` at a time; connects on first use.
    pub fn new(redis: Redis, block: Duration) -> Self {
        Self {
            redis,
            block,
            conns: HashMap::new(),
            unblockers: HashMap::new(),
        }
    }

    /// Drops every connection (after a read was cut short, or failed), so the next read
    /// starts afresh.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.unblockers.clear();
    }

    /// Runs `head` (an `XREADGROUP` or `XREAD` up to and including `STREAMS`) on `streams`
    /// (each with the id to read after, or `>`): the entries by stream.
    pub async fn read(
        &mut self,
        head: &Cmd,
        streams: &[(&str, &str)],
    ) -> Result<StreamsRead, Error> {
        let cluster = self.redis.is_cluster().await?;
        let groups = by_slot(streams.iter().copied(), |(stream, _)| stream, cluster);
        self.conns.retain(|_, conn| !conn.is_broken());
        for (slot, group) in &groups {
            if !self.conns.contains_key(slot) {
                let conn = self.redis.read_connection(group[0].0, self.block).await?;
                self.conns.insert(*slot, conn);
            }
        }
        let commands: Vec<(Option<Slot>, Cmd)> = groups
            .into_iter()
            .map(|(slot, group)| {
                let mut cmd = head.clone();
                group.iter().for_each(|(stream, _)| {
                    cmd.arg(*stream);
                });
                group.iter().for_each(|(_, position)| {
                    cmd.arg(*position);
                });
                (slot, cmd)
            })
            .collect();
        match commands.as_slice() {
            [] => {
                // Nothing to read yet: wait as a read would, rather than spin.
                tokio::time::sleep(self.block).await;
                Ok(Vec::new())
            }
            [(slot, cmd)] => match self.conns.get_mut(slot) {
                Some(conn) => conn.read_streams(cmd).await,
                None => Ok(Vec::new()),
            },
            _ => self.read_slots(&commands).await,
        }
    }

    /// One blocking read per slot, all at once; see the module documentation.
    async fn read_slots(&mut self, commands: &[(Option<Slot>, Cmd)]) -> Result<StreamsRead, Error> {
        let mut targets = Vec::with_capacity(commands.len());
        for (slot, _) in commands {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            targets.push((*slot, conn.node(), conn.client_id().await?));
        }
        let mut reads: FuturesUnordered<_> = self
            .conns
            .iter_mut()
            .filter_map(|(slot, conn)| {
                let (_, cmd) = commands.iter().find(|(s, _)| s == slot)?;
                let slot = *slot;
                Some(async move { (slot, conn.read_streams(cmd).await) })
            })
            .collect();
        let mut out = Vec::new();
        let mut answered = Vec::new();
        // Whether the reads not answered yet were woken since the last answer or tick.
        let mut woken = false;
        loop {
            let waking = !answered.is_empty();
            tokio::select! {
                read = reads.next() => match read {
                    None => break,
                    Some((slot, read)) => {
                        out.extend(read?);
                        answered.push(slot);
                    }
                },
                // One may not have reached its server when it was woken: wake it again.
                () = tokio::time::sleep(UNBLOCK_AGAIN), if waking => woken = false,
            }
            if woken || answered.len() == targets.len() {
                continue;
            }
            for (slot, node, id) in &targets {
                if answered.contains(slot) {
                    continue;
                }
                let node = node.as_deref().unwrap_or_default();
                if let Err(e) = unblock(&self.redis, &mut self.unblockers, node, *id).await {
                    // The read ends when its block runs out instead.
                    tracing::debug!(node, error = %e, "could not wake a blocked read");
                    self.unblockers.remove(node);
                }
            }
            woken = true;
        }
        Ok(out)
    }
}

/// Sends `CLIENT UNBLOCK id` to `node`, over a connection kept for it.
async fn unblock(
    redis: &Redis,
    unblockers: &mut HashMap<String, ReadConnection>,
    node: &str,
    id: i64,
) -> Result<(), Error> {
    let conn = match unblockers.get_mut(node) {
        Some(conn) => conn,
        None => {
            let conn = redis.short_connection_to(node).await?;
            unblockers.entry(node.to_owned()).or_insert(conn)
        }
    };
    conn.integer(redis::cmd("CLIENT").arg("UNBLOCK").arg(id))
        .await?;
    Ok(())
}
