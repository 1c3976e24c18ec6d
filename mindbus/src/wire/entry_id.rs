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
