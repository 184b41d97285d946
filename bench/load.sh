#!/usr/bin/env bash
# Load benchmark: N monitors every 10 s against a loopback HTTP target, one agent, a fixed
# measurement window; prints one Markdown table row (and the raw figures above it).
#
#   bench/load.sh [MONITORS=1000] [SECONDS=60]
#
#   BENCH_ADMIN_URL  server to create the database `uptimeo_bench` on
#                    (default postgres://postgres@127.0.0.1:5432/postgres); it is dropped first
#   BENCH_WARMUP     seconds between the agent's start and the window (default 25)
#   BENCH_LOG_LEVEL  the agent's LOG_LEVEL (default info, as deployed; its log goes to a file)
#   BENCH_KEEP=1     keep the work directory (logs, metrics) and print where it is
#   BENCH_RESULT_FILE  also write the figures there as one key=value line (bench/compare.sh)
#   BENCH_WRAPPER    a command the agent runs under, e.g. for a profile (bench/PROFILE.md):
#                    "valgrind --tool=callgrind --callgrind-out-file=/tmp/callgrind.agent"
#
# What is measured, all over the slots scheduled inside the window [t0, t1):
#   slots run     distinct (monitor, scheduled_at) rows / (monitors * window / interval), the
#                 window being exactly [t0, t0 + SECONDS) so that each monitor has SECONDS/10 slots
#   lateness      executed_at - scheduled_at (the check's start against its slot)
#   write delay   when the row reached PostgreSQL (a bench-only column defaulting to
#                 clock_timestamp(), added to this database only) - (executed_at + response_time)
#   CPU           utime + stime of the agent process during the window (/proc/PID/stat)
#   peak RSS      VmHWM of the agent process at the end of the window
set -euo pipefail
cd "$(dirname "$0")/.."

MONITORS=${1:-1000}
INTERVAL=10
WINDOW=$(( ( ${2:-60} + INTERVAL - 1 ) / INTERVAL * INTERVAL ))
WARMUP=${BENCH_WARMUP:-25}
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL="${ADMIN_URL%/*}/uptimeo_bench"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/uptimeo-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

cargo build --release --quiet --bin uptimeo-agent --example bench_target
# Copies, so that another build in a shared target directory cannot swap them mid-run.
cp "$TARGET_DIR/release/uptimeo-agent" "$TARGET_DIR/release/examples/bench_target" "$WORK/"
AGENT_BIN="$WORK/uptimeo-agent"
TARGET_BIN="$WORK/bench_target"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }

# A fresh database with the schema, one datacenter, one agent, one 10 s schedule.
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS uptimeo_bench WITH (FORCE)" \
  -c "CREATE DATABASE uptimeo_bench"
DB_CONN_STRING="$DB_URL" "$AGENT_BIN" migrate > "$WORK/migrate.log"

# The target: one thread on loopback, unless BENCH_TARGET_ADDR names a running one (its pid in
# BENCH_TARGET_PID), as bench/compare.sh does to run both tools against the same target.
if [ -n "${BENCH_TARGET_ADDR:-}" ]; then
  TARGET_ADDR=$BENCH_TARGET_ADDR
  TARGET_PID=$BENCH_TARGET_PID
else
  "$TARGET_BIN" 0 > "$WORK/target.out" &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  for _ in $(seq 50); do grep -q listening "$WORK/target.out" && break; sleep 0.1; done
  TARGET_ADDR=$(awk '/listening/ {print $2}' "$WORK/target.out")
fi
case "$TARGET_ADDR" in 127.0.0.1:*) ;; *) echo "target did not start" >&2; exit 1 ;; esac

psql -q -v ON_ERROR_STOP=1 "$DB_URL" <<SQL
ALTER TABLE api_heartbeats ADD COLUMN bench_stored_at timestamp
    DEFAULT (clock_timestamp() AT TIME ZONE 'utc');
INSERT INTO regions (id, name, region_code, group_name) VALUES (1, 'bench', 'b', 'b');
INSERT INTO datacenters (id, code, name, region_id) VALUES (1, 'va', 'Virginia', 1);
INSERT INTO agents (id, name, datacenter_id) VALUES (1, 'bench-1', 1);
INSERT INTO schedules (id, name, interval, include_response_body, thresholds_warning,
    thresholds_critical) VALUES (1, 'every 10 s', $INTERVAL, false, 500, 2000);
INSERT INTO api_monitors (id, name, method, type, url, schedule_id, headers)
    SELECT g, 'bench ' || g, 'GET', 'HTTP', 'http://$TARGET_ADDR/m/' || g, 1,
           '{"Accept": "application/json", "User-Agent": "uptimeo-bench"}'
    FROM generate_series(1, $MONITORS) g;
INSERT INTO datacenter_monitors (datacenter_id, monitor_id)
    SELECT 1, g FROM generate_series(1, $MONITORS) g;
SQL

HEALTH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB_CONN_STRING="$DB_URL" DATACENTER_ID=1 AGENT_ID=1 HEALTH_PORT="$HEALTH_PORT" \
  LOG_LEVEL="${BENCH_LOG_LEVEL:-info}" ${BENCH_WRAPPER:-} "$AGENT_BIN" run > "$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")

echo "monitors=$MONITORS interval=${INTERVAL}s warmup=${WARMUP}s window=${WINDOW}s target=$TARGET_ADDR"
sleep "$WARMUP"
T0=$(now); CPU0=$(ticks "$AGENT_PID"); TCPU0=$(ticks "$TARGET_PID")
sleep "$WINDOW"
T1=$(now); CPU1=$(ticks "$AGENT_PID"); TCPU1=$(ticks "$TARGET_PID")
HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
curl -fsS "http://127.0.0.1:$HEALTH_PORT/metrics" > "$WORK/metrics.txt" || true

# Let the checks of the window's last slots finish and be written, then stop (SIGTERM flushes).
sleep 3
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || true

HZ=$(getconf CLK_TCK)
psql -q -A -t -F ' ' "$DB_URL" > "$WORK/figures" <<SQL
WITH w AS (SELECT to_timestamp($T0) AT TIME ZONE 'utc' AS t0,
                  to_timestamp($T0 + $WINDOW) AT TIME ZONE 'utc' AS t1),
r AS (SELECT h.*, extract(epoch FROM h.executed_at - h.scheduled_at) * 1000 AS late_ms,
             extract(epoch FROM h.bench_stored_at - h.executed_at) * 1000
               - coalesce(h.response_time_ms, 0) AS delay_ms
      FROM api_heartbeats h, w WHERE h.scheduled_at >= w.t0 AND h.scheduled_at < w.t1)
SELECT count(*), count(DISTINCT (monitor_id, scheduled_at)),
       count(*) FILTER (WHERE success),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY late_ms)::numeric, 1),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY late_ms)::numeric, 1),
       round(max(late_ms)::numeric, 1),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY delay_ms)::numeric, 1),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY delay_ms)::numeric, 1),
       round(max(delay_ms)::numeric, 1)
FROM r;
SQL
read -r ROWS SLOTS OK LATE50 LATE99 LATEMAX DELAY50 DELAY99 DELAYMAX < "$WORK/figures"

EXPECTED=$(( MONITORS * WINDOW / INTERVAL ))
awk -v rows="$ROWS" -v slots="$SLOTS" -v ok="$OK" -v expected="$EXPECTED" \
    -v cpu=$(( CPU1 - CPU0 )) -v tcpu=$(( TCPU1 - TCPU0 )) -v hz="$HZ" \
    -v t0="$T0" -v t1="$T1" -v hwm="$HWM_KB" -v n="$MONITORS" -v window="$WINDOW" \
    -v l50="$LATE50" -v l99="$LATE99" -v lmax="$LATEMAX" \
    -v d50="$DELAY50" -v d99="$DELAY99" -v dmax="$DELAYMAX" \
    -v result="${BENCH_RESULT_FILE:-}" 'BEGIN {
  secs = t1 - t0
  share = expected ? 100 * slots / expected : 0
  per1000 = rows ? (cpu / hz) / rows * 1000 : 0
  printf "rows=%d slots_run=%d expected=%d successful=%d agent_cpu_s=%.2f target_cpu_s=%.2f wall_s=%.1f\n",
    rows, slots, expected, ok, cpu / hz, tcpu / hz, secs
  print "| monitors | window | slots run | lateness p50 / p99 / max (ms) | write delay p50 / p99 / max (ms) | agent CPU s per 1000 checks | agent CPU (cores) | peak RSS (MiB) | rows/s |"
  print "|---|---|---|---|---|---|---|---|---|"
  printf "| %d | %d s | %.2f%% (%d/%d) | %s / %s / %s | %s / %s / %s | %.3f | %.2f | %.1f | %.0f |\n",
    n, window, share, slots, expected, l50, l99, lmax, d50, d99, dmax,
    per1000, (cpu / hz) / secs, hwm / 1024, rows / window
  if (result != "")
    printf "monitors=%d share=%.2f late50=%s late99=%s latemax=%s delay50=%s delay99=%s cpu_per_1000=%.3f rss_mib=%.1f rows_per_s=%.0f\n",
      n, share, l50, l99, lmax, d50, d99, per1000, hwm / 1024, rows / window > result
}'
grep -E '^uptimeo_(slots_skipped_total|write_errors_total|heartbeats_written_total|writer_batch_rows_(sum|count)) ' \
  "$WORK/metrics.txt" || true
