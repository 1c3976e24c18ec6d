//! Redis stream entry ids (`<milliseconds>-<sequence>`).

use std::fmt;
use std::str::FromStr;

/// A stream entry id as Redis assigns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch on the Redis server's clock.
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl EntryId {
    /// The smallest id, `0-0`.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: EntryId = EntryId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The id just after this one (the largest stays the largest).
    pub fn successor(self) -> EntryId {
        match (self.seq.checked_add(1), self.ms.checked_add(1)) {
            (Some(seq), _) => EntryId { ms: self.ms, seq },
            (None, Some(ms)) => EntryId { ms, seq: 0 },
            (None, None) => EntryId::MAX,
        }
    }

    /// The id just before this one (`0-0` stays `0-0`).
    pub fn predecessor(self) -> EntryId {
        match (self.ms, self.seq) {
            (ms, 1..) => EntryId {
                ms,
                seq: self.seq - 1,
            },
            (1.., 0) => EntryId {
                ms: self.ms - 1,
                seq: u64::MAX,
            },
            (0, 0) => EntryId::ZERO,
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let parse = |part: &str| {
            part.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a stream entry id"))
        };
        Ok(EntryId {
            ms: parse(ms)?,
            seq: parse(seq)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predecessor_and_successor_are_the_ids_just_around() {
        let id = |ms, seq| EntryId { ms, seq };
        assert_eq!(id(5, 3).predecessor(), id(5, 2));
        assert_eq!(id(5, 0).predecessor(), id(4, u64::MAX));
        assert_eq!(EntryId::ZERO.predecessor(), EntryId::ZERO);
        assert_eq!(id(5, 3).successor(), id(5, 4));
        assert_eq!(id(5, u64::MAX).successor(), id(6, 0));
        assert_eq!(EntryId::MAX.successor(), EntryId::MAX);
    }

    #[test]
    fn parses_and_prints() {
        let id: EntryId = "1700000000000-7".parse().unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1700000000000-7");
        assert_eq!("12".parse::<EntryId>().unwrap(), EntryId { ms: 12, seq: 0 });
        assert!("x-1".parse::<EntryId>().is_err());
    }
}
