#!/usr/bin/env bash
# Runs the agent for real against the local PostgreSQL: creates the database, its schema and the
# sample configuration when absent, then runs datacenter 1 (va) until Ctrl-C.
#   DB_CONN_STRING  default postgres://postgres@127.0.0.1:5432/uptimeo
#   DATACENTER_ID   default 1
set -euo pipefail
cd "$(dirname "$0")/.."
export DB_CONN_STRING="${DB_CONN_STRING:-postgres://postgres@127.0.0.1:5432/uptimeo}"
export DATACENTER_ID="${DATACENTER_ID:-1}"
cargo build --release --quiet
agent="${CARGO_TARGET_DIR:-target}/release/uptimeo-agent"
"$agent" migrate --create-database --sample
exec "$agent" run
