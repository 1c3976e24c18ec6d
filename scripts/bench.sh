#!/usr/bin/env bash
# The round-trip benchmark: MindBus echo agents beside a raw-Redis baseline, in one run.
# Arguments go to mindbus-bench (e.g. --commands 50000 --agents 2 --samples 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_redis
cargo build --release --quiet --bins
./target/release/mindbus-bench "$@"
