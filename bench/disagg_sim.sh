#!/usr/bin/env bash
# Issue 15, simulated: DistServe's placement question with `brisk sim`. For fleets of N
# replicas (one compute thread each, this machine's latency model) and P of them prefill
# replicas (the rest decode; P = 0: colocated), the capacity (highest rate keeping ≥ 90 %
# of requests within the SLO, `--find-capacity`) on the Azure conversation trace's lengths,
# for each TPOT objective; goodput per replica = capacity / N.
#
#   bench/disagg_sim.sh [OUTDIR]          # default /tmp/disagg-sim-<utc timestamp>
#
# Knobs (env): SIZES ("8 32"), TPOTS ("50 150", ms; TTFT 2 s), EIGHTHS (P as eighths of N,
# "0 2 3 4 5 6 7"), SCALE (--scale-lengths),
# PER_REPLICA (requests per replica), GBIT (--kv-transfer-gbit), LATENCY (the model). Raw
# outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
set -u
cd "$(dirname "$0")/.."
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
SIZES=${SIZES:-8 32}
TPOTS=${TPOTS:-50 150}
SCALE=${SCALE:-0.1}
EIGHTHS=${EIGHTHS:-0 2 3 4 5 6 7}
PER_REPLICA=${PER_REPLICA:-150}
GBIT=${GBIT:-10}
LATENCY=${LATENCY:-$(ls "$HOME"/.cache/brisk/latency/*-1t-auto-f32-bs16.json | head -1)}
OUT=${1:-/tmp/disagg-sim-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"
for tpot in $TPOTS; do
  for n in $SIZES; do
    for p in $(for e in $EIGHTHS; do echo $((n * e / 8)); done); do
      split=()
      [ "$p" -gt 0 ] && split=(--prefill-replicas "$p" --kv-transfer-gbit "$GBIT")
      run=tpot$tpot-n$n-p$p
      "$BRISK" sim --latency-model "$LATENCY" --lengths "$LENGTHS" --scale-lengths "$SCALE" \
        --num-requests $((PER_REPLICA * n)) --slo "ttft=2000,tpot=$tpot" --seed 0 --no-progress \
        --replicas "$n" "${split[@]}" --find-capacity $((n * 12)) --capacity-steps 7 \
        -o "$OUT/$run.json" >"$OUT/$run.txt" 2>&1
      python3 - "$OUT/$run.json" "$tpot" "$n" "$p" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, tpot, n, p = sys.argv[1], *map(int, sys.argv[2:])
r = json.load(open(path))
cap = r.get("capacity") or 0.0
print(json.dumps({"tpot_ms": tpot, "replicas": n, "prefill": p, "decode": n - p if p else 0,
                  "capacity_rps": round(cap, 2), "per_replica": round(cap / n, 3)}))
PY
    done
  done
done
