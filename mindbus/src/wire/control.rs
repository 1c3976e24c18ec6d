//! The control stream's entry: a cancellation of one command, or of every command of a run
//! (agents match it against each command's `runid`). Written by the bus client and the
//! orchestrator, read by every agent.

use super::{Fields, MessageId, field_text};

/// The `type` of a cancellation entry.
pub const CANCEL_TYPE: &str = "mindbus.cancel";

/// What a control entry cancels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cancel {
    /// One command, by id (`correlationid`).
    Command(MessageId),
    /// Every command of a run, by run id (`runid`).
    Run(String),
}

impl Cancel {
    /// The entry's fields: `type mindbus.cancel` and `correlationid` or `runid`.
    pub fn encode(&self) -> Fields {
        let (name, value) = match self {
            Self::Command(id) => ("correlationid", id.to_string()),
            Self::Run(run) => ("runid", run.clone()),
        };
        vec![
            ("type".into(), CANCEL_TYPE.into()),
            (name.into(), value.into_bytes()),
        ]
    }

    /// The cancellation an entry holds; `None` for any other entry (the control stream may
    /// carry other kinds later) or one naming nothing.
    pub fn decode(fields: &[(String, Vec<u8>)]) -> Option<Self> {
        if field_text(fields, "type") != Some(CANCEL_TYPE) {
            return None;
        }
        if let Some(id) = field_text(fields, "correlationid") {
            return id.parse().ok().map(Self::Command);
        }
        field_text(fields, "runid").map(|run| Self::Run(run.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellations_round_trip_and_other_entries_are_none() {
        for cancel in [Cancel::Command(MessageId::new()), Cancel::Run("r-1".into())] {
            assert_eq!(Cancel::decode(&cancel.encode()), Some(cancel));
        }
        let other: Fields = vec![("type".into(), b"mindbus.other".to_vec())];
        assert_eq!(Cancel::decode(&other), None);
        let empty: Fields = vec![("type".into(), CANCEL_TYPE.into())];
        assert_eq!(Cancel::decode(&empty), None);
    }
}
