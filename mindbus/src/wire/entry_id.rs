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
    fn the_predecessor_is_the_id_just_before() {
        let id = |ms, seq| EntryId { ms, seq };
        assert_eq!(id(5, 3).predecessor(), id(5, 2));
        assert_eq!(id(5, 0).predecessor(), id(4, u64::MAX));
        assert_eq!(EntryId::ZERO.predecessor(), EntryId::ZERO);
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
