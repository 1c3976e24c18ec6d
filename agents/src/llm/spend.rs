//! Budgets and usage totals, kept in Redis so every agent process sees the same spend.
//!
//! Per run, per tenant and UTC day, and per UTC day, a hash holds `calls`, `tokens_in`,
//! `tokens_out` and `cost_micros` (millionths of a USD, so sums are exact).

use mindbus::keys::Keys;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;

use super::config::Budgets;

/// How long a day's totals are kept, and a run's.
const DAY_TTL_SECS: i64 = 8 * 86_400;
const RUN_TTL_SECS: i64 = 30 * 86_400;

/// Whose money a call spends.
#[derive(Debug, Clone, Default)]
pub struct Payer {
    /// The workflow run, if the command belongs to one.
    pub run: Option<String>,
    /// The tenant (the command's `tenant` field; `default` when absent).
    pub tenant: String,
}

/// One call's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Answer tokens.
    pub tokens_out: u64,
    /// Cost in micro-USD.
    pub cost_micros: u64,
}

/// The spend ledger of one deployment.
#[derive(Debug, Clone)]
pub struct Ledger {
    conn: ConnectionManager,
    prefix: String,
}

impl Ledger {
    /// A ledger on `conn`, keyed under `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_string(),
        }
    }

    fn keys(&self, payer: &Payer) -> [(Option<String>, i64); 3] {
        let day = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        [
            (
                payer
                    .run
                    .as_ref()
                    .map(|run| Keys::new(self.prefix.clone()).run_usage(run)),
                RUN_TTL_SECS,
            ),
            (
                Some(format!(
                    "{}:llm:usage:tenant:{}:{day}",
                    self.prefix, payer.tenant
                )),
                DAY_TTL_SECS,
            ),
            (
                Some(format!("{}:llm:usage:day:{day}", self.prefix)),
                DAY_TTL_SECS,
            ),
        ]
    }

    /// `Err` naming the first budget already spent; a call is refused before it is made.
    pub async fn check(&self, budgets: &Budgets, payer: &Payer) -> Result<(), BudgetError> {
        let limits = [
            ("run", budgets.run_usd),
            ("tenant daily", budgets.tenant_daily_usd),
            ("daily", budgets.daily_usd),
        ];
        for ((key, _), (name, limit)) in self.keys(payer).into_iter().zip(limits) {
            let (Some(key), Some(limit)) = (key, limit) else {
                continue;
            };
            let spent: Option<u64> = self.conn.clone().hget(&key, "cost_micros").await?;
            let spent = spent.unwrap_or(0);
            if spent as f64 >= limit * 1e6 {
                return Err(BudgetError::Exceeded(format!(
                    "the {name} budget of ${limit} is spent (${:.6})",
                    spent as f64 / 1e6
                )));
            }
        }
        Ok(())
    }

    /// Adds one call's usage to every total it counts toward.
    pub async fn record(&self, payer: &Payer, usage: Usage) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (key, ttl) in self.keys(payer) {
            let Some(key) = key else { continue };
            pipe.hincr(&key, "calls", 1)
                .hincr(&key, "tokens_in", usage.tokens_in)
                .hincr(&key, "tokens_out", usage.tokens_out)
                .hincr(&key, "cost_micros", usage.cost_micros)
                .expire(&key, ttl)
                .ignore();
        }
        pipe.exec_async(&mut self.conn.clone()).await
    }
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A budget is spent.
    #[error("{0}")]
    Exceeded(String),
    /// The ledger could not be read.
    #[error("reading the budget ledger: {0}")]
    Redis(#[from] redis::RedisError),
}
