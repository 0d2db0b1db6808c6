#!/usr/bin/env bash
# Pooled read route vs the same query sent straight to the upstream, in one run.
#   bench/pooled.sh [seconds] [connections]   (defaults 15, 50)
# Starts the local stack (release build), loads 1,000 customers, then runs wrk against
#   direct: GET {gateway}/rest/v1/customers?select=*&order=...&limit=50   (Prefer: count=exact)
#   pooled: GET {backend}/api/customers?limit=50   (same query, through the lease pool)
# and prints both and the ratio pooled/direct.
source "$(dirname "$0")/common.sh"
secs=${1:-15}; conns=${2:-50}
command -v wrk >/dev/null || apt_ensure wrk
cargo build --release -q -p collisionos-tests --bin supabase-local
work=$(mktemp -d)
gw_port=$(free_port)
(cd "$work" && exec "$ROOT/target/release/supabase-local" --port "$gw_port" >"$work/stack.log" 2>&1) &
stack_pid=$!
cleanup() { stop_backend 2>/dev/null; kill -INT $stack_pid 2>/dev/null; wait $stack_pid 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 240); do [ -f "$work/.stack/env" ] && break; sleep 0.5; done
[ -f "$work/.stack/env" ] || { cat "$work/stack.log"; die "stack did not start"; }
set -a; source "$work/.stack/env"; set +a
key=$SUPABASE_SERVICE_ROLE_KEY
say "loading 1,000 customers"
python3 - "$SUPABASE_URL" "$key" <<'PY'
import json, sys, urllib.request, uuid
url, key = sys.argv[1], sys.argv[2]
rows = [{"id": str(uuid.uuid4()), "first_name": f"First{i}", "last_name": f"Last{i:04d}", "email": f"c{i}@example.com"} for i in range(1000)]
req = urllib.request.Request(f"{url}/rest/v1/customers", data=json.dumps(rows).encode(), method="POST",
    headers={"apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Prefer": "return=minimal"})
urllib.request.urlopen(req).read()
PY
start_backend
query="select=*&order=last_name.asc,first_name.asc,id.asc&limit=50&offset=0"
curl -fs -o /dev/null -H "apikey: $key" -H "Authorization: Bearer $key" "$SUPABASE_URL/rest/v1/customers?$query" || die "direct query failed"
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "$BACKEND_URL/api/customers?limit=50" || die "pooled query failed"
say "direct: wrk -t2 -c$conns -d${secs}s --latency $SUPABASE_URL/rest/v1/customers?$query"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "apikey: $key" -H "Authorization: Bearer $key" -H "Prefer: count=exact" \
  -H "Accept-Profile: public" "$SUPABASE_URL/rest/v1/customers?$query" | tee "$work/direct.txt"
say "pooled: wrk -t2 -c$conns -d${secs}s --latency $BACKEND_URL/api/customers?limit=50"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $TOKEN" "$BACKEND_URL/api/customers?limit=50" | tee "$work/pooled.txt"
d=$(awk '/Requests\/sec/{print $2}' "$work/direct.txt"); p=$(awk '/Requests\/sec/{print $2}' "$work/pooled.txt")
say "direct $d req/s, pooled $p req/s, ratio $(python3 -c "print(round($p/$d, 3))")"
say "backend peak RSS: $(( $(hwm_kb "$BACKEND_PID") / 1024 )) MB"
