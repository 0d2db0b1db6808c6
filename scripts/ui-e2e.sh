#!/usr/bin/env bash
# UI end-to-end: the local Supabase stack, the headless backend connected to it and serving
# ui/dist, then the Playwright specs in ui/e2e (playwright-core + Debian's Chromium).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
cargo build -q -p collisionos --bin collisionos -p collisionos-tests --bin supabase-local
work=$(mktemp -d)
cleanup() {
  [ -n "${backend_pid:-}" ] && kill -TERM "$backend_pid" 2>/dev/null && wait "$backend_pid" 2>/dev/null
  [ -n "${stack_pid:-}" ] && kill -INT "$stack_pid" 2>/dev/null && wait "$stack_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
say "starting the local Supabase stack"
(cd "$work" && exec "$ROOT/target/debug/supabase-local" --port 0 --seed >"$work/stack.log" 2>&1) &
stack_pid=$!
for _ in $(seq 1 240); do [ -f "$work/.stack/env" ] && break; sleep 0.5; done
[ -f "$work/.stack/env" ] || { cat "$work/stack.log"; die "the local stack did not start"; }
set -a; source "$work/.stack/env"; set +a
export STACK_URL=$SUPABASE_URL
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
token=e2e-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
say "starting the headless backend on port $port"
PORT=$port COLLISIONOS_API_TOKEN=$token COLLISIONOS_DATA_DIR=$work/data LOG_LEVEL=warn \
  target/debug/collisionos --headless --ui-dir ui/dist >"$work/backend.out" 2>"$work/backend.err" &
backend_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 0.1; done
export COLLISIONOS_URL="http://127.0.0.1:$port/?token=$token" COLLISIONOS_TOKEN=$token
say "running the Playwright specs (ui/e2e)"
if ! (cd ui && npm run --silent test:e2e); then
  warn "backend log:"; tail -30 "$work/backend.err" >&2
  exit 1
fi
