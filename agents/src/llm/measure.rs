//! What the LLM layer counts, by provider and model: calls and how they ended, their
//! latency, tokens and cost; cache lookups by role; rate-limit waits; budget refusals.
//! Every label comes from the LLM config (models, roles), never from a command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mindbus::telemetry::metrics as names;

use super::models::ModelRef;
use super::spend::Usage;

fn labels(model: &ModelRef) -> [(&'static str, String); 2] {
    [
        ("provider", model.provider.as_str().to_owned()),
        ("model", model.name.clone()),
    ]
}

/// A call being made: counted when it ends ([`Meter::finish`]), or, dropped first (its
/// command cancelled or out of time), as `canceled`, with its prompt's usage if the provider
/// took it (what the ledger charges then).
#[derive(Debug)]
pub(crate) struct Meter {
    model: ModelRef,
    started: Instant,
    taken: Arc<AtomicBool>,
    prompt: Usage,
    done: bool,
}

impl Meter {
    pub fn start(model: &ModelRef, taken: Arc<AtomicBool>, prompt: Usage) -> Self {
        Self {
            model: model.clone(),
            started: Instant::now(),
            taken,
            prompt,
            done: false,
        }
    }

    /// The call ended: `failure` is the failure's kind, if it failed; `usage`, what it was
    /// billed, if the provider took it.
    pub fn finish(mut self, usage: Option<Usage>, failure: Option<&str>) {
        self.done = true;
        call(&self.model, self.started.elapsed(), usage, failure);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if !self.done {
            let usage = self.taken.load(Ordering::SeqCst).then_some(self.prompt);
            call(&self.model, self.started.elapsed(), usage, Some("canceled"));
        }
    }
}

fn call(model: &ModelRef, took: Duration, usage: Option<Usage>, failure: Option<&str>) {
    let [provider, name] = labels(model);
    let outcome = ("outcome", failure.unwrap_or("ok").to_owned());
    metrics::counter!(names::LLM_CALLS, &[provider.clone(), name.clone(), outcome]).increment(1);
    metrics::histogram!(names::LLM_CALL_DURATION, &[provider.clone(), name.clone()])
        .record(took.as_secs_f64());
    if let Some(usage) = usage {
        let tokens = |kind: &'static str| {
            metrics::counter!(
                names::LLM_TOKENS,
                &[provider.clone(), name.clone(), ("type", kind.to_owned())]
            )
        };
        tokens("input").increment(usage.tokens_in);
        tokens("output").increment(usage.tokens_out);
        metrics::gauge!(names::LLM_COST, &[provider, name])
            .increment(usage.cost_micros as f64 / 1e6);
    }
}

/// A call waited `waited` for its model's shared rate limit.
pub(crate) fn rate_limit_wait(model: &ModelRef, waited: Duration) {
    metrics::histogram!(names::LLM_RATE_LIMIT_WAIT, &labels(model)).record(waited.as_secs_f64());
}

/// A call refused because a budget was spent.
pub(crate) fn budget_refused(model: &ModelRef) {
    metrics::counter!(names::LLM_BUDGET_REFUSALS, &labels(model)).increment(1);
}

/// A lookup in the answer cache by `role`.
pub(crate) fn cache(role: &str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(names::LLM_CACHE, "role" => role.to_owned(), "result" => result).increment(1);
}
