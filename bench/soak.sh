#!/usr/bin/env bash
# Leak soak: the release backend against the local stack under steady request load and
# subscription churn for N minutes, then the monitor's own verdict.
#   bench/soak.sh [minutes]   (default 30)
# Load: wrk, 1 thread, 2 connections, alternating GET /api/customers?limit=50 (through the pool)
# and GET /api/health/connections; churn: one subscription created and destroyed every second.
# Prints RSS and jemalloc `allocated` at start, end and 30 s after the load stops, and the
# least-squares RSS / allocated slopes (MB/h) the memory monitor computed over its window.
source "$(dirname "$0")/common.sh"
minutes=${1:-30}
command -v wrk >/dev/null || apt_ensure wrk
cargo build --release -q -p collisionos-tests --bin supabase-local
work=$(mktemp -d)
(cd "$work" && exec "$ROOT/target/release/supabase-local" --port 0 --seed >"$work/stack.log" 2>&1) &
stack_pid=$!
cleanup() { [ -n "${churn_pid:-}" ] && kill "$churn_pid" 2>/dev/null; stop_backend 2>/dev/null; kill -INT $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 240); do [ -f "$work/.stack/env" ] && break; sleep 0.5; done
[ -f "$work/.stack/env" ] || die "stack did not start"
set -a; source "$work/.stack/env"; set +a
LOG_LEVEL=warn start_backend
auth=(-H "Authorization: Bearer $TOKEN")
figure() { curl -fs "$BACKEND_URL/api/health/connections" | python3 -c 'import json,sys; b=json.load(sys.stdin)["memory"]["bytes"]; print("rss=%.1fMB allocated=%.2fMB" % (b["rss"]/1048576, b["allocated"]/1048576))'; }
sleep 10
say "start: $(figure)"
cat >"$work/mix.lua" <<'LUA'
local paths = {"/api/customers?limit=50", "/api/health/connections"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % 2) + 1])
end
LUA
( i=0; while true; do
    i=$((i+1))
    curl -fs -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' \
      -d "{\"id\":\"soak-$i\",\"table\":\"jobs\",\"event\":\"UPDATE\",\"filter\":\"status=eq.paint\"}" "$BACKEND_URL/api/subscriptions" || true
    sleep 0.5
    curl -fs -o /dev/null -X DELETE "${auth[@]}" "$BACKEND_URL/api/subscriptions/soak-$i" || true
    sleep 0.5
  done ) &
churn_pid=$!
say "load for $minutes min: wrk -t1 -c2 -d${minutes}m -s mix.lua $BACKEND_URL"
wrk -t1 -c2 -d"${minutes}m" -s "$work/mix.lua" -H "Authorization: Bearer $TOKEN" "$BACKEND_URL" | tee "$work/wrk.txt"
kill "$churn_pid"; churn_pid=
say "end of load: $(figure)"
curl -fs "$BACKEND_URL/api/health/memory" | python3 -c 'import json,sys; m=json.load(sys.stdin); print("monitor: slope_mb_per_h=%s slope_allocated_mb_per_h=%s verdict=%s samples=%s" % (m["slope_mb_per_h"], m["slope_allocated_mb_per_h"], m["verdict"], m["samples"]))'
sleep 30
say "30 s after the load: $(figure)"
say "subscriptions left: $(curl -fs "${auth[@]}" "$BACKEND_URL/api/subscriptions" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["subscriptions"]))') (1 = the persistent jobs_subscription)"
