//! Rate limits in requests and tokens per minute, shared by every agent process through
//! Redis: one GCRA (generic cell rate algorithm) state per limit, checked and updated by a
//! script, so processes never race past a limit together.

use mindbus::keys::Keys;
use std::time::Duration;

use mindbus::streams::Connection;
use tokio_util::sync::CancellationToken;

use super::config::{Limit, LlmConfig};
use super::models::ModelRef;

/// All-or-nothing over every limit a call falls under. Per key: `ARGV` holds the time a
/// unit adds (µs) and the tolerance (µs). A call is admitted when every key's theoretical
/// arrival time is within its tolerance of now; otherwise it returns the µs to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  local late = math.max(tat, now) - now - tonumber(ARGV[2 * i])
  if late > wait then wait = late end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local tat = math.max(tonumber(redis.call('GET', key) or now), now) + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, tat, 'PX', math.floor((tat - now) / 1000) + 1000)
end
return 0
";

/// The shared limiter.
#[derive(Debug, Clone)]
pub struct Limiter {
    conn: Connection,
    keys: Keys,
    script: redis::Script,
}

/// One limit applied to one call: its key, the µs this call adds, and the tolerance.
struct Charge {
    key: String,
    increment_us: u64,
    tolerance_us: u64,
}

impl Limiter {
    /// A limiter on `conn`, keyed under `prefix`.
    pub fn new(conn: Connection, prefix: &str) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
            script: redis::Script::new(GCRA),
        }
    }

    /// Waits until a call to `model` of about `tokens` tokens is within every limit, then
    /// counts it. `false` when cancelled first.
    pub async fn acquire(
        &self,
        config: &LlmConfig,
        model: &ModelRef,
        tokens: u64,
        cancel: &CancellationToken,
    ) -> redis::RedisResult<bool> {
        let charges = self.charges(config, model, tokens);
        if charges.is_empty() {
            return Ok(true);
        }
        loop {
            let mut invocation = self.script.prepare_invoke();
            for charge in &charges {
                invocation
                    .key(&charge.key)
                    .arg(charge.increment_us)
                    .arg(charge.tolerance_us);
            }
            let wait_us: u64 = invocation.invoke_async(&mut self.conn.clone()).await?;
            if wait_us == 0 {
                return Ok(true);
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                () = tokio::time::sleep(Duration::from_micros(wait_us)) => {}
            }
        }
    }

    fn charges(&self, config: &LlmConfig, model: &ModelRef, tokens: u64) -> Vec<Charge> {
        let scopes = [model.provider.to_string(), model.to_string()];
        let mut charges = Vec::new();
        for scope in scopes {
            let Some(limit) = config.limits.get(&scope) else {
                continue;
            };
            let Limit {
                requests_per_minute,
                tokens_per_minute,
                burst,
            } = *limit;
            if let Some(rpm) = requests_per_minute.filter(|r| *r > 0) {
                let per = 60_000_000 / u64::from(rpm);
                charges.push(Charge {
                    key: self.keys.llm_limit(&scope, "requests"),
                    increment_us: per,
                    tolerance_us: per * u64::from(burst.max(1) - 1),
                });
            }
            if let Some(tpm) = tokens_per_minute.filter(|t| *t > 0) {
                charges.push(Charge {
                    key: self.keys.llm_limit(&scope, "tokens"),
                    increment_us: 60_000_000 * tokens / u64::from(tpm),
                    tolerance_us: 0,
                });
            }
        }
        charges
    }
}
