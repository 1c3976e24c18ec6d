#!/usr/bin/env bash
# The orchestration benchmark: workflow runs of a chain of echo steps through a real
# orchestrator, beside the same chains sent as plain commands, in one run.
# Arguments go to mindbus-run-bench (e.g. --runs 500 --steps 5 --samples 100).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_redis
ensure_postgres
cargo build --release --quiet --bins
./target/release/mindbus-run-bench "$@"
