#!/usr/bin/env bash
# The API document first: gateway/openapi.json (which a gateway test keeps equal to what the
# gateway serves) must be valid OpenAPI, by openapi-spec-validator.
# Then Schemathesis against a live gateway's /openapi.json: it generates requests for every
# operation and fails on any 5xx or any response that breaks the document (status, content
# type, headers, body schema). The SSE operations are covered by the gateway's end-to-end
# tests instead (an event stream does not end on its own).
# Arguments go to `schemathesis run` (e.g. --max-examples 100).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_redis
ensure_postgres
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  say "installing schemathesis and openapi-spec-validator"
  python3 -m venv "$venv" 2>/dev/null || { install_with_apt python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q schemathesis openapi-spec-validator
fi
say "openapi-spec-validator gateway/openapi.json"
"$venv/bin/openapi-spec-validator" gateway/openapi.json
cargo build --quiet --bins
bin=target/debug

prefix="st-$$"
key="st-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
db="mindbus_st_$$"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
db_url="${DATABASE_URL%/*}/$db"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
  psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
add_cleanup stop_all

export MINDBUS_PREFIX="$prefix" RUST_LOG=warn
"$bin/mindbus-agent" --role echo & pids+=($!)
DATABASE_URL="$db_url" "$bin/mindbus-orchestrator" --workflows config/workflows & pids+=($!)
MINDBUS_GATEWAY_API_KEY="$key" MINDBUS_GATEWAY__MAX_WAIT_MS=3000 MINDBUS_GATEWAY__METRICS_LISTEN=127.0.0.1:0 "$bin/mindbus-gateway" --listen "127.0.0.1:$port" & pids+=($!)
for _ in $(seq 100); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null && break
  sleep 0.1
done

say "schemathesis against http://127.0.0.1:$port/openapi.json"
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --exclude-path-regex '/events$' \
  --request-timeout 30 \
  --max-examples 30 \
  "$@"
