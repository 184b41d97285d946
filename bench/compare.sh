#!/usr/bin/env bash
# The agent and Prometheus blackbox_exporter (module http_2xx) side by side, in one run, on one
# loopback target: for each N given, bench/load.sh runs the agent with N monitors every 10 s,
# then bench/blackbox.sh drives the exporter at the same probe rate against the same target
# process. Prints one table (agent figures, the exporter's CPU per 1000 probes and the ratio),
# appends it to bench/results.md with the date, and draws bench/lateness.svg (lateness and CPU
# per check against N).
#
#   bench/compare.sh [N ...]        (default: 1000 10000)
#   BENCH_SECONDS    window of each measurement (default 60)
#   BENCH_ADMIN_URL  PostgreSQL server for the agent's bench database (see bench/load.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000 10000)
SECONDS_WINDOW=${BENCH_SECONDS:-60}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
command -v prometheus-blackbox-exporter >/dev/null || {
  echo "installing prometheus-blackbox-exporter (Debian package)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-blackbox-exporter) >/dev/null
}
WORK=$(mktemp -d /tmp/uptimeo-compare.XXXXXX)
cleanup() { [ -n "${TARGET_PID:-}" ] && kill "$TARGET_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --quiet --bin uptimeo-agent --example bench_target --example blackbox_driver
cp "$TARGET_DIR/release/examples/bench_target" "$WORK/"
"$WORK/bench_target" 0 > "$WORK/target.out" &
TARGET_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/target.out" && break; sleep 0.1; done
export BENCH_TARGET_ADDR BENCH_TARGET_PID=$TARGET_PID
BENCH_TARGET_ADDR=$(awk '/listening/ {print $2}' "$WORK/target.out")
echo "one target for both tools: $BENCH_TARGET_ADDR"

for n in "${SIZES[@]}"; do
  echo "== $n monitors: the agent"
  BENCH_RESULT_FILE="$WORK/agent-$n" bench/load.sh "$n" "$SECONDS_WINDOW" | grep -v "^uptimeo_"
  echo "== $n monitors: blackbox_exporter"
  BENCH_RESULT_FILE="$WORK/blackbox-$n" bench/blackbox.sh "$n" "$SECONDS_WINDOW" | tail -n 3
done

python3 - "$WORK" "$SECONDS_WINDOW" "${SIZES[@]}" <<'PY'
import datetime, os, platform, sys
work, window, sizes = sys.argv[1], sys.argv[2], sys.argv[3:]
def fields(path):
    return dict(kv.split("=", 1) for kv in open(path).read().split())
rows = []
for n in sizes:
    a, b = fields(f"{work}/agent-{n}"), fields(f"{work}/blackbox-{n}")
    ratio = float(a["cpu_per_1000"]) / float(b["cpu_per_1000"]) if float(b["cpu_per_1000"]) else 0
    rows.append((int(n), a, b, ratio))
head = ("| monitors | slots run | lateness p50 / p99 / max (ms) | write delay p50 / p99 (ms) "
        "| agent RSS (MiB) | agent CPU s / 1000 checks | blackbox_exporter probes run (successful) "
        "| blackbox_exporter CPU s / 1000 probes | agent / exporter |")
lines = [head, "|" + "---|" * 9]
for n, a, b, ratio in rows:
    lines.append(f"| {n:,} | {float(a['share']):.2f}% | {a['late50']} / {a['late99']} / {a['latemax']} "
                 f"| {a['delay50']} / {a['delay99']} | {a['rss_mib']} | {a['cpu_per_1000']} "
                 f"| {int(b['probes']):,} of {int(b['expected']):,} ({int(b['successful']):,}) "
                 f"| {b['cpu_per_1000']} | {ratio:.2f} |")
stamp = datetime.date.today().isoformat()
cpus = os.cpu_count()
table = "\n".join(lines)
print(table)
with open("bench/results.md", "a") as out:
    out.write(f"\n## {stamp}, {cpus} cores, {platform.machine()}, {window} s windows\n\n{table}\n")

# lateness.svg: p99 lateness (left axis) and CPU s per 1000 checks of both tools (right axis)
# against N, log-scaled N.
import math
W, H, L, R, T, B = 640, 360, 70, 70, 30, 50
ns = [r[0] for r in rows]
lo, hi = math.log10(min(ns)), math.log10(max(ns))
span = (hi - lo) or 1
x = lambda n: L + (math.log10(n) - lo) / span * (W - L - R) if len(ns) > 1 else (W / 2)
late = [float(r[1]["late99"]) for r in rows]
cpu_a = [float(r[1]["cpu_per_1000"]) for r in rows]
cpu_b = [float(r[2]["cpu_per_1000"]) for r in rows]
lmax = max(late + [100.0]) * 1.1
cmax = max(cpu_a + cpu_b) * 1.1 or 1
yl = lambda v: H - B - v / lmax * (H - T - B)
yc = lambda v: H - B - v / cmax * (H - T - B)
def poly(ys, color, dash=""):
    pts = " ".join(f"{x(n):.1f},{y:.1f}" for n, y in zip(ns, ys))
    dots = "".join(f'<circle cx="{x(n):.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for n, y in zip(ns, ys))
    return f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" {dash}/>{dots}'
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{yl(100):.1f}" x2="{W-R}" y2="{yl(100):.1f}" stroke="#c00" stroke-dasharray="4 4"/>',
       f'<text x="{L+4}" y="{yl(100)-4:.1f}" fill="#c00">p99 lateness target 100 ms</text>',
       poly([yl(v) for v in late], "#c00"),
       poly([yc(v) for v in cpu_a], "#06c", 'stroke-dasharray="6 3"'),
       poly([yc(v) for v in cpu_b], "#888", 'stroke-dasharray="2 3"'),
       f'<text x="{W/2}" y="{H-12}" text-anchor="middle">monitors (log scale), {stamp}, {cpus} cores</text>',
       f'<text x="14" y="{T+(H-T-B)/2}" transform="rotate(-90 14 {T+(H-T-B)/2})" text-anchor="middle" fill="#c00">p99 lateness (ms)</text>',
       f'<text x="{W-14}" y="{T+(H-T-B)/2}" transform="rotate(90 {W-14} {T+(H-T-B)/2})" text-anchor="middle">CPU s per 1000 checks: agent (blue), blackbox_exporter (grey)</text>']
for n in ns:
    svg.append(f'<text x="{x(n):.1f}" y="{H-B+16}" text-anchor="middle">{n:,}</text>')
for i in range(5):
    v = lmax * i / 4
    svg.append(f'<text x="{L-6}" y="{yl(v)+4:.1f}" text-anchor="end">{v:.0f}</text>')
    c = cmax * i / 4
    svg.append(f'<text x="{W-R+6}" y="{yc(c)+4:.1f}">{c:.2f}</text>')
svg.append("</svg>")
open("bench/lateness.svg", "w").write("\n".join(svg))
print("\nappended to bench/results.md; plot in bench/lateness.svg")
PY
