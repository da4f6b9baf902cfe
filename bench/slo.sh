#!/usr/bin/env bash
# SLO-aware vs FCFS scheduling, and the simulator against the real server.
#
# 1. Profiles this machine (`brisk profile`) unless LATENCY names a latency model.
# 2. Capacity in simulation (`brisk sim --sweep-rates`), fcfs and slo, on the Azure
#    conversation trace scaled to SmolLM2 and on a gamma burst (burstiness 0.25).
# 3. Validation at one rate: the same workload through `brisk serve` + `brisk bench` and
#    through `brisk sim`, both policies, so median TTFT/TPOT can be compared.
#
# Usage (from the workspace root, after `cargo build --release -p brisk`):
#   bench/slo.sh [OUTDIR]            default OUTDIR: bench/results/slo-<UTC timestamp>
# Simulation only (seconds, given a latency model):
#   REAL=0 LATENCY=latency.json bench/slo.sh /tmp/slo-sim
#
# Knobs (environment), with defaults:
#   LATENCY=OUTDIR/latency.json   latency model; profiled (--repeats 1) when the file is missing
#   SCALE=0.1                     --scale-lengths of the Azure trace (prompt mean 1,155 -> ~116)
#   MAX_PROMPT=1024 MAX_OUTPUT=128
#   SLO=ttft=2000,tpot=100        objective, milliseconds (for scheduling and for judging)
#   RATES=0.25,0.5,0.75,1,1.25,1.5,2   simulated sweep on the Azure trace (req/s)
#   BURST_RATES=0.1,0.2,0.3,0.5,1,1.5  simulated sweep of the gamma burst (req/s)
#   NUM_REQUESTS=300              requests per simulated rate
#   REAL=1 REAL_RATE=0.5 REAL_REQUESTS=30   the validation run (0 skips it)
#   SEQS=16                       --max-num-seqs of both server and simulator
#   SEED=0
set -euo pipefail

OUT=${1:-bench/results/slo-$(date -u +%Y%m%dT%H%M%SZ)}
BRISK=${BRISK:-target/release/brisk}
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LATENCY=${LATENCY:-$OUT/latency.json}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
SCALE=${SCALE:-0.1}
MAX_PROMPT=${MAX_PROMPT:-1024}
MAX_OUTPUT=${MAX_OUTPUT:-128}
SLO=${SLO:-ttft=2000,tpot=100}
RATES=${RATES:-0.25,0.5,0.75,1,1.25,1.5,2}
BURST_RATES=${BURST_RATES:-0.1,0.2,0.3,0.5,1,1.5}
NUM_REQUESTS=${NUM_REQUESTS:-300}
REAL=${REAL:-1}
REAL_RATE=${REAL_RATE:-0.5}
REAL_REQUESTS=${REAL_REQUESTS:-30}
SEQS=${SEQS:-16}
SEED=${SEED:-0}
KV_TOKENS=$((SEQS * (MAX_PROMPT + MAX_OUTPUT)))
TTFT_MS=$(echo "$SLO" | sed -n 's/.*ttft=\([0-9.]*\).*/\1/p')
TPOT_MS=$(echo "$SLO" | sed -n 's/.*tpot=\([0-9.]*\).*/\1/p')

mkdir -p "$OUT"
if [ ! -f "$LATENCY" ]; then
  "$BRISK" profile --model "$MODEL" --repeats 1 --output "$LATENCY" | tee "$OUT/profile.txt"
fi

azure=(--trace "$TRACE" --scale-lengths "$SCALE" --max-prompt-tokens "$MAX_PROMPT"
       --max-output-tokens "$MAX_OUTPUT" --seed "$SEED" --slo "$SLO")
burst=(--synthetic "prompt=uniform:32:256,output=uniform:8:64" --burstiness 0.25
       --seed "$SEED" --slo "$SLO")
azure_rates=$RATES
burst_rates=$BURST_RATES
# The server's objectives and sizes, given alike to `brisk serve` and `brisk sim`.
server=(--max-num-seqs "$SEQS" --kv-cache-tokens "$KV_TOKENS" --ttft-slo "$TTFT_MS" --tpot-slo "$TPOT_MS")

for policy in fcfs slo; do
  for w in azure burst; do
    declare -n flags=$w rates=${w}_rates
    "$BRISK" sim --latency-model "$LATENCY" --scheduling-policy "$policy" "${server[@]}" \
      "${flags[@]}" --num-requests "$NUM_REQUESTS" --sweep-rates "$rates" \
      --output "$OUT/sim-$w-$policy.json" | tee "$OUT/sim-$w-$policy.txt"
  done
done

[ "$REAL" = 1 ] || exit 0
for policy in fcfs slo; do
  "$BRISK" sim --latency-model "$LATENCY" --scheduling-policy "$policy" "${server[@]}" \
    "${azure[@]}" --num-requests "$REAL_REQUESTS" --rate "$REAL_RATE" \
    --output "$OUT/sim-real-$policy.json" > "$OUT/sim-real-$policy.txt"
  "$BRISK" serve --model "$MODEL" --port 0 --scheduling-policy "$policy" \
    --latency-model "$LATENCY" "${server[@]}" \
    > "$OUT/serve-$policy.log" 2>&1 &
  pid=$!
  until grep -q "serving" "$OUT/serve-$policy.log"; do sleep 1; done
  url=$(grep -o 'http://[0-9.:]*' "$OUT/serve-$policy.log" | head -1)
  "$BRISK" bench --url "$url" "${azure[@]}" --num-requests "$REAL_REQUESTS" \
    --rate "$REAL_RATE" --no-progress --output "$OUT/real-$policy.json" \
    | tee "$OUT/real-$policy.txt"
  kill "$pid"
  wait "$pid" || true
done
for policy in fcfs slo; do
  for kind in real sim-real; do
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], "median TTFT %.0f ms, median TPOT %.1f ms, attainment %.0f%%" % (r["median_ttft_ms"], r["median_tpot_ms"], 100*r["slo_attainment"]))' \
      "$OUT/$kind-$policy.json" "$kind $policy:"
  done
done | tee "$OUT/validation.txt"
