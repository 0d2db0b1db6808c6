#!/usr/bin/env bash
# Desktop memory benchmark: PSS, USS and RSS (from /proc/<pid>/smaps_rollup) of CollisionOS Monitor's
# main process and its WebKit web and network processes, right after start and again after N
# minutes of live charts (the health view streams a sample a second), printed as a table.
# One line per process per minute also goes to a CSV, for slopes. PSS splits shared pages among
# every process mapping them, so it drops when any other process on the machine maps the same
# libraries (another WebKit app, a second instance); USS (private pages) and RSS do not move
# with other processes, so compare those across a run.
#
#   bench/desktop-memory.sh [--minutes N] [--app PATH] [--csv FILE]
#
# N defaults to 30 (the figure DESIGN.md asks for); --minutes 1 is a quick look. Without a
# DISPLAY it starts its own Xvfb; it always uses a private session bus, data dir and a free port.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
minutes=${MINUTES:-30}
app=$root/target/desktop/release/collisionos-desktop
csv=$root/target/desktop-memory.csv
settle=${SETTLE_SECONDS:-15}
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --app) app=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--app PATH] [--csv FILE]" >&2; exit 2 ;;
  esac
done
[ -x "$app" ] || { echo "no app at $app: build it first (scripts/desktop-build.sh)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/collisionos-desktop-bench.XXXXXX)
pids=()
cleanup() {
  local code=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # GTK may have started xdg-document-portal, whose FUSE mount in the runtime dir goes away
  # with the bus just killed; give it a moment rather than fail the run on it.
  fusermount -u "$tmp/runtime/doc" 2>/dev/null || true
  rm -rf "$tmp" 2>/dev/null || { sleep 1; rm -rf "$tmp" 2>/dev/null || true; }
  exit "$code"
}
trap cleanup EXIT

export XDG_RUNTIME_DIR=$tmp/runtime HOME=$tmp/home COLLISIONOS_DATA_DIR=$tmp/data PORT=0
mkdir -p -m 0700 "$XDG_RUNTIME_DIR" "$HOME"
dbus_out=$(dbus-daemon --session --fork --print-address=1 --print-pid=1 --nosyslog)
export DBUS_SESSION_BUS_ADDRESS=$(sed -n 1p <<<"$dbus_out")
pids+=("$(sed -n 2p <<<"$dbus_out")")
if [ -z "${DISPLAY:-}" ]; then
  display_no=$((90 + RANDOM % 100))
  Xvfb ":$display_no" -screen 0 1440x900x24 -nolisten tcp >/dev/null 2>&1 &
  pids+=($!)
  export DISPLAY=:$display_no
  for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$display_no" ] && break; sleep 0.1; done
fi

"$app" 2>"$tmp/app.log" &
main=$!
pids+=("$main")

# kB of one smaps_rollup field ("Pss", "Rss", or "Uss" = Private_Clean + Private_Dirty) of a
# pid; empty when the process is gone.
field() {
  awk -v f="$2" '
    f == "Uss" && ($1 == "Private_Clean:" || $1 == "Private_Dirty:") { uss += $2 }
    $1 == f ":" { print $2 }
    END { if (f == "Uss") print uss }' "/proc/$1/smaps_rollup" 2>/dev/null
}
# The first descendant of the main process whose name starts with $1 (WebKitWebProcess,
# WebKitNetworkProcess); descendants, not children, since WebKit may sandbox them under bwrap.
child() {
  ps -e -o pid=,ppid=,comm= | awk -v root="$main" -v want="$1" '
    { pid[NR] = $1; ppid[NR] = $2; comm[NR] = $3 }
    END {
      inside[root] = 1
      for (changed = 1; changed;) {
        changed = 0
        for (i = 1; i <= NR; i++) if (inside[ppid[i]] && !inside[pid[i]]) { inside[pid[i]] = 1; changed = 1 }
      }
      for (i = 1; i <= NR; i++) if (inside[pid[i]] && index(comm[i], substr(want, 1, 15)) == 1) { print pid[i]; exit }
    }'
}

# Wait until the window's web process exists and the page has been up for a while.
for _ in $(seq 300); do [ -n "$(child WebKitWebProcess)" ] && break; sleep 0.1; done
[ -n "$(child WebKitWebProcess)" ] || { echo "the app started no web process; log:" >&2; cat "$tmp/app.log" >&2; exit 1; }
sleep "$settle"

declare -A pss0 uss0 rss0
names=(main web network)
pid_of() {
  case $1 in
    main) echo "$main" ;;
    web) child WebKitWebProcess ;;
    network) child WebKitNetworkProcess ;;
  esac
}
sample() { # $1 = label for the CSV; fills pss_now/rss_now
  local t; t=$(date +%s)
  for n in "${names[@]}"; do
    local p; p=$(pid_of "$n")
    pss_now[$n]=$( [ -n "$p" ] && field "$p" Pss || echo 0)
    uss_now[$n]=$( [ -n "$p" ] && field "$p" Uss || echo 0)
    rss_now[$n]=$( [ -n "$p" ] && field "$p" Rss || echo 0)
    echo "$t,$1,$n,${p:-},${pss_now[$n]:-0},${uss_now[$n]:-0},${rss_now[$n]:-0}" >>"$csv"
  done
}
declare -A pss_now uss_now rss_now
mkdir -p "$(dirname "$csv")"
echo "epoch_s,minute,process,pid,pss_kb,uss_kb,rss_kb" >"$csv"
sample 0
for n in "${names[@]}"; do
  pss0[$n]=${pss_now[$n]:-0} uss0[$n]=${uss_now[$n]:-0} rss0[$n]=${rss_now[$n]:-0}
done

for ((m = 1; m <= minutes; m++)); do
  sleep 60
  kill -0 "$main" 2>/dev/null || { echo "the app died at minute $m; log:" >&2; tail -n 20 "$tmp/app.log" >&2; exit 1; }
  sample "$m"
done

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
printf '\nCollisionOS Monitor memory, after start (+%ss) and after %s min of live charts (MB)\n' "$settle" "$minutes"
row() { printf '%-8s %9s %9s %9s %9s %9s %9s %9s %9s\n' "$@"; }
row process "PSS start" "PSS end" "USS start" "USS end" "USS diff" "RSS start" "RSS end" "RSS diff"
tp0=0 tp1=0 tu0=0 tu1=0 tr0=0 tr1=0
for n in "${names[@]}"; do
  a=${pss0[$n]:-0} b=${pss_now[$n]:-0} u=${uss0[$n]:-0} v=${uss_now[$n]:-0} c=${rss0[$n]:-0} d=${rss_now[$n]:-0}
  row "$n" "$(mb "$a")" "$(mb "$b")" "$(mb "$u")" "$(mb "$v")" "$(mb $((v - u)))" \
    "$(mb "$c")" "$(mb "$d")" "$(mb $((d - c)))"
  tp0=$((tp0 + a)) tp1=$((tp1 + b)) tu0=$((tu0 + u)) tu1=$((tu1 + v)) tr0=$((tr0 + c)) tr1=$((tr1 + d))
done
row total "$(mb $tp0)" "$(mb $tp1)" "$(mb $tu0)" "$(mb $tu1)" "$(mb $((tu1 - tu0)))" \
  "$(mb $tr0)" "$(mb $tr1)" "$(mb $((tr1 - tr0)))"
echo "(RSS totals double-count shared pages; PSS and USS totals do not. Per-minute samples: $csv)"

kill -TERM "$main"
wait "$main" && code=0 || code=$?
echo "app exit code after SIGTERM: $code"
