#!/usr/bin/env bash
# The agent's phases against curl's, on one loopback target with known delays.
#
#   bench/curl_compare.sh [RUNS=9] [DNS_MS=120] [TLS_MS=80] [HEAD_MS=150] [BODY_MS=200]
#
# examples/delay_target serves `delay.test`: its DNS server (127.0.0.77:53) answers after
# DNS_MS, its HTTPS server holds the handshake TLS_MS, sends the head HEAD_MS after the request
# and trickles the body over BODY_MS. curl resolves through the system resolver, so it runs in
# a private mount namespace whose /etc/resolv.conf names that server (needs root, as `unshare
# -m` does); the agent runs `check --json` with DNS_SERVER. Both build a fresh connection per
# run. Prints, per phase, the injected delay and the medians of curl and of the agent, each
# phase measured on its own (curl's cumulative times are differenced).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-9}
DNS_MS=${2:-120}
TLS_MS=${3:-80}
HEAD_MS=${4:-150}
BODY_MS=${5:-200}
PORT=${CURL_COMPARE_PORT:-18443}
DNS_ADDR=127.0.0.77:53
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/uptimeo-curl.XXXXXX)
cleanup() { [ -n "${TARGET_PID:-}" ] && kill "$TARGET_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --quiet --bin uptimeo-agent --example delay_target
"$TARGET_DIR/release/examples/delay_target" "$DNS_ADDR" "$PORT" "$WORK" \
  "$DNS_MS" "$TLS_MS" "$HEAD_MS" "$BODY_MS" > "$WORK/target.log" 2>&1 &
TARGET_PID=$!
for _ in $(seq 100); do grep -q ready "$WORK/target.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$WORK/target.log" || { cat "$WORK/target.log"; exit 1; }
echo "nameserver ${DNS_ADDR%:*}" > "$WORK/resolv.conf"

URL="https://delay.test:$PORT/"
FORMAT='%{time_namelookup} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}\n'
for _ in $(seq "$RUNS"); do
  unshare -m sh -c "mount --bind '$WORK/resolv.conf' /etc/resolv.conf && \
    curl -sS -o /dev/null --cacert '$WORK/ca.pem' -w '$FORMAT' '$URL'" >> "$WORK/curl"
  DNS_SERVER=$DNS_ADDR SSL_CERT_FILE="$WORK/ca.pem" \
    "$TARGET_DIR/release/uptimeo-agent" check --json "$URL" >> "$WORK/agent"
done

python3 - "$WORK/curl" "$WORK/agent" "$DNS_MS" "$TLS_MS" "$HEAD_MS" "$BODY_MS" <<'PY'
import json, statistics, sys
curl_file, agent_file, dns, tls, head, body = sys.argv[1:]
injected = [float(dns), 0.0, float(tls), float(head), float(body)]
names = ["DNS lookup", "TCP connect", "TLS handshake", "server wait", "transfer"]

def split(cumulative):
    # Cumulative marks (lookup, connect, appconnect, first byte, total) to phases, in ms.
    marks = [0.0] + cumulative
    return [marks[i + 1] - marks[i] for i in range(5)]

curl = [split([float(x) * 1000 for x in line.split()]) for line in open(curl_file)]
agent = []
for line in open(agent_file):
    row = json.loads(line)
    assert row["success"], row
    d = row["details"]
    us = [d["dns_us"], d["connect_us"], d["tls_us"]]
    firsts = [sum(us[:1]), sum(us[:2]), sum(us[:3]), d["ttfb_us"], d["total_us"]]
    agent.append(split([x / 1000 for x in firsts]))

print(f"{len(curl)} runs each, medians in ms\n")
print("| phase | injected | curl | uptimeo-agent | agent - curl |")
print("|---|---:|---:|---:|---:|")
for i, name in enumerate(names):
    c = statistics.median(r[i] for r in curl)
    a = statistics.median(r[i] for r in agent)
    print(f"| {name} | {injected[i]:.0f} | {c:.2f} | {a:.2f} | {a - c:+.2f} |")
PY
