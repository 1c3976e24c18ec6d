#!/usr/bin/env bash
# The main job: brings up two echo agents, the monitor, the orchestrator and the HTTP
# gateway, sends a batch of commands through them, runs the sample workflow (a DAG with a
# fan-out, a condition and a loop) end to end from the CLI and over HTTP, shows the events
# and results as they happen and the recorded timelines from Postgres, then shuts
# everything down and leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_redis
ensure_postgres
command -v python3 >/dev/null || install_with_apt python3
start_session demo

say "starting two echo agents (prefix $MINDBUS_PREFIX)"
for _ in 1 2; do
  RUST_LOG=warn "$bin/mindbus-agent" --role echo --maxattempts 3 & PIDS+=($!)
done
RUST_LOG=warn "$bin/mindbus-monitor" & PIDS+=($!)
RUST_LOG=warn "$bin/mindbus-orchestrator" --workflows config/workflows & PIDS+=($!)
gateway_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
gateway="http://127.0.0.1:$gateway_port"
api_key="demo-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
MINDBUS_GATEWAY_API_KEY="$api_key" RUST_LOG=warn "$bin/mindbus-gateway" --listen "127.0.0.1:$gateway_port" & PIDS+=($!)
"$bin/mindbus" tail --for-ms 600000 & PIDS+=($!)
sleep 0.5

say "sending commands (watch the events above)"
"$bin/mindbus" send echo echo.say '{"text":"hello, agents"}' --wait
flaky=$("$bin/mindbus" send echo echo.say '{"text":"flaky once","fail_attempts":1}' --wait)
echo "$flaky"
flaky_id=$(echo "$flaky" | grep -o '"correlationid": "[^"]*"' | cut -d'"' -f4)
"$bin/mindbus" send echo echo.say '{"text":"packed","n":[1,2,3]}' --msgpack --wait
"$bin/mindbus" send echo echo.say '{"text":"too slow","sleep_ms":5000}' --deadline-ms 300 --wait || true
"$bin/mindbus" send echo echo.say '{"text":"poison","panic":true}' --wait 2>/dev/null || true
redis-cli -u "$REDIS_URL" XADD "$MINDBUS_PREFIX:cmd:{echo}" '*' type echo.say data '{"text":' >/dev/null
for i in $(seq 1 20); do "$bin/mindbus" send echo echo.say "{\"i\":$i,\"sleep_ms\":50}" >/dev/null; done
sleep 1.5

say "running the sample workflow: mindbus run sample (step changes below, output last)"
"$bin/mindbus" run sample --input '{"topic":"redis streams"}'
run_id=$("$bin/mindbus" runs list --limit 1 | grep -o '"run_id": "[^"]*"' | cut -d'"' -f4)
sleep 1

say "the gateway is at $gateway (key in \$api_key); a command and a run over HTTP"
http() { python3 scripts/http_call.py "$api_key" "$@"; }
http POST "$gateway/v1/roles/echo/commands?wait_ms=5000" '{"type":"echo.say","data":{"text":"hello over http"}}'
run_json=$(http POST "$gateway/v1/runs" '{"workflow":"sample","input":{"topic":"http"}}')
echo "$run_json"
http_run=$(echo "$run_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
sleep 1
http GET "$gateway/v1/runs/$http_run"
http GET "$gateway/v1/roles"

say "status"
"$bin/mindbus" status
say "dead letters"
"$bin/mindbus" dlq list
say "the flaky command's timeline, as the monitor recorded it (mindbus trace $flaky_id)"
"$bin/mindbus" trace "$flaky_id"
say "the run's timeline (mindbus trace $run_id)"
"$bin/mindbus" trace "$run_id" | tail -n 15
say "shutting down"
