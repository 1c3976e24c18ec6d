//! Dead letters: an entry that will not be processed, with why and how often it was tried.

use jiff::Timestamp;

use super::fields::{FieldReader, FieldWriter, Fields};
use super::{EntryId, ErrorType, WireError};

/// Every field MindBus adds to a dead letter starts with this; the rest is the original entry,
/// byte for byte, so `mindbus dlq retry` can send it back unchanged.
pub const DLQ_FIELD_PREFIX: &str = "dlq";

/// Most original fields a dead letter carries flat. An entry with more (one refused as too
/// large), or with a field of its own starting with `dlq`, is carried whole in one field,
/// `dlqoriginal`: a MessagePack array of alternating names (str) and values (bin). So any
/// entry Redis accepted can be dead-lettered whole, by one script call of bounded size.
pub const DLQ_MAX_FLAT_FIELDS: usize = super::MAX_COMMAND_FIELDS;
const ORIGINAL: &str = "dlqoriginal";

const STREAM: &str = "dlqstream";
const ENTRY: &str = "dlqentryid";
const DELIVERIES: &str = "dlqdeliveries";
const ERRORTYPE: &str = "dlqerrortype";
const REASON: &str = "dlqreason";
const CONSUMER: &str = "dlqconsumer";
const TIME: &str = "dlqtime";

/// An entry on a role's dead-letter stream, `<prefix>:dlq:{<role>}`.
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
        let flat = self.original.len() <= DLQ_MAX_FLAT_FIELDS
            && !self
                .original
                .iter()
                .any(|(name, _)| name.starts_with(DLQ_FIELD_PREFIX));
        if flat {
            for (name, value) in &self.original {
                w.put(name, value);
            }
        } else {
            w.put(ORIGINAL, pack(&self.original));
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
        let original = match r.bytes(ORIGINAL) {
            Some(packed) => unpack(packed).map_err(|e| WireError::invalid(ORIGINAL, e))?,
            None => original,
        };
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

/// The entry's fields as one MessagePack array: name, value, name, value...
fn pack(fields: &Fields) -> Vec<u8> {
    let bytes: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 10).sum();
    let mut out = Vec::with_capacity(bytes + 5);
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, (fields.len() * 2) as u32);
    for (name, value) in fields {
        let _ = rmp::encode::write_str(&mut out, name);
        let _ = rmp::encode::write_bin(&mut out, value);
    }
    out
}

fn unpack(mut packed: &[u8]) -> Result<Fields, String> {
    let rd = &mut packed;
    let n = rmp::decode::read_array_len(rd).map_err(|e| e.to_string())? as usize;
    if !n.is_multiple_of(2) {
        return Err("an odd number of names and values".into());
    }
    // Each pair takes two bytes at least: a forged length cannot make a huge allocation.
    let mut fields = Vec::with_capacity((n / 2).min(rd.len() / 2));
    for _ in 0..n / 2 {
        let len = rmp::decode::read_str_len(rd).map_err(|e| e.to_string())?;
        let name = String::from_utf8(take(rd, len)?).map_err(|_| "a name is not UTF-8")?;
        let len = rmp::decode::read_bin_len(rd).map_err(|e| e.to_string())?;
        fields.push((name, take(rd, len)?));
    }
    Ok(fields)
}

/// The next `len` bytes of `rd`.
fn take(rd: &mut &[u8], len: u32) -> Result<Vec<u8>, String> {
    let len = len as usize;
    if rd.len() < len {
        return Err("cut short".into());
    }
    let (head, tail) = rd.split_at(len);
    *rd = tail;
    Ok(head.to_vec())
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

    #[test]
    fn an_entry_too_large_or_with_dlq_fields_is_carried_whole_in_one_field() {
        let many: Fields = (0..DLQ_MAX_FLAT_FIELDS + 1)
            .map(|i| (format!("f{i}"), vec![i as u8, 0xff]))
            .collect();
        let own_dlq: Fields = vec![
            ("type".into(), b"x".to_vec()),
            ("dlqreason".into(), b"mine".to_vec()),
        ];
        for original in [many, own_dlq] {
            let letter = DeadLetter {
                stream: "s".into(),
                entry: EntryId { ms: 1, seq: 0 },
                deliveries: 1,
                errortype: ErrorType::Malformed,
                reason: "too large".into(),
                consumer: "c".into(),
                time: Timestamp::from_second(1_700_000_000).unwrap(),
                original,
            };
            let fields = letter.encode();
            assert!(fields.len() < 20, "packed into one field: {}", fields.len());
            assert_eq!(DeadLetter::decode(fields).unwrap(), letter);
        }
    }

    #[test]
    fn a_forged_packed_original_is_an_error_not_a_panic() {
        for packed in [
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0x92, 0xa1],
            vec![0x91],
        ] {
            assert!(unpack(&packed).is_err());
        }
    }
}
