//! A real Prometheus (Debian's `prometheus` package) scraping a test's processes every half
//! second, with its data in a directory of its own; stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::servers::free_port;

/// A `prometheus` of the test's own.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts one scraping each `(job, host:port)` at `/metrics`, and waits until it is
    /// ready.
    pub async fn start(targets: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let jobs: String = targets
            .iter()
            .map(|(job, address)| {
                format!("  - job_name: {job}\n    static_configs: [{{targets: ['{address}']}}]\n")
            })
            .collect();
        let config = format!(
            "global: {{scrape_interval: 500ms, evaluation_interval: 500ms}}\nscrape_configs:\n{jobs}"
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "prometheus runs (Debian: apt-get install prometheus; scripts/test.sh installs it)",
            );
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        crate::testenv::eventually(
            Duration::from_secs(30),
            "prometheus is not ready",
            || async {
                let ready = reqwest::get(format!("{}/-/ready", prometheus.url()))
                    .await
                    .ok()?;
                ready.status().is_success().then_some(())
            },
        )
        .await;
        prometheus
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of an instant query's first sample, or `None` when it has none.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` gives `expected`; panics with what it gave last.
    pub async fn until(&self, promql: &str, expected: f64) {
        let mut last = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            last = self.query(promql).await;
            if last == Some(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{promql}: expected {expected}, got {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
