#!/usr/bin/env bash
# UI end-to-end: the local Supabase stack, then the Playwright specs, each starting the headless
# backend connected to the stack and serving ui/dist in ui/e2e (playwright-core + Debian's Chromium).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
cargo build -q -p collisionos --bin collisionos -p collisionos-tests --bin supabase-local
work=$(mktemp -d)
cleanup() {
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
# Each spec file starts the real backend itself (target/debug/collisionos, free port, temporary
# data dir) with the stack's SUPABASE_* variables, so it can also stop and restart it.
export COLLISIONOS_BIN=$ROOT/target/debug/collisionos COLLISIONOS_UI_DIR=$ROOT/ui/dist
[ -f ui/dist/index.html ] || build_ui
say "running the Playwright specs (ui/e2e)"
if ! (cd ui && npm run --silent test:e2e); then
  warn "stack log:"; tail -30 "$work/stack.log" >&2
  exit 1
fi
