//! Budgets and usage totals, kept in Redis so every agent process sees the same spend.
//!
//! Per run, per tenant and UTC day, and per UTC day, a hash holds `calls`, `tokens_in`,
//! `tokens_out` and `cost_micros` (millionths of a USD, so sums are exact), and
//! `reserved_micros`, what calls in flight have reserved.
//!
//! A call reserves its estimated cost when it is allowed to start ([`Ledger::reserve`]):
//! atomically, only if none of its budgets is spent yet, and the estimate counts as spent
//! at once. Once the call is over, [`Ledger::settle`] replaces the estimate with the real
//! cost (or [`Ledger::release`] takes it back when the call never reached a provider). So
//! however many calls start at once, a budget is overspent by at most the calls that were
//! already running when it ran out, and a call is charged to the day it started on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use mindbus::keys::Keys;
use mindbus::streams::Connection;

use super::config::Budgets;

/// How long a day's totals are kept, and a run's.
const DAY_TTL_SECS: i64 = 8 * 86_400;
const RUN_TTL_SECS: i64 = 30 * 86_400;

static RESERVE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("reserve.lua")));

/// Whose money a call spends.
#[derive(Debug, Clone, Default)]
pub struct Payer {
    /// The workflow run, if the command belongs to one.
    pub run: Option<String>,
    /// The tenant (the command's `tenant` field; `default` when absent).
    pub tenant: String,
}

/// One call's usage, as events report it.
pub use mindbus::wire::Usage;

/// A call's estimated cost, counted against its budgets until it is settled or released.
/// One dropped unsettled (its call was dropped: the command was cancelled or ran out of
/// time) is finished in the background: charged what [`Reservation::if_taken`] said once
/// the provider took the call, else released, so no estimate stays charged for ever.
#[derive(Debug)]
#[must_use = "a reservation is settled or released"]
pub struct Reservation {
    keys: Vec<String>,
    estimate: u64,
    /// Set until the reservation is settled or released.
    ledger: Option<Ledger>,
    /// Set once the provider has taken the call.
    taken: Arc<AtomicBool>,
    /// What a call dropped after the provider took it is charged.
    if_taken: Usage,
}

impl Reservation {
    /// Says what the call costs if it is dropped after its provider took it; returns the
    /// flag to raise once it has.
    pub fn if_taken(&mut self, usage: Usage) -> Arc<AtomicBool> {
        self.if_taken = usage;
        Arc::clone(&self.taken)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(ledger) = self.ledger.take() else {
            return;
        };
        let usage = self.taken.load(Ordering::SeqCst).then_some(self.if_taken);
        let (keys, estimate) = (std::mem::take(&mut self.keys), self.estimate);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = ledger.finish(&keys, estimate, usage).await {
                    tracing::warn!(error = %e, "could not finish a dropped call's reservation");
                }
            });
        }
    }
}

/// The spend ledger of one deployment.
#[derive(Debug, Clone)]
pub struct Ledger {
    conn: Connection,
    keys: Keys,
}

impl Ledger {
    /// A ledger on `conn`, keyed under `prefix`.
    pub fn new(conn: Connection, prefix: &str) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
        }
    }

    /// The totals `payer`'s calls count toward today, each with its budget's name, limit
    /// and TTL.
    fn totals(
        &self,
        budgets: &Budgets,
        payer: &Payer,
    ) -> Vec<(String, &'static str, Option<f64>, i64)> {
        let day = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        let mut out = Vec::with_capacity(3);
        if let Some(run) = &payer.run {
            let key = self.keys.run_usage(run);
            out.push((key, "run", budgets.run_usd, RUN_TTL_SECS));
        }
        let tenant = self.keys.tenant_usage(&payer.tenant, &day);
        out.push((
            tenant,
            "tenant daily",
            budgets.tenant_daily_usd,
            DAY_TTL_SECS,
        ));
        let all = self.keys.daily_usage(&day);
        out.push((all, "daily", budgets.daily_usd, DAY_TTL_SECS));
        out
    }

    /// Reserves `estimate` micro-USD for one call of `payer`, or `Err` naming the first of
    /// its budgets already spent (then nothing is reserved and the call is not made).
    ///
    /// The reservation is made in a task of its own: a caller dropped while the script
    /// runs (its command cancelled) leaves the task's reservation unclaimed, and dropping
    /// it takes the estimate back, rather than leaving it charged until the totals expire.
    pub async fn reserve(
        &self,
        budgets: &Budgets,
        payer: &Payer,
        estimate: u64,
    ) -> Result<Reservation, BudgetError> {
        let totals = self.totals(budgets, payer);
        let ledger = self.clone();
        match tokio::spawn(async move { ledger.reserve_on(totals, estimate).await }).await {
            Ok(reserved) => reserved,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(BudgetError::Interrupted(e.to_string())),
        }
    }

    async fn reserve_on(
        &self,
        totals: Vec<(String, &'static str, Option<f64>, i64)>,
        estimate: u64,
    ) -> Result<Reservation, BudgetError> {
        let mut invocation = RESERVE.prepare_invoke();
        invocation.arg(estimate);
        for (key, _, limit, ttl) in &totals {
            let limit = limit.map_or(-1, |usd| (usd.max(0.0) * 1e6).ceil() as i64);
            invocation.key(key).arg(limit).arg(ttl);
        }
        let spent: usize = invocation.invoke_async(&mut self.conn.clone()).await?;
        if let Some((key, name, Some(limit), _)) = spent.checked_sub(1).and_then(|i| totals.get(i))
        {
            let so_far: Option<u64> = redis::cmd("HGET")
                .arg(key)
                .arg("cost_micros")
                .query_async(&mut self.conn.clone())
                .await?;
            return Err(BudgetError::Exceeded(format!(
                "the {name} budget of ${limit} is spent (${:.6})",
                so_far.unwrap_or(0) as f64 / 1e6
            )));
        }
        Ok(Reservation {
            keys: totals.into_iter().map(|(key, ..)| key).collect(),
            estimate,
            ledger: Some(self.clone()),
            taken: Arc::default(),
            if_taken: Usage::default(),
        })
    }

    /// Replaces a reservation's estimate with the call's real `usage`, on the totals it
    /// was reserved on (the day the call started, even after midnight).
    pub async fn settle(
        &self,
        mut reservation: Reservation,
        usage: Usage,
    ) -> redis::RedisResult<()> {
        reservation.ledger = None;
        self.finish(&reservation.keys, reservation.estimate, Some(usage))
            .await
    }

    /// Takes back a reservation whose call never reached a provider.
    pub async fn release(&self, mut reservation: Reservation) -> redis::RedisResult<()> {
        reservation.ledger = None;
        self.finish(&reservation.keys, reservation.estimate, None)
            .await
    }

    /// Ends a reservation of `estimate` on `keys`: the call's `usage` replaces it, or,
    /// without one, it is taken back.
    async fn finish(
        &self,
        keys: &[String],
        estimate: u64,
        usage: Option<Usage>,
    ) -> redis::RedisResult<()> {
        // A transaction: on a Redis Cluster whose `{usage}` slot is moving, redis-rs sends
        // a redirected pipeline again whole, which would count a plain pipeline's
        // increments twice; a transaction is refused whole instead.
        let mut pipe = redis::pipe();
        pipe.atomic();
        let estimate = estimate as i64;
        for key in keys {
            let mut add = |field: &str, by: i64| {
                pipe.cmd("HINCRBY").arg(key).arg(field).arg(by).ignore();
            };
            add("reserved_micros", -estimate);
            match usage {
                Some(usage) => {
                    add("calls", 1);
                    add("tokens_in", usage.tokens_in as i64);
                    add("tokens_out", usage.tokens_out as i64);
                    add("cost_micros", usage.cost_micros as i64 - estimate);
                }
                None => add("cost_micros", -estimate),
            }
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
    /// The reservation's task was cancelled (the process is shutting down).
    #[error("reserving against the budget ledger: {0}")]
    Interrupted(String),
}
