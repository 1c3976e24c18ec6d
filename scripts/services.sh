# Sourced by the other scripts: makes sure Redis (and Postgres) are there for them.
#
# ensure_redis: uses REDIS_URL when it is set and answers; otherwise starts a private
# redis-server on a free port (installing it with apt-get when missing and root), exports
# REDIS_URL, and stops that server when the calling script exits.
# ensure_postgres: the same for DATABASE_URL and a private PostgreSQL cluster.
# add_cleanup FN: runs FN when the script exits (last added, first run).
# ensure_local_model, start_session: see below.

say() { if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi; }

CLEANUPS=()
run_cleanups() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do "${CLEANUPS[$i]}" || true; done
}
add_cleanup() { CLEANUPS+=("$1"); }
trap run_cleanups EXIT

install_with_apt() {
  local package=$1
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing $package: install it (Debian: sudo apt-get install -y $package)${2:+, or $2}"
    exit 1
  fi
  say "installing $package with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}

redis_answers() {
  [ -n "${1:-}" ] && redis-cli -u "$1" ping 2>/dev/null | grep -q PONG
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || install_with_apt redis-server "set REDIS_URL"
  if redis_answers "${REDIS_URL:-}"; then
    say "using Redis at REDIS_URL"
    return
  fi
  [ -n "${REDIS_URL:-}" ] && say "REDIS_URL does not answer; starting a private redis-server instead"
  local port dir
  port=$(free_port)
  dir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  MINDBUS_PRIVATE_REDIS_DIR=$dir
  export REDIS_URL="redis://127.0.0.1:$port"
  add_cleanup stop_private_redis
  for _ in $(seq 100); do redis_answers "$REDIS_URL" && break; sleep 0.05; done
  redis_answers "$REDIS_URL" || { say "private redis-server did not start (see $dir/redis.log)"; exit 1; }
  say "started a private redis-server at $REDIS_URL"
}

stop_private_redis() {
  [ -n "${MINDBUS_PRIVATE_REDIS_DIR:-}" ] || return 0
  redis-cli -u "$REDIS_URL" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$MINDBUS_PRIVATE_REDIS_DIR"
}

postgres_answers() {
  [ -n "${1:-}" ] && psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

ensure_postgres() {
  command -v psql >/dev/null || install_with_apt postgresql "set DATABASE_URL"
  if postgres_answers "${DATABASE_URL:-}"; then
    say "using Postgres at DATABASE_URL"
    return
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ ! -x "$bin/initdb" ]; then
    install_with_apt postgresql "set DATABASE_URL"
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  local port dir run=()
  port=$(free_port)
  dir=$(mktemp -d)
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  MINDBUS_PRIVATE_POSTGRES=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
  MINDBUS_PRIVATE_POSTGRES_DIR=$dir
  add_cleanup stop_private_postgres
  psql "postgres://postgres@127.0.0.1:$port/postgres" -qc 'CREATE DATABASE mindbus' >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/mindbus"
  say "started a private PostgreSQL at $DATABASE_URL"
}

stop_private_postgres() {
  [ -n "${MINDBUS_PRIVATE_POSTGRES_DIR:-}" ] || return 0
  "${MINDBUS_PRIVATE_POSTGRES[@]}" >/dev/null 2>&1 || true
  rm -rf "$MINDBUS_PRIVATE_POSTGRES_DIR"
}

# ensure_local_model: an OpenAI-compatible server for SmolLM2-135M-Instruct. Uses
# MINDBUS_LOCAL_MODEL_URL when it answers, else one already on MINDBUS_LOCAL_MODEL_PORT
# (8089), else starts scripts/local-model.sh (the first start builds llama.cpp, about 5
# minutes) and stops it when the calling script exits. Exports MINDBUS_LOCAL_MODEL_URL and
# points the LLM roles' `local` provider at it.
ensure_local_model() {
  command -v curl >/dev/null || install_with_apt curl
  local port=${MINDBUS_LOCAL_MODEL_PORT:-8089}
  if [ -z "${MINDBUS_LOCAL_MODEL_URL:-}" ] || ! curl -sf "${MINDBUS_LOCAL_MODEL_URL%/}/models" >/dev/null; then
    if curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1; then
      MINDBUS_LOCAL_MODEL_URL="http://127.0.0.1:$port/v1/"
    else
      say "starting the local model (the first start builds llama.cpp: about 5 minutes)"
      add_cleanup stop_local_model
      MINDBUS_LOCAL_MODEL_URL="$(scripts/local-model.sh start "$port")/"
    fi
  fi
  export MINDBUS_LOCAL_MODEL_URL
  export MINDBUS_LLM__PROVIDERS__LOCAL__BASE_URL="$MINDBUS_LOCAL_MODEL_URL"
}

stop_local_model() { scripts/local-model.sh stop; }

# start_session NAME: builds the release binaries (into $bin) and exports a key prefix of
# its own (NAME-<pid>). Processes started with `... & PIDS+=($!)` get SIGTERM on exit and
# are waited for; then the prefix's keys are deleted.
PIDS=()
start_session() {
  say "building"
  cargo build --release --quiet --bins
  bin=target/release
  export MINDBUS_PREFIX="$1-$$"
  add_cleanup stop_session
}

stop_session() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  redis-cli -u "$REDIS_URL" --scan --pattern "$MINDBUS_PREFIX:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
}
