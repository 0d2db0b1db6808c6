#!/usr/bin/env bash
# Realtime benchmark: subscription churn, bytes per live subscription, Postgres -> bus
# throughput and end-to-end change latency. Starts its own local stack (PostgreSQL 15 +
# postrust + gateway + Realtime stand-in) inside the test process; needs what the stack
# tests need (postgresql-15, postgresql-15-wal2json, postrust on PATH).
#
#   bench/realtime.sh            # prints BENCH lines: name value
#
# Figures (see tests/tests/subscriptions.rs, `bench_realtime`):
#   bytes_per_live_subscription   heap bytes (counting allocator = jemalloc `allocated`) per
#                                 live subscription, manager + client, 1,000 live, stateless peer
#   heap_after_destroy_all_delta_bytes  heap after destroy_all minus before the 1,000
#   create_destroy_per_s          create+destroy cycles/s against the stand-in over the gateway
#   changes_per_s                 5,000-row INSERT -> 5,000 changes on the event bus
#   latency_ms_p50/p99/max        one-row INSERT (SQL) -> change on the bus, 200 samples
#                                 (includes the stand-in's 100 ms slot poll, as Realtime's)
set -euo pipefail
cd "$(dirname "$0")/.."
export COLLISIONOS_MIGRATIONS_DIR="${COLLISIONOS_MIGRATIONS_DIR:-$PWD/supabase/migrations}"
cargo test --release -p collisionos-tests --test subscriptions -- \
  --ignored --exact bench_realtime --nocapture --test-threads 1 2>&1 | tee /tmp/collisionos-bench-realtime.log |
  grep -E '^BENCH ' | sed 's/^BENCH //'
