#!/usr/bin/env bash
# Runs CollisionOS Monitor: the desktop window where a display exists, else the headless
# backend with the UI served to a browser. Installs what is missing first.
#   scripts/run.sh                 # desktop if $DISPLAY, else headless
#   scripts/run.sh --headless      # force headless
#   scripts/run.sh --local-supabase  # also start the local Supabase stack and connect to it
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

headless=0; local_sb=0
for a in "$@"; do
  case $a in
    --headless) headless=1 ;;
    --local-supabase) local_sb=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown option $a" ;;
  esac
done
has_display || headless=1

apt_ensure "${BUILD_PKGS[@]}"
build_ui

if [ $local_sb = 1 ]; then
  apt_ensure postgresql-15 postgresql-15-wal2json
  cargo_tool postrust postrust-server $POSTRUST_VERSION
  say "starting the local Supabase stack (tests/ supabase-local)"
  cargo build -q -p collisionos-tests --bin supabase-local
  rm -f .stack/env
  target/debug/supabase-local --seed &
  stack_pid=$!
  trap 'kill $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null' EXIT
  for _ in $(seq 1 120); do [ -f .stack/env ] && break; sleep 0.5; done
  [ -f .stack/env ] || die "the local stack did not start"
  set -a; source .stack/env; set +a
  say "connected to the local stack at $SUPABASE_URL"
fi

if [ $headless = 1 ]; then
  say "building the headless backend (collisionos)"
  cargo build --release -q -p collisionos --bin collisionos
  say "starting the headless backend; open the URL it prints in a browser (Ctrl-C stops it)"
  target/release/collisionos --headless --ui-dir ui/dist
else
  apt_ensure "${DESKTOP_PKGS[@]}"
  say "building the desktop app (first build takes several minutes)"
  cargo build --release -q -p collisionos-desktop
  say "starting CollisionOS Monitor"
  target/release/collisionos-desktop
fi
