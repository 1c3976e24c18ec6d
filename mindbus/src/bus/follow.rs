//! Following streams live, without a consumer group (reading never takes work away).

use std::time::Duration;

use crate::Error;
use crate::streams::{Connection, Reads, Redis, StreamEntry, parse_range};
use crate::wire::EntryId;

/// Entries read from one stream at most, per read.
const COUNT: usize = 500;

/// Reads new entries from a set of streams, remembering where it stands in each. Each read
/// hands out a prefix of the streams' merged history: when a stream has more than a read
/// takes, entries of the others past its last one wait for the next read, so entries come
/// in entry-id order across streams and one id says how far a reader got.
#[derive(Debug)]
pub struct Follower {
    reads: Reads,
    positions: Vec<(String, String)>,
    block: Duration,
    caught_up: bool,
}

impl Follower {
    /// Follows `streams` from their current end (`from_start` reads their history first).
    /// The end is resolved to a real entry id once: sending `$` on every read would skip
    /// whatever a quiet stream received between two reads.
    pub async fn new(
        redis: &Redis,
        streams: Vec<String>,
        from_start: bool,
        block: Duration,
    ) -> Result<Self, Error> {
        let mut conn = redis.shared().await?;
        let mut positions = Vec::with_capacity(streams.len());
        for stream in streams {
            let start = if from_start {
                EntryId::ZERO
            } else {
                last_id(&mut conn, &stream).await?
            };
            positions.push((stream, start.to_string()));
        }
        Ok(Self {
            reads: Reads::new(redis.clone(), block),
            positions,
            block,
            caught_up: false,
        })
    }

    /// Follows `streams` from just after `after` (for example a client's `Last-Event-ID`).
    pub async fn after(
        redis: &Redis,
        streams: Vec<String>,
        after: EntryId,
        block: Duration,
    ) -> Result<Self, Error> {
        let after = after.to_string();
        Ok(Self {
            reads: Reads::new(redis.clone(), block),
            positions: streams.into_iter().map(|s| (s, after.clone())).collect(),
            block,
            caught_up: false,
        })
    }

    /// Starts following one more stream (for example a role that appeared), from its start.
    pub fn add(&mut self, stream: String) {
        if !self.positions.iter().any(|(s, _)| *s == stream) {
            self.positions.push((stream, "0-0".into()));
        }
    }

    /// The streams followed.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.positions.iter().map(|(s, _)| s.as_str())
    }

    /// Whether the last read took everything the streams held when it ran.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The next batch of entries in entry-id order, empty when the block ran out.
    pub async fn next(&mut self) -> Result<Vec<(String, StreamEntry)>, Error> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS");
        let streams: Vec<(&str, &str)> = self
            .positions
            .iter()
            .map(|(s, p)| (s.as_str(), p.as_str()))
            .collect();
        let read = match self.reads.read(&cmd, &streams).await {
            Ok(read) => read,
            Err(e) => {
                // A read cut short or failed leaves its connection unusable.
                self.reads.reset();
                return Err(e);
            }
        };
        // Past the last entry of a stream that had more, other streams may hold entries
        // that stream has not been read up to yet: those wait.
        let bound = read
            .iter()
            .filter(|(_, entries)| entries.len() >= COUNT)
            .filter_map(|(_, entries)| entries.last().map(|e| e.id))
            .min();
        self.caught_up = bound.is_none();
        let mut out = Vec::new();
        for (stream, entries) in read {
            let kept = entries
                .into_iter()
                .filter(|e| bound.is_none_or(|bound| e.id <= bound));
            out.extend(kept.map(|e| (stream.clone(), e)));
        }
        for (stream, entry) in &out {
            if let Some(slot) = self.positions.iter_mut().find(|(s, _)| s == stream) {
                slot.1 = entry.id.to_string();
            }
        }
        out.sort_by_key(|(_, e)| e.id);
        Ok(out)
    }

    /// The position in `stream`, once something was read from it.
    pub fn position(&self, stream: &str) -> Option<EntryId> {
        self.positions
            .iter()
            .find(|(s, _)| s == stream)
            .and_then(|(_, p)| p.parse().ok())
    }
}

/// The id of the newest entry of `stream` (`0-0` when it is empty or absent).
async fn last_id(conn: &mut Connection, stream: &str) -> Result<EntryId, Error> {
    let newest: redis::Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(parse_range(newest)?.first().map_or(EntryId::ZERO, |e| e.id))
}
