//! Dead letters: an entry that will not be processed, with why and how often it was tried.

use jiff::Timestamp;

use super::fields::{FieldReader, FieldWriter, Fields};
use super::{EntryId, ErrorType, WireError};

/// Every field MindBus adds to a dead letter starts with this; the rest is the original entry,
/// byte for byte, so `mindbus dlq retry` can send it back unchanged.
pub const DLQ_FIELD_PREFIX: &str = "dlq";

const STREAM: &str = "dlqstream";
const ENTRY: &str = "dlqentryid";
const DELIVERIES: &str = "dlqdeliveries";
const ERRORTYPE: &str = "dlqerrortype";
const REASON: &str = "dlqreason";
const CONSUMER: &str = "dlqconsumer";
const TIME: &str = "dlqtime";

/// An entry on `<prefix>:dlq`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The stream the original entry was read from.
    pub stream: String,
    /// The original entry's id in that stream.
    pub entry: EntryId,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// The category of the last failure.
    pub errortype: ErrorType,
    /// Why it was dead-lettered, naming the field when the entry was malformed.
    pub reason: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// When it was dead-lettered.
    pub time: Timestamp,
    /// The original entry's fields.
    pub original: Fields,
}

impl DeadLetter {
    /// Encodes the dead letter: the original fields, then the `dlq*` fields.
    pub fn encode(&self) -> Fields {
        let mut w = FieldWriter::default();
        for (name, value) in self
            .original
            .iter()
            .filter(|(name, _)| !name.starts_with(DLQ_FIELD_PREFIX))
        {
            w.put(name, value.clone());
        }
        w.put(STREAM, self.stream.as_str())
            .show(ENTRY, self.entry)
            .show(DELIVERIES, self.deliveries)
            .show(ERRORTYPE, &self.errortype)
            .put(REASON, self.reason.as_str())
            .put(CONSUMER, self.consumer.as_str())
            .show(TIME, self.time);
        w.finish()
    }

    /// Decodes a dead letter; the fields not starting with `dlq` are the original entry.
    pub fn decode(fields: Fields) -> Result<Self, WireError> {
        let (ours, original): (Fields, Fields) = fields
            .into_iter()
            .partition(|(name, _)| name.starts_with(DLQ_FIELD_PREFIX));
        let mut r = FieldReader::new(&ours);
        Ok(Self {
            stream: r.required(STREAM)?,
            entry: r.parse_required(ENTRY)?,
            deliveries: r.parse_required(DELIVERIES)?,
            errortype: r.parse_required(ERRORTYPE)?,
            reason: r.required(REASON)?,
            consumer: r.text(CONSUMER)?.unwrap_or_default(),
            time: r.parse_required(TIME)?,
            original,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_original_bytes() {
        let letter = DeadLetter {
            stream: "mindbus:cmd:{echo}".into(),
            entry: EntryId { ms: 5, seq: 1 },
            deliveries: 3,
            errortype: ErrorType::Malformed,
            reason: "field `data` is invalid".into(),
            consumer: "host-1-abc".into(),
            time: Timestamp::from_second(1_700_000_000).unwrap(),
            original: vec![
                ("type".into(), b"echo.say".to_vec()),
                ("data".into(), vec![0xff, 0x00]),
            ],
        };
        assert_eq!(DeadLetter::decode(letter.encode()).unwrap(), letter);
    }
}
