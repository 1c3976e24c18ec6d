#!/usr/bin/env bash
# The main job: the AI team writes an article.
#
#   ./scripts/article.sh "why bees matter"
#
# Brings up the whole mesh (Redis, Postgres, the monitor, the orchestrator, and the writer,
# critic and editor agents) and runs the `article` workflow on the topic: the writer drafts,
# the critic reviews, the editor revises until the critic approves or two rounds have passed.
# The text streams in as it is generated; at the end it prints the final text, the rounds,
# the tokens and the cost, and how to see the whole run. Then it stops everything it started.
#
# With OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY set, the roles use those providers
# (config/agents.yaml); with none, they use the local model, which this script starts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

topic=${1:-why bees matter}
ensure_redis
ensure_postgres
command -v python3 >/dev/null || install_with_apt python3
if [ -z "${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${GEMINI_API_KEY:-}" ]; then
  ensure_local_model
fi
start_session article

say "starting the monitor, the orchestrator, and the writer, critic and editor (prefix $MINDBUS_PREFIX)"
RUST_LOG=warn "$bin/mindbus-monitor" & PIDS+=($!)
RUST_LOG=warn "$bin/mindbus-orchestrator" --workflows config/workflows & PIDS+=($!)
for role in writer critic editor; do
  RUST_LOG=warn,genai=error "$bin/mindbus-agent" --role "$role" --llm-config config/agents.yaml & PIDS+=($!)
done
sleep 1

say "mindbus run article --input '{\"topic\": \"$topic\"}'"
input=$(python3 -c 'import json, sys; print(json.dumps({"topic": sys.argv[1]}))' "$topic")
"$bin/mindbus" run article --input "$input" --wait-ms 1800000 || status=$?
run_id=$("$bin/mindbus" runs list --limit 1 | grep -o '"run_id": "[^"]*"' | head -n 1 | cut -d'"' -f4 || true)
if [ -n "$run_id" ]; then
  sleep 1
  say "the whole run, as the monitor recorded it: mindbus trace $run_id"
  "$bin/mindbus" trace "$run_id" | tail -n 20 || true
  say "its usage in Postgres (view mindbus_llm_run_usage)"
  psql -q "$DATABASE_URL" -c "SELECT calls, cache_hits, tokens_in, tokens_out, cost_usd FROM mindbus_llm_run_usage WHERE run_id = '$run_id'" || true
fi
exit "${status:-0}"
