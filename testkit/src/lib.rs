//! What MindBus's tests need to run real parts: private Redis and PostgreSQL servers they
//! may kill or stop ([`servers`]), the mesh's own processes ([`binary`]), every entry of a
//! stream ([`entries`]), the shared servers' helpers ([`testenv`]), and the fault suite's
//! checker ([`Tally`]), an OTLP receiver for the spans processes export ([`otlp`]), and a
//! real Prometheus scraping them ([`prometheus`]). The fault suite itself is this crate's
//! integration test, `tests/faults`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod otlp;
pub mod prometheus;
pub mod servers;
mod tally;
pub mod testenv;

use std::path::PathBuf;

use mindbus::streams::parse_range;
use mindbus::wire::{EntryId, Fields};
use redis::aio::ConnectionLike;

pub use tally::Tally;

/// A binary of this workspace, built beside the running test (`cargo nextest run
/// --workspace` builds them all).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("a directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("the target directory")
    } else {
        dir
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo nextest run --workspace`",
        path.display()
    );
    path
}

/// The examples in other languages (`examples/`).
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Runs the publishing example `script` (under `examples/`) with `program` against the
/// Redis at `url` and the key prefix `prefix`, and returns the result it prints; fails the
/// test when it fails.
pub fn run_example(program: &str, script: &str, url: &str, prefix: &str) -> serde_json::Value {
    let out = std::process::Command::new(program)
        .arg(examples().join(script))
        .env("REDIS_URL", url)
        .env("MINDBUS_PREFIX", prefix)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the example prints its result as JSON")
}

/// The entries of `stream` pending in `group`: (entry, consumer, deliveries).
pub async fn pending<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> Vec<(EntryId, String, u32)> {
    let reply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query_async(conn)
        .await
        .expect("XPENDING");
    mindbus::streams::parse_pending(reply).expect("pending entries")
}

/// Every entry of `stream`, oldest first, read in pages (deleted ones left out).
pub async fn entries<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
) -> Vec<(EntryId, Fields)> {
    let mut out = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let reply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .expect("XRANGE");
        let page = parse_range(reply).expect("a stream");
        let Some(last) = page.last().map(|e| e.id) else {
            return out;
        };
        out.extend(page.into_iter().filter_map(|e| Some((e.id, e.fields?))));
        from = format!("({last}");
    }
}
