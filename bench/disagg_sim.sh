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
# "0 2 3 4 5 6 7"), SPLITS (instead of EIGHTHS: "P:D" eighths, e.g. "2:2" for a mixed fleet
# whose other half serves both phases), PRICING ("on"; "on off" also runs the router
# without interference pricing), SCALE (--scale-lengths),
# PER_REPLICA (requests per replica), BURSTINESS (gamma arrivals' shape, e.g. 0.25; default
# Poisson), STEPS (--capacity-steps, 7), SEEDS ("0"), GBIT (--kv-transfer-gbit), LATENCY (the model). Raw
# outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
set -u
cd "$(dirname "$0")/.."
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
SIZES=${SIZES:-8 32}
TPOTS=${TPOTS:-50 150}
SCALE=${SCALE:-0.1}
EIGHTHS=${EIGHTHS:-0 2 3 4 5 6 7}
SPLITS=${SPLITS:-$(for e in $EIGHTHS; do echo "$e:$((8 - e))"; done)}
PRICING=${PRICING:-on}
PER_REPLICA=${PER_REPLICA:-150}
STEPS=${STEPS:-7}
SEEDS=${SEEDS:-0}
BURSTINESS=${BURSTINESS:-}
GBIT=${GBIT:-10}
LATENCY=${LATENCY:-$(ls "$HOME"/.cache/brisk/latency/*-1t-auto-f32-bs16.json | head -1)}
OUT=${1:-/tmp/disagg-sim-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"
for tpot in $TPOTS; do
  for n in $SIZES; do
    for pd in $SPLITS; do
      p=$((n * ${pd%%:*} / 8)) d=$((n * ${pd##*:} / 8))
      [ "$p" = 0 ] && d=0
      for pricing in $PRICING; do
       for seed in $SEEDS; do
        split=(--kv-transfer-gbit "$GBIT")
        [ "$p" -gt 0 ] && split+=(--prefill-replicas "$p" --decode-replicas "$d")
        [ "$pricing" = off ] && split+=(--no-interference-pricing)
        [ -n "$BURSTINESS" ] && split+=(--burstiness "$BURSTINESS")
        run=tpot$tpot-n$n-p$p-d$d-$pricing-s$seed
        "$BRISK" sim --latency-model "$LATENCY" --lengths "$LENGTHS" --scale-lengths "$SCALE" \
          --num-requests $((PER_REPLICA * n)) --slo "ttft=2000,tpot=$tpot" --seed "$seed" --no-progress \
          --replicas "$n" "${split[@]}" --find-capacity $((n * 12)) --capacity-steps "$STEPS" \
          -o "$OUT/$run.json" >"$OUT/$run.txt" 2>&1
        python3 - "$OUT/$run.json" "$tpot" "$n" "$p" "$d" "$seed" "$pricing" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, pricing = sys.argv[1], sys.argv[7]
tpot, n, p, d, seed = map(int, sys.argv[2:7])
r = json.load(open(path))
cap = r.get("capacity") or 0.0
print(json.dumps({"tpot_ms": tpot, "replicas": n, "prefill": p, "decode": d,
                  "both": n - p - d, "pricing": pricing, "seed": seed,
                  "capacity_rps": round(cap, 2), "per_replica": round(cap / n, 3)}))
PY
       done
      done
    done
  done
done
