//! Where the CPU went during a throughput run: Redis (from `INFO cpu`), the consumer
//! processes and this load generator (from `/proc`), per round trip. On a machine with few
//! cores the three share them, so these figures say which one a ratio is bound by.

use std::time::Duration;

use mindbus::streams::Connection;

/// CPU time used so far by each party.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub redis: Option<Duration>,
    pub consumers: Option<Duration>,
    pub load: Option<Duration>,
}

/// CPU microseconds per round trip, by party (NaN where it could not be read).
#[derive(Debug, Clone, Copy)]
pub struct PerRoundTrip {
    pub redis_us: f64,
    pub consumers_us: f64,
    pub load_us: f64,
}

impl Usage {
    pub async fn now(conn: &mut Connection, consumers: &[u32]) -> Self {
        let consumers = consumers
            .iter()
            .map(|pid| process_cpu(&pid.to_string()))
            .sum::<Option<Duration>>();
        Self {
            redis: redis_cpu(conn).await,
            consumers,
            load: process_cpu("self"),
        }
    }

    /// What each party spent between `self` and `later`, per one of `n` round trips.
    pub fn per_round_trip(&self, later: &Usage, n: usize) -> PerRoundTrip {
        let per = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
            (Some(b), Some(a)) => a.saturating_sub(b).as_secs_f64() * 1e6 / n as f64,
            _ => f64::NAN,
        };
        PerRoundTrip {
            redis_us: per(self.redis, later.redis),
            consumers_us: per(self.consumers, later.consumers),
            load_us: per(self.load, later.load),
        }
    }
}

/// The servers' user plus system CPU time, from `INFO cpu` of every master.
async fn redis_cpu(conn: &mut Connection) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for (_, info) in conn
        .on_every_master(redis::cmd("INFO").arg("cpu"))
        .await
        .ok()?
    {
        let info: String = redis::from_redis_value(info).ok()?;
        let seconds = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        total += Duration::try_from_secs_f64(seconds("used_cpu_user")? + seconds("used_cpu_sys")?)
            .ok()?;
    }
    Some(total)
}

/// How many masters serve the data (one on a single Redis).
pub async fn masters(conn: &mut Connection) -> usize {
    conn.on_every_master(&redis::cmd("PING"))
        .await
        .map_or(1, |replies| replies.len())
}

/// A process's user plus system CPU time, from `/proc/<pid>/stat` (Linux only).
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In clock ticks of USER_HZ, which Linux fixes at 100 on x86 and Arm (the machines this
    // benchmark is run on); elsewhere the consumer and load figures would be off by a factor.
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let start = process_cpu("self").expect("a Linux /proc");
        let mut x = 0u64;
        for i in 0..100_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu("self").expect("a Linux /proc") > start);
    }
}
