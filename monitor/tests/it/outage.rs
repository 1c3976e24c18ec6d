//! A Postgres outage: commands keep flowing at full speed, and once Postgres is back the
//! log has no gap and no duplicate. Uses a private PostgreSQL, never the shared one.

use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mindbus::wire::{Command, Payload};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{Mesh, TestDb, wait_recorded};

/// A PostgreSQL cluster of the test's own, on a free port.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries are installed")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .max()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(
                Process::new("chown")
                    .arg("-R")
                    .arg("postgres")
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self { bin, dir, port };
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "postgres"],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = if nix::unistd::geteuid().is_root() {
            let mut cmd = Process::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Process::new(&program)
        };
        let status = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {args:?} failed");
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Process::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Process::new(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("MINDBUS_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_leaves_no_gap_and_no_duplicate() {
    let pg = PrivatePostgres::start();
    let db = TestDb::on(&pg.url(), "outage").await;
    let mesh = Mesh::new("outage").await;
    mesh.agent();
    let _monitor = mesh.monitor(&db, &[]);

    // 200 commands a second, all along.
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (bus, sent) = (mesh.bus.clone(), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tick.tick().await;
                let i = sent.load(Ordering::SeqCst);
                bus.publish(
                    "echo",
                    &Command::new("echo.say", Payload::json(json!({"i": i}))),
                )
                .await
                .unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.down();
    let down_at = Instant::now();
    let sent_at_down = sent.load(Ordering::SeqCst);
    tokio::time::sleep(outage()).await;
    let sent_during = sent.load(Ordering::SeqCst) - sent_at_down;
    let results = mesh.len(&mesh.stream("result")).await;
    pg.up();
    let outage_took = down_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    producer.abort();
    let total = sent.load(Ordering::SeqCst);

    let per_second = sent_during as f64 / outage_took.as_secs_f64();
    assert!(
        results + 400 >= sent_at_down + sent_during,
        "agents kept up during the outage: {results} results for {} commands",
        sent_at_down + sent_during
    );
    mesh.wait_results(total, Duration::from_secs(60)).await;
    let caught_up = Instant::now();
    let recorded = wait_recorded(&mesh, &db.pool().await, Duration::from_secs(120)).await;
    println!(
        "outage: postgres down {outage_took:?} while {per_second:.0} commands/s flowed; {} entries recorded, \
         no gap, no duplicate, caught up {:?} after postgres returned",
        recorded.len(),
        caught_up.elapsed()
    );
}
