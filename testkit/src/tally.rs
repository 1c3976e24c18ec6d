//! The fault suite's checker, in the spirit of Jepsen's total-queue test: every command sent
//! with a unique id is classified as answered once, lost (no accepted result) or answered
//! twice (more than one accepted result).

use std::collections::HashMap;
use std::time::Duration;

use mindbus::wire::MessageId;

/// How the commands of one run of a fault case were answered.
#[derive(Debug, Default)]
pub struct Tally {
    /// Commands sent (and acknowledged by Redis).
    pub sent: usize,
    /// Commands with exactly one accepted result.
    pub once: usize,
    /// Commands with no accepted result.
    pub lost: Vec<MessageId>,
    /// Commands with more than one accepted result.
    pub twice: Vec<MessageId>,
}

impl Tally {
    /// Classifies every id of `sent` by the accepted results (`answers`: the ids the
    /// results answer, one per result).
    pub fn of<'a>(sent: &'a [MessageId], answers: impl IntoIterator<Item = &'a MessageId>) -> Self {
        let mut counts: HashMap<&MessageId, usize> = sent.iter().map(|id| (id, 0)).collect();
        for id in answers {
            if let Some(n) = counts.get_mut(id) {
                *n += 1;
            }
        }
        let mut tally = Tally {
            sent: sent.len(),
            ..Tally::default()
        };
        for id in sent {
            match counts[id] {
                0 => tally.lost.push(id.clone()),
                1 => tally.once += 1,
                _ => tally.twice.push(id.clone()),
            }
        }
        tally
    }

    /// Prints the case's line: how many `units` (commands, runs) were sent, answered once,
    /// lost and answered twice, the recovery time when there was one to wait for, and a note.
    pub fn report(&self, case: &str, units: &str, recovery: Option<Duration>, note: &str) {
        let recovered = recovery.map_or(String::new(), |r| {
            format!("; recovered in {:.1} s", r.as_secs_f64())
        });
        println!(
            "fault {case}: {} {units}, {} answered once, {} lost, {} answered twice{recovered}{}{note}",
            self.sent,
            self.once,
            self.lost.len(),
            self.twice.len(),
            if note.is_empty() { "" } else { "; " },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_once_lost_or_twice() {
        let ids: Vec<MessageId> = (0..4).map(|_| MessageId::new()).collect();
        let answers = [&ids[0], &ids[1], &ids[1], &ids[3], &MessageId::new()];
        let tally = Tally::of(&ids, answers);
        assert_eq!(tally.sent, 4);
        assert_eq!(tally.once, 2);
        assert_eq!(tally.lost, vec![ids[2].clone()]);
        assert_eq!(tally.twice, vec![ids[1].clone()]);
    }
}
