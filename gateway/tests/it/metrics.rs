//! Every process serves its metrics and probes, and a real Prometheus scraping them all
//! answers PromQL with the counts of what the test did.

use std::collections::HashSet;

use mindbus::telemetry::metrics::{CATALOGUE, Kind};
use mindbus_testkit::prometheus::Prometheus;
use serde_json::{Value, json};

use crate::stack::Stack;

/// Commands that complete, besides the run's steps.
const SAID: usize = 12;

#[tokio::test]
async fn prometheus_scraping_every_process_counts_what_the_mesh_did() {
    let stack = Stack::observed("metrics").await;
    let jobs: Vec<&str> = stack.metrics.iter().map(|(job, _)| *job).collect();
    assert_eq!(jobs, ["orchestrator", "agent", "monitor", "gateway"]);
    for (job, address) in &stack.metrics {
        for probe in ["healthz", "readyz"] {
            let answer = stack
                .http
                .get(format!("http://{address}/{probe}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{job} /{probe}");
        }
    }
    let prometheus = Prometheus::start(&stack.metrics).await;
    for job in &jobs {
        prometheus.until(&format!("up{{job=\"{job}\"}}"), 1.0).await;
    }

    for i in 0..SAID {
        let said = stack
            .post(0, "/v1/roles/echo/commands?wait_ms=15000")
            .json(&json!({"type": "echo.say", "data": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(said.status(), 200);
    }
    // Fails every attempt: dead-lettered after the second.
    let doomed = json!({"type": "echo.say", "data": {"fail": "retryable"}, "maxattempts": 2});
    let doomed = stack
        .post(0, "/v1/roles/echo/commands?wait_ms=15000")
        .json(&doomed)
        .send()
        .await
        .unwrap();
    assert_eq!(doomed.status(), 200);
    stack.two_step_run("metrics").await;

    let echo = "role=\"echo\"";
    let handled = |outcome: &str| {
        format!("sum(mindbus_commands_handled_total{{{echo},outcome=\"{outcome}\"}})")
    };
    prometheus
        .until(&handled("completed"), (SAID + 2) as f64)
        .await;
    prometheus.until(&handled("dead_lettered"), 1.0).await;
    prometheus
        .until(&format!("sum(mindbus_dead_letters_total{{{echo}}})"), 1.0)
        .await;
    prometheus
        .until(
            &format!("sum(mindbus_command_retries_total{{{echo}}})"),
            1.0,
        )
        .await;
    prometheus
        .until(
            &format!("sum(mindbus_command_duration_seconds_count{{{echo}}})"),
            (SAID + 3) as f64,
        )
        .await;
    prometheus
        .until(&format!("sum(mindbus_commands_in_flight{{{echo}}})"), 0.0)
        .await;
    // The monitor's samples: everything delivered and acknowledged, one dead letter kept.
    let commands = format!("{echo},kind=\"cmd\"");
    prometheus
        .until(
            &format!("sum(mindbus_stream_length{{{commands}}})"),
            (SAID + 3) as f64,
        )
        .await;
    let echo_group = "group=\"echo\"";
    prometheus
        .until(&format!("sum(mindbus_stream_lag{{{echo_group}}})"), 0.0)
        .await;
    prometheus
        .until(&format!("sum(mindbus_stream_pending{{{echo_group}}})"), 0.0)
        .await;
    prometheus
        .until(
            &format!("sum(mindbus_stream_length{{{echo},kind=\"dlq\"}})"),
            1.0,
        )
        .await;
    prometheus
        .until("sum(mindbus_monitor_rows_written_total) >= bool 15", 1.0)
        .await;
    // The orchestrator: one run, its two steps.
    prometheus
        .until(
            "sum(mindbus_runs_finished_total{workflow=\"sample\",status=\"completed\"})",
            1.0,
        )
        .await;
    prometheus
        .until("sum(mindbus_runs_started_total{workflow=\"sample\"})", 1.0)
        .await;
    prometheus
        .until(
            &format!("sum(mindbus_step_duration_seconds_count{{{echo}}})"),
            2.0,
        )
        .await;
    prometheus
        .until("sum(mindbus_orchestration_overhead_seconds_count)", 2.0)
        .await;
    // The gateway, by the route that matched, not the path.
    prometheus
        .until(
            "sum(mindbus_gateway_requests_total{method=\"POST\",route=\"/v1/roles/{role}/commands\",status=\"200\"})",
            (SAID + 1) as f64,
        )
        .await;
    prometheus
        .until(
            "sum(mindbus_gateway_request_duration_seconds_bucket{route=\"/v1/runs\",le=\"+Inf\"})",
            1.0,
        )
        .await;

    // Every dashboard query is PromQL Prometheus takes; every panel of the mesh's
    // dashboard shows data.
    for panel in dashboard_panels() {
        let mut shown = false;
        for expr in &panel.exprs {
            let expr = expr.replace("$__rate_interval", "1m");
            shown |= prometheus.query(&expr).await.is_some();
        }
        if panel.file == "mindbus-mesh.json" {
            assert!(shown, "{}: {} shows nothing", panel.file, panel.title);
        }
    }

    // What every process exports is in the catalogue, with its help and type.
    for (job, address) in &stack.metrics {
        let text = stack
            .http
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let exported = exported(&text);
        assert!(!exported.is_empty(), "{job} exports nothing");
        for (name, kind) in exported {
            let known = CATALOGUE.iter().find(|m| m.name == name);
            let known =
                known.unwrap_or_else(|| panic!("{job} exports {name}, not in the catalogue"));
            assert_eq!(known.kind, kind, "{job}: {name}");
            assert!(
                text.contains(&format!("# HELP {name} {}", known.help)),
                "{job}: {name} has no help"
            );
        }
    }
}

/// The names and kinds of the metrics in a Prometheus exposition.
fn exported(text: &str) -> HashSet<(String, Kind)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|line| {
            let (name, kind) = line.split_once(' ').unwrap();
            let kind = match kind {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                other => panic!("{name} is a {other}"),
            };
            (name.to_owned(), kind)
        })
        .collect()
}

/// The shipped observability files, from the repository's root.
fn shipped(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The metric names a PromQL expression uses (the `mindbus_` ones; recording rules'
/// `mindbus:` names are not metrics).
fn names_in(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("mindbus_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// What `name` is of the catalogue's metrics: itself, or a histogram's series.
fn in_catalogue(name: &str) -> bool {
    let known = |name: &str, kinds: &[Kind]| {
        CATALOGUE
            .iter()
            .any(|m| m.name == name && kinds.contains(&m.kind))
    };
    known(name, &[Kind::Counter, Kind::Gauge, Kind::Histogram])
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| known(base, &[Kind::Histogram]))
        })
}

#[test]
fn every_dashboard_query_and_rule_names_only_exported_metrics() {
    let provisioned = std::fs::read_to_string(shipped(
        "config/grafana/provisioning/datasources/datasources.yaml",
    ))
    .unwrap();
    let panels = dashboard_panels();
    let files: HashSet<&str> = panels.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for panel in &panels {
        let title = format!("{}: {}", panel.file, panel.title);
        let uid = &panel.datasource;
        assert!(
            provisioned.contains(&format!("uid: {uid}")),
            "{title}: no data source {uid}"
        );
        assert!(!panel.exprs.is_empty(), "{title} has no query");
        for expr in &panel.exprs {
            let names = names_in(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no MindBus metric");
            for name in names {
                assert!(in_catalogue(name), "{title}: {name} is not exported");
            }
        }
    }
    let rules = std::fs::read_to_string(shipped("config/prometheus/rules.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        for name in names_in(line) {
            assert!(in_catalogue(name), "rules.yml: {name} is not exported");
        }
    }
}

#[test]
fn the_shipped_prometheus_config_and_rules_pass_promtool() {
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .output()
            .expect(
                "promtool runs (Debian: apt-get install prometheus; scripts/test.sh installs it)",
            );
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |p: &str| shipped(p).to_str().unwrap().to_owned();
    promtool(&["check", "config", &path("config/prometheus/prometheus.yml")]);
    promtool(&["check", "rules", &path("config/prometheus/rules.yml")]);
    // The alerts fire on what they are meant for (see the file's tests).
    promtool(&["test", "rules", &path("config/prometheus/rules.test.yml")]);
}

/// One panel of a shipped dashboard.
struct Panel {
    file: String,
    title: String,
    datasource: String,
    exprs: Vec<String>,
}

/// Every panel of every shipped dashboard.
fn dashboard_panels() -> Vec<Panel> {
    let mut panels = Vec::new();
    for entry in std::fs::read_dir(shipped("config/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            let exprs = panel["targets"].as_array().unwrap().iter();
            panels.push(Panel {
                file: path.file_name().unwrap().to_str().unwrap().to_owned(),
                title: panel["title"].as_str().unwrap().to_owned(),
                datasource: panel["datasource"]["uid"].as_str().unwrap().to_owned(),
                exprs: exprs
                    .map(|t| t["expr"].as_str().unwrap().to_owned())
                    .collect(),
            });
        }
    }
    panels
}

/// `/readyz` answers 503 naming what does not answer, and asks the process's dependencies
/// at most once a second however often it is probed.
#[tokio::test]
async fn readyz_names_what_does_not_answer_and_asks_at_most_once_a_second() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mindbus::telemetry::probes;
    use tower::ServiceExt as _;

    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    let check = probes::check(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err("postgres does not answer: refused".to_owned()) }
    });
    let app = probes::router("mindbus-test", check);
    let probe = || async {
        let answer = app
            .clone()
            .oneshot(crate::support::get("/readyz", None))
            .await
            .unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        (status.as_u16(), String::from_utf8(body.to_vec()).unwrap())
    };
    for _ in 0..5 {
        let (status, body) = probe().await;
        assert_eq!(status, 503);
        assert_eq!(body, "postgres does not answer: refused");
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(probe().await.0, 503);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}
