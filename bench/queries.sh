#!/usr/bin/env bash
# The queries users run, on ROWS heartbeats spread over 30 daily partitions, with EXPLAIN
# ANALYZE: the latest 100 heartbeats of a monitor, and the last 24 h of a datacenter (its rows,
# and per monitor: checks, success ratio, average and p95 response time).
#
#   bench/queries.sh [ROWS=10000000]
#
# Uses (and drops first) the database uptimeo_bench_queries; 1000 monitors, 9 datacenters with
# two agents each; rows carry headers as JSON like the agent's. The schema's own indexes are
# used: (executed_at DESC), (monitor_id, executed_at), the check key and, since migration
# 000007, (agent_id, executed_at) INCLUDE (monitor_id, success, status, response_time_ms).
# Each query runs once to warm the cache, then EXPLAIN ANALYZE shows the second run.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-10000000}
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL="${ADMIN_URL%/*}/uptimeo_bench_queries"
TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet --bin uptimeo-agent
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS uptimeo_bench_queries WITH (FORCE)" \
  -c "CREATE DATABASE uptimeo_bench_queries"
DB_CONN_STRING="$DB_URL" "$TARGET_DIR/release/uptimeo-agent" migrate --sample > /dev/null

START=$(date +%s)
psql -q -v ON_ERROR_STOP=1 "$DB_URL" <<SQL
SELECT uptimeo_ensure_heartbeat_partition((now() AT TIME ZONE 'utc')::date - d)
FROM generate_series(0, 30) d;
INSERT INTO api_monitors (name, method, type, url, schedule_id, headers)
    SELECT 'bench ' || g, 'GET', 'HTTP', 'http://127.0.0.1:9/' || g, 1, '{"Accept": "*/*"}'
    FROM generate_series(1, 999) g;
-- 30 days back from now, evenly; agent of the row's datacenter picked by the row number.
INSERT INTO api_heartbeats (monitor_id, agent_id, executed_at, scheduled_at, success, status,
    response_time_ms, response_status_code, tcp_connect_ms, time_to_first_byte_ms,
    raw_request_headers, raw_response_headers, lease_epoch)
SELECT m.id, 1 + 2 * (g % 9),
       (now() AT TIME ZONE 'utc') - (g * (interval '30 days' / $ROWS)),
       (now() AT TIME ZONE 'utc') - (g * (interval '30 days' / $ROWS)),
       true, 'up', 5, 200, 1, 4,
       '{"Accept": "*/*", "User-Agent": "uptimeo-agent/0.1"}',
       '{"content-type": "application/json", "server": "bench", "content-length": "15"}', 1
FROM generate_series(1, $ROWS) g
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM api_monitors) m
  ON m.k = g % (SELECT count(*) FROM api_monitors);
VACUUM ANALYZE api_heartbeats;
SQL
echo "loaded $ROWS rows in $(( $(date +%s) - START )) s"
LATEST="SELECT * FROM api_heartbeats WHERE monitor_id = 500 ORDER BY executed_at DESC LIMIT 100"
DATACENTER_24H="FROM api_heartbeats h JOIN agents a ON a.id = h.agent_id
WHERE a.datacenter_id = 3 AND h.executed_at > (now() AT TIME ZONE 'utc') - interval '24 hours'"
DC_ROWS="SELECT h.monitor_id, h.executed_at, h.status, h.response_time_ms $DATACENTER_24H"
DC_PER_MONITOR="SELECT h.monitor_id, count(*) AS checks, avg(h.success::int) AS success_ratio,
  avg(h.response_time_ms) AS avg_ms,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY h.response_time_ms) AS p95_ms
$DATACENTER_24H GROUP BY h.monitor_id"
psql -q "$DB_URL" <<SQL
SELECT count(*) AS partitions FROM pg_inherits WHERE inhparent = 'api_heartbeats'::regclass;
\\echo '--- latest 100 heartbeats of monitor 500'
$LATEST \\g /dev/null
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $LATEST;
\\echo '--- last 24 h of datacenter 3 (its agents): the rows'
$DC_ROWS \\g /dev/null
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $DC_ROWS;
\\echo '--- last 24 h of datacenter 3, per monitor: checks, success ratio, avg and p95 time'
$DC_PER_MONITOR \\g /dev/null
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $DC_PER_MONITOR;
SQL
