#!/usr/bin/env bash
# The monitor's ingest benchmark: entries/s from streams into Postgres beside a plain
# batched insert of the same rows, and the lag under a steady load.
# Arguments go to mindbus-ingest-bench (e.g. --entries 100000 --rate 2000 --seconds 10).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_redis
ensure_postgres
cargo build --release --quiet --bins
./target/release/mindbus-ingest-bench "$@"
