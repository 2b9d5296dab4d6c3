#!/usr/bin/env bash
# Pipeline throughput with tracing on and off: `etlctl demo` of N rows on a
# private stack (own directory and ports, so a running stack is untouched),
# once exporting every span to the embedded collector and once with --no-tracing.
# Prints rows/s of each and their ratio (goal: on/off >= 0.95).
# Usage: tools/bench-pipeline.sh [ROWS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
runs=${2:-1}
etlctl=target/release/etlctl
[ -x "$etlctl" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
ports=(--pg-port 55432 --kafka-port 59092 --sftp-port 52222 --base-port 55051 --rest-port 58083 --otlp-port 54317 --jaeger-port 56686)

one() { # $1 = label, rest = extra flags
  local label=$1; shift
  local dir; dir=$(mktemp -d /tmp/etl-bench-XXXX)
  chmod 755 "$dir"
  "$etlctl" up --dir "$dir" "${ports[@]}" "$@" >/dev/null
  "$etlctl" demo --dir "$dir" "${ports[@]}" "$@" --rows "$rows" --seed 42 >"$dir/demo.out" 2>&1 || {
    cat "$dir/demo.out" >&2; "$etlctl" down --dir "$dir" >/dev/null || true; exit 1; }
  "$etlctl" down --dir "$dir" >/dev/null
  python3 - "$dir/report.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\t{r['rows_landed']}\t{r['elapsed_ms']}\t{r['rows_per_second']:.0f}\t{r['latency_ms']['p50']}\t{r['latency_ms']['p95']}")
PY
  rm -rf "$dir"
}

printf 'tracing\trows\telapsed_ms\trows_per_s\tp50_ms\tp95_ms\n'
on=(); off=()
for _ in $(seq "$runs"); do
  on+=("$(one on)"); echo "${on[-1]}"
  off+=("$(one off --no-tracing)"); echo "${off[-1]}"
done
printf '%s\n' "${on[@]}" "${off[@]}" | python3 -c '
import sys
on, off = [], []
for line in sys.stdin:
    f = line.split("\t")
    (on if f[0] == "on" else off).append(float(f[3]))
best_on, best_off = max(on), max(off)
print(f"throughput ratio tracing on/off (best of {len(on)}): {best_on/best_off:.3f}")
'
