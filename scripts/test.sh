#!/usr/bin/env bash
# Runs every test: unit, property, schema and end-to-end tests against a real Redis, a real
# Postgres and a real local model (SmolLM2 through llama.cpp's server), the Python and node
# examples, then Schemathesis against a live gateway. Uses REDIS_URL, DATABASE_URL and
# MINDBUS_LOCAL_MODEL_URL when they answer, else private servers it starts and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_redis
ensure_postgres
command -v python3 >/dev/null || install_with_apt python3
# Prometheus and promtool: the metrics test scrapes every process with a real Prometheus,
# and the shipped config and rules are checked with promtool.
command -v prometheus >/dev/null && command -v promtool >/dev/null || install_with_apt prometheus
ensure_local_model
python3 -c 'import redis' 2>/dev/null || { say "installing redis-py"; python3 -m pip install -q -r examples/python/requirements.txt 2>/dev/null || install_with_apt python3-redis; }
command -v npm >/dev/null || install_with_apt npm
[ -d examples/node/node_modules/redis ] || { say "installing node-redis"; npm ci --prefix examples/node --no-audit --no-fund --silent; }

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace "$@"
else
  say "cargo-nextest not found; using cargo test"
  cargo test --workspace "$@"
fi

say "the API document: openapi-spec-validator, then schemathesis against a live gateway"
./scripts/schemathesis.sh
