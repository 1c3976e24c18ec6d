//! Command ids derived from where they belong, so a step sent again after a crash is the
//! same command (and the agents' done keys keep its result single).

use uuid::{Builder, Uuid};

/// The id of the command for `step`'s fan-out `item` in loop `round` of run `run`: a UUIDv7
/// with the run's timestamp (ids sort by run) and bits hashed from the rest.
pub fn command_id(run: Uuid, step: &str, item: usize, round: u32) -> Uuid {
    let hashed = Uuid::new_v5(&run, format!("{step}/{item}/{round}").as_bytes());
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&hashed.as_bytes()[..10]);
    let run_bytes = run.as_bytes();
    let mut millis = [0u8; 8];
    millis[2..].copy_from_slice(&run_bytes[..6]);
    Builder::from_unix_timestamp_millis(u64::from_be_bytes(millis), &bits).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_version_7() {
        let run = Uuid::now_v7();
        let a = command_id(run, "draft", 0, 1);
        assert_eq!(a, command_id(run, "draft", 0, 1));
        assert_ne!(a, command_id(run, "draft", 1, 1));
        assert_ne!(a, command_id(run, "draft", 0, 2));
        assert_ne!(a, command_id(Uuid::now_v7(), "draft", 0, 1));
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.as_bytes()[..6], run.as_bytes()[..6]);
    }
}
