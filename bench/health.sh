#!/usr/bin/env bash
# Health route throughput and backend RSS, idle and under load.
#   bench/health.sh [seconds]   (default 20)
# Prints requests/s and latency of GET /api/health/connections at 50 connections (wrk, 2
# threads, same machine), RSS idle (after 10 s) and the peak RSS under that load.
source "$(dirname "$0")/common.sh"
secs=${1:-20}
command -v wrk >/dev/null || apt_ensure wrk
start_backend
trap stop_backend EXIT
sleep 10
idle=$(rss_kb "$BACKEND_PID")
say "RSS idle after 10 s: $((idle / 1024)) MB ($idle kB)"
say "wrk -t2 -c50 -d${secs}s --latency $BACKEND_URL/api/health/connections"
wrk -t2 -c50 -d"${secs}s" --latency "$BACKEND_URL/api/health/connections" | tee /tmp/bench-health.txt
load=$(hwm_kb "$BACKEND_PID")
say "peak RSS under load: $((load / 1024)) MB ($load kB); RSS now $(( $(rss_kb "$BACKEND_PID") / 1024 )) MB"
