#!/usr/bin/env bash
# blackbox_exporter (Debian package prometheus-blackbox-exporter, module http_2xx) at the rate
# of N monitors every 10 s, against the same loopback target as bench/load.sh; prints its CPU
# seconds per 1000 probes over a window, to compare with the agent's figure.
#
#   bench/blackbox.sh [MONITORS=1000] [SECONDS=60]
#
# The driver (examples/blackbox_driver) sends the probe requests over keep-alive connections;
# its own CPU is reported apart and not counted.
set -euo pipefail
cd "$(dirname "$0")/.."

MONITORS=${1:-1000}
WINDOW=${2:-60}
WARMUP=${BENCH_WARMUP:-15}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
EXPORTER=$(command -v prometheus-blackbox-exporter || true)
[ -n "$EXPORTER" ] || { echo "apt-get install prometheus-blackbox-exporter first" >&2; exit 1; }
WORK=$(mktemp -d /tmp/uptimeo-blackbox.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet --example bench_target --example blackbox_driver
cp "$TARGET_DIR/release/examples/bench_target" "$TARGET_DIR/release/examples/blackbox_driver" "$WORK/"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The target, unless BENCH_TARGET_ADDR names a running one (bench/compare.sh).
if [ -n "${BENCH_TARGET_ADDR:-}" ]; then
  TARGET_ADDR=$BENCH_TARGET_ADDR
else
  "$WORK/bench_target" 0 > "$WORK/target.out" &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  for _ in $(seq 50); do grep -q listening "$WORK/target.out" && break; sleep 0.1; done
  TARGET_ADDR=$(awk '/listening/ {print $2}' "$WORK/target.out")
fi

cat > "$WORK/blackbox.yml" <<YAML
modules:
  http_2xx:
    prober: http
YAML
EXPORTER_ADDR="127.0.0.1:$(free_port)"
"$EXPORTER" --config.file="$WORK/blackbox.yml" --web.listen-address="$EXPORTER_ADDR" \
  --log.level=warn > "$WORK/exporter.log" 2>&1 &
EXPORTER_PID=$!
PIDS+=("$EXPORTER_PID")
for _ in $(seq 50); do curl -fs "http://$EXPORTER_ADDR/metrics" > /dev/null && break; sleep 0.1; done

"$WORK/blackbox_driver" "$EXPORTER_ADDR" "$TARGET_ADDR" "$MONITORS" "$WARMUP" "$WINDOW" \
  > "$WORK/driver.out" &
DRIVER_PID=$!
PIDS+=("$DRIVER_PID")
echo "monitors=$MONITORS warmup=${WARMUP}s window=${WINDOW}s exporter=$EXPORTER_ADDR target=$TARGET_ADDR"
sleep "$WARMUP"
CPU0=$(ticks "$EXPORTER_PID"); DCPU0=$(ticks "$DRIVER_PID")
sleep "$WINDOW"
CPU1=$(ticks "$EXPORTER_PID"); DCPU1=$(ticks "$DRIVER_PID")
HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$EXPORTER_PID/status")
wait "$DRIVER_PID" || true
read -r PROBES OK < <(sed 's/[a-z]*=//g' "$WORK/driver.out")
awk -v cpu=$(( CPU1 - CPU0 )) -v dcpu=$(( DCPU1 - DCPU0 )) -v hz="$(getconf CLK_TCK)" \
    -v probes="$PROBES" -v ok="$OK" -v n="$MONITORS" -v window="$WINDOW" -v hwm="$HWM_KB" \
    -v result="${BENCH_RESULT_FILE:-}" 'BEGIN {
  printf "probes=%d successful=%d exporter_cpu_s=%.2f driver_cpu_s=%.2f\n", probes, ok, cpu / hz, dcpu / hz
  print "| monitors | window | probes (successful) | blackbox_exporter CPU s per 1000 probes | CPU (cores) | peak RSS (MiB) |"
  print "|---|---|---|---|---|---|"
  printf "| %d | %d s | %d (%d) | %.3f | %.2f | %.1f |\n", n, window, probes, ok,
    probes ? (cpu / hz) / probes * 1000 : 0, (cpu / hz) / window, hwm / 1024
  if (result != "")
    printf "probes=%d successful=%d expected=%d cpu_per_1000=%.3f rss_mib=%.1f\n", probes, ok,
      n * window / 10, probes ? (cpu / hz) / probes * 1000 : 0, hwm / 1024 > result
}'
