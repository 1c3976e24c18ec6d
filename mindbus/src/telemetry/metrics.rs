//! Prometheus metrics: the catalogue of every metric a MindBus process exports, and the
//! process's one recorder.
//!
//! The recorder is installed only by a process that serves `/metrics` ([`recorder`], called
//! by [`super::probes`]); until then every `metrics::counter!` and the like is a no-op, so
//! a process without a metrics listener pays nothing for them.
//!
//! Every metric is named here once, with its kind and help text: the code records through
//! these constants, each process describes them all (`# HELP` and `# TYPE` on what it
//! exports), and the dashboards' queries are checked against [`CATALOGUE`]. Durations are
//! histograms in seconds, with [`BUCKETS`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What kind of metric a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind and help text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

macro_rules! catalogue {
    ($($(#[$doc:meta])* $constant:ident = $kind:ident $name:literal $help:literal;)*) => {
        $($(#[$doc])* pub const $constant: &str = $name;)*
        /// Every metric MindBus exports.
        pub const CATALOGUE: &[Metric] = &[$(Metric { name: $name, kind: Kind::$kind, help: $help }),*];
    };
}

catalogue! {
    BUILD_INFO = Gauge "mindbus_build_info"
        "Always 1; the labels name the process (service) and its version.";

    // The agent runtime, labelled by role.
    COMMANDS_HANDLED = Counter "mindbus_commands_handled_total"
        "Commands an agent finished, by role and outcome: completed, failed, canceled, dead_lettered, duplicate (another finish was accepted first) or deleted (gone from the stream while pending).";
    COMMAND_DURATION = Histogram "mindbus_command_duration_seconds"
        "Time from an agent taking a command to its finish being written, retries included, by role.";
    COMMANDS_IN_FLIGHT = Gauge "mindbus_commands_in_flight"
        "Commands an agent is handling now, by role.";
    COMMAND_RETRIES = Counter "mindbus_command_retries_total"
        "Failed attempts an agent will try again, by role.";
    DEAD_LETTERS = Counter "mindbus_dead_letters_total"
        "Commands an agent dead-lettered, by role and error type.";
    RECLAIMS = Counter "mindbus_reclaims_total"
        "Entries a consumer took over from another that left them idle past the lease, by stream and group.";

    // Streams, sampled by the monitor.
    STREAM_LENGTH = Gauge "mindbus_stream_length"
        "Entries in a stream, by stream, role and kind (cmd, result, event, dlq).";
    STREAM_PENDING = Gauge "mindbus_stream_pending"
        "Entries delivered to a group and not yet acknowledged, by stream (with its role and kind) and group.";
    STREAM_LAG = Gauge "mindbus_stream_lag"
        "Entries not yet delivered to a group, by stream (with its role and kind) and group; the monitor's own group is mindbus-monitor.";

    // The monitor.
    MONITOR_ROWS = Counter "mindbus_monitor_rows_written_total"
        "Stream entries the monitor recorded in Postgres (each once: a redelivered entry adds no row).";
    MONITOR_LAG = Gauge "mindbus_monitor_lag_seconds"
        "Age of the newest entry in the monitor's last batch when it was recorded; 0 once a read finds nothing new and no batch waits for Postgres.";

    // The orchestrator.
    RUNS_STARTED = Counter "mindbus_runs_started_total"
        "Runs started, by workflow.";
    RUNS_FINISHED = Counter "mindbus_runs_finished_total"
        "Runs that ended, by workflow and status (completed, failed, canceled).";
    STEP_DURATION = Histogram "mindbus_step_duration_seconds"
        "Time from a step's command being recorded as sent to its result being applied, by role.";
    ORCHESTRATION_OVERHEAD = Histogram "mindbus_orchestration_overhead_seconds"
        "Time from a step's result being written to the orchestrator having applied it and sent the commands it enables.";

    // The LLM layer, labelled by provider and model.
    LLM_CALLS = Counter "mindbus_llm_calls_total"
        "Calls to a model, by provider, model and outcome (ok, or the failure's kind).";
    LLM_CALL_DURATION = Histogram "mindbus_llm_call_duration_seconds"
        "Time a model call took, from sending it to the last of its answer, by provider and model.";
    LLM_TOKENS = Counter "mindbus_llm_tokens_total"
        "Tokens billed, by provider, model and type (input, output).";
    LLM_COST = Gauge "mindbus_llm_cost_usd"
        "What model calls cost since the process started, in US dollars, by provider and model: a running sum (a gauge only because counters count whole numbers), so use increase() and rate() as on a counter.";
    LLM_CACHE = Counter "mindbus_llm_cache_lookups_total"
        "Lookups in the shared answer cache, by role and result (hit, miss).";
    LLM_RATE_LIMIT_WAIT = Histogram "mindbus_llm_rate_limit_wait_seconds"
        "Time a call waited for the shared rate limit of its model, by provider and model.";
    LLM_BUDGET_REFUSALS = Counter "mindbus_llm_budget_refusals_total"
        "Calls refused because a budget was spent, by provider and model.";

    // The gateway.
    GATEWAY_REQUESTS = Counter "mindbus_gateway_requests_total"
        "HTTP requests, by method, route (the matched route, `unmatched` for none) and status.";
    GATEWAY_REQUEST_DURATION = Histogram "mindbus_gateway_request_duration_seconds"
        "Time to answer an HTTP request (to its headers, for an event stream), by method and route.";
    GATEWAY_COMMANDS = Counter "mindbus_gateway_commands_total"
        "Commands the gateway published, by role.";
    GATEWAY_RATE_LIMITED = Counter "mindbus_gateway_rate_limited_total"
        "Requests refused by an API key's rate limit, by key name.";

    // Every HTTP listener (the gateway's API, every process's probes).
    HTTP_CONNECTIONS_REFUSED = Counter "mindbus_http_connections_refused_total"
        "Connections closed on accept because the listener had its most open.";
}

/// Histogram buckets for every duration, in seconds: from half a millisecond (a command
/// through the bus) to five minutes (an LLM step).
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Seconds from `ms` (milliseconds since the Unix epoch, as in an entry id) to now; 0 for
/// a time ahead of this clock.
pub fn seconds_since(ms: u64) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(ms) as f64 / 1000.0
}

/// Installs the process's Prometheus recorder on first use and describes every metric;
/// `service` names the process in [`BUILD_INFO`].
pub fn recorder(service: &'static str) -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Buckets for every `_seconds` histogram; the matcher cannot be invalid.
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        for metric in CATALOGUE {
            match metric.kind {
                Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
                Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
                Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
            }
        }
        metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for metric in CATALOGUE {
            assert!(seen.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("mindbus_"), "{}", metric.name);
            let total = metric.name.ends_with("_total");
            assert_eq!(total, metric.kind == Kind::Counter, "{}", metric.name);
            if metric.kind == Kind::Histogram {
                assert!(metric.name.ends_with("_seconds"), "{}", metric.name);
            }
            assert!(!metric.help.is_empty(), "{}", metric.name);
        }
    }
}
