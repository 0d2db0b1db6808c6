# Helpers for the benchmark scripts: start the release backend on a free port, read its RSS.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }

# start_backend: builds and starts target/release/collisionos; sets BACKEND_PID, BACKEND_URL, TOKEN.
start_backend() {
  cargo build --release -q -p collisionos --bin collisionos
  local port; port=$(free_port)
  BENCH_DATA=$(mktemp -d)
  PORT=$port LOG_LEVEL=${LOG_LEVEL:-info} COLLISIONOS_DATA_DIR=$BENCH_DATA COLLISIONOS_API_TOKEN=benchtokenbenchtoken1234 \
    target/release/collisionos --headless >"$BENCH_DATA/stdout" 2>"$BENCH_DATA/stderr" &
  BACKEND_PID=$!
  BACKEND_URL="http://127.0.0.1:$port"
  TOKEN=benchtokenbenchtoken1234
  for _ in $(seq 1 100); do curl -fs "$BACKEND_URL/api/health" >/dev/null && return 0; sleep 0.1; done
  cat "$BENCH_DATA/stderr" >&2; die "backend did not start"
}
stop_backend() { kill -TERM "$BACKEND_PID" 2>/dev/null; wait "$BACKEND_PID" 2>/dev/null || true; rm -rf "$BENCH_DATA"; }
