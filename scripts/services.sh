# Sourced by the other scripts: makes sure a Redis is there for them.
#
# ensure_redis: uses REDIS_URL when it is set and answers; otherwise starts a private
# redis-server on a free port (installing it with apt-get when missing and root), exports
# REDIS_URL, and stops that server when the calling script exits.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_with_apt() {
  local package=$1
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing $package: install it (Debian: sudo apt-get install -y $package), or set REDIS_URL"
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
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || install_with_apt redis-server
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
  trap stop_private_redis EXIT
  for _ in $(seq 100); do redis_answers "$REDIS_URL" && break; sleep 0.05; done
  redis_answers "$REDIS_URL" || { say "private redis-server did not start (see $dir/redis.log)"; exit 1; }
  say "started a private redis-server at $REDIS_URL"
}

stop_private_redis() {
  [ -n "${MINDBUS_PRIVATE_REDIS_DIR:-}" ] || return 0
  redis-cli -u "$REDIS_URL" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$MINDBUS_PRIVATE_REDIS_DIR"
}
