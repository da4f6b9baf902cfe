#!/usr/bin/env bash
# Issue 15: live migration for load balance under a deliberately imbalanced load. Two
# `brisk serve` replicas (one compute thread each) behind `brisk route --hot-spot-slack 1000
# --affinity-slack 60000` (the hot-spot guard off, cache affinity over any queue), fed
# requests that all share one 512-token prefix, so the router piles them onto one replica
# (the shared-system-prompt failure Dynamo's users report); with and without `--rebalance-slack 2` (the router
# has the busiest replica migrate a running request, with pre-copy, whenever it decodes more
# than two beyond the other). Variants are interleaved and repeated (RUNS).
#
#   bench/rebalance.sh [OUTDIR]          # default /tmp/rebalance-<utc timestamp>
#
# Knobs (env): NUM (requests, 0.6 s apart), OUTPUT (tokens each), RUNS ("off on off on").
# Raw outputs stay out of git; the summary goes into BENCHMARKS.md by hand. Run after
# `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
NUM=${NUM:-120}
OUTPUT=${OUTPUT:-160}
RUNS=${RUNS:-off on off on}
OUT=${1:-/tmp/rebalance-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_pids EXIT
describe_machine | tee "$OUT/machine.txt"
python3 - "$OUT/shared.jsonl" "$NUM" "$OUTPUT" <<'PY'
import json, sys
path, num, output = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    for i in range(num):
        f.write(json.dumps({"timestamp": i * 600, "input_length": 600, "output_length": output,
                            "hash_ids": [7, 100000 + i]}) + "\n")
PY
sample() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {v=$2} END {print v+0}'
}
n=0
for run in $RUNS; do
  n=$((n + 1))
  wait_quiet "$run-$n"
  for port in 8811 8812; do
    start_bg "$port" "$OUT/replica-$run-$n-$port.log" env BRISK_THREADS=1 "$BRISK" serve \
      --model "$MODEL" --port "$port"
    PIDS+=("$SPID")
  done
  extra=()
  [ "$run" = on ] && extra=(--rebalance-slack 2)
  start_bg 8810 "$OUT/router-$run-$n.log" "$BRISK" route --port 8810 --hot-spot-slack 1000 \
    --affinity-slack 60000 \
    --replica http://127.0.0.1:8811 --replica http://127.0.0.1:8812 "${extra[@]}"
  PIDS+=("$SPID")
  "$BRISK" bench --url http://127.0.0.1:8810 --trace "$OUT/shared.jsonl" --num-requests "$NUM" \
    --slo ttft=2000,tpot=150 --seed 0 --no-progress --output "$OUT/$run-$n.json" \
    >"$OUT/$run-$n.txt" 2>&1
  migrations=$(sample 8810 'brisk_router_migrations_total{reason="balance"}')
  served1=$(sample 8811 'brisk_request_success_total{finished_reason="length"}')
  python3 - "$OUT/$run-$n.json" "$run" "$migrations" "$served1" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, run, migrations, served1 = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"rebalance": run, "migrations": int(float(migrations)),
    "answered_by_replica_1": int(float(served1)), "completed": r["completed"],
    "slo_attainment": round(r["slo_attainment"], 3),
    "ttft_p50_ms": round(r["median_ttft_ms"]), "ttft_p99_ms": round(r["p99_ttft_ms"]),
    "tpot_p50_ms": round(r["median_tpot_ms"], 1), "tpot_p99_ms": round(r["p99_tpot_ms"], 1)}))
PY
  stop_pids
done
