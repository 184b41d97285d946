#!/usr/bin/env bash
# Writer throughput: the agent's batch INSERT (one array per column, unnested by the server,
# ON CONFLICT DO NOTHING) against COPY, same rows, same table.
#
#   bench/writer.sh [ROWS=100000] [BATCH=500] [CONNECTIONS=2]
#
# 1. examples/writer_throughput stores ROWS realistic rows (headers as JSON, no body) into the
#    partitioned api_heartbeats with the agent's insert_batch, BATCH rows per statement, one
#    transaction each, one batch at a time on each of CONNECTIONS connections (the agent's
#    WRITE_CONNECTIONS, default 2);
# 2. the same rows are exported with psql \copy, the table truncated, and imported with
#    \copy ... FROM (COPY through one connection), timed.
# Uses (and drops first) the database uptimeo_bench_writer on BENCH_ADMIN_URL's server.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-100000}
BATCH=${2:-500}
CONNECTIONS=${3:-2}
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL="${ADMIN_URL%/*}/uptimeo_bench_writer"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/uptimeo-writer.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin uptimeo-agent --example writer_throughput
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS uptimeo_bench_writer WITH (FORCE)" \
  -c "CREATE DATABASE uptimeo_bench_writer"
DB_CONN_STRING="$DB_URL" "$TARGET_DIR/release/uptimeo-agent" migrate > /dev/null
psql -q -v ON_ERROR_STOP=1 "$DB_URL" <<SQL
INSERT INTO regions (id, name) VALUES (1, 'bench');
INSERT INTO datacenters (id, code, name, region_id) VALUES (1, 'va', 'Virginia', 1);
INSERT INTO agents (id, name, datacenter_id) VALUES (1, 'bench-1', 1);
INSERT INTO schedules (id, name, interval) VALUES (1, 'every 10 s', 10);
INSERT INTO api_monitors (id, name, method, type, url, schedule_id)
    SELECT g, 'bench ' || g, 'GET', 'HTTP', 'http://127.0.0.1:9/', 1
    FROM generate_series(1, 1000) g;
SQL

psql -q "$DB_URL" -c CHECKPOINT
"$TARGET_DIR/release/examples/writer_throughput" "$DB_URL" "$ROWS" "$BATCH" 1000 "$CONNECTIONS" | tee "$WORK/insert"

COLS="monitor_id, agent_id, executed_at, success, response_time_ms, response_size_bytes,
  response_status_code, response_content_type, response_server, response_cache_status,
  dns_lookup_ms, tcp_connect_ms, tls_handshake_ms, time_to_first_byte_ms, warning_threshold_ms,
  critical_threshold_ms, error_type, error_message, raw_request_headers, raw_response_headers,
  raw_response_body, status, lease_epoch, scheduled_at"
COLS=$(echo $COLS)
psql -q "$DB_URL" -c "\\copy (SELECT $COLS FROM api_heartbeats) TO '$WORK/rows.bin' WITH (FORMAT binary)"
psql -q "$DB_URL" -c "TRUNCATE api_heartbeats" -c "CHECKPOINT"
START=$(date +%s.%N)
psql -q "$DB_URL" -c "\\copy api_heartbeats ($COLS) FROM '$WORK/rows.bin' WITH (FORMAT binary)"
END=$(date +%s.%N)
COPIED=$(psql -A -t "$DB_URL" -c "SELECT count(*) FROM api_heartbeats")
awk -v rows="$COPIED" -v s="$START" -v e="$END" \
  'BEGIN { printf "copy rows=%d seconds=%.3f rows_per_s=%.0f\n", rows, e - s, rows / (e - s) }' \
  | tee "$WORK/copy"
awk '{ split($4, a, "="); print a[2] }' "$WORK/insert" "$WORK/copy" | paste -sd' ' \
  | awk '{ printf "writer %d rows/s, COPY %d rows/s, writer / COPY = %.2f\n", $1, $2, $1 / $2 }'
