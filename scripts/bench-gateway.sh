#!/usr/bin/env bash
# The gateway benchmark: HTTP request to echo result through mindbus-gateway, beside the
# same commands sent straight over the bus, in one run.
# Arguments go to mindbus-gateway-bench (e.g. --commands 10000 --concurrency 64 --samples 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_redis
cargo build --release --quiet --bins
./target/release/mindbus-gateway-bench "$@"
