#!/usr/bin/env bash
# Real-server capacity (issue 5): brisk with --scheduling-policy fcfs, brisk with slo, and
# llama.cpp's llama-server, each swept over request rates with `brisk bench --sweep-rates`
# on the workloads of bench/slo.sh (the Azure conversation trace scaled to SmolLM2, and a
# gamma burst of burstiness 0.25), judged against one SLO. Capacity = the highest rate with
# >= 90 % attainment (brisk bench's rule). Then `brisk sim` runs the same sweeps (files
# sim_<policy>-<workload>.json) so capacity and latencies can be set against the real ones.
#
# Usage (from the workspace root, after `cargo build --release -p brisk`, with a latency
# model from `brisk profile`):
#   LATENCY=latency.json bench/slo_capacity.sh [OUTDIR]
# Smoke run: LATENCY=l.json AZURE_RATES=2 BURST_RATES=0.5 REQUESTS=4 BURST_REQUESTS=4 bench/slo_capacity.sh /tmp/c
#
# Knobs (environment), with defaults:
#   SERVERS="fcfs slo llama"      which servers (llama needs LLAMA)
#   WORKLOADS="azure burst"
#   AZURE_RATES=1,1.5,2,3,4 REQUESTS=60             Azure sweep, requests per rate
#   BURST_RATES=0.2,0.3,0.5,1 BURST_REQUESTS=40     burst sweep (llama skips it unless
#                                                   BURST_LLAMA=1)
#   SCALE=0.1 MAX_PROMPT=1024 MAX_OUTPUT=128 SLO=ttft=2000,tpot=100 SEQS=16 THREADS=2 SEED=0
#   RECORD_STEPS=0    1: brisk servers record their steps (OUTDIR/<server>-<workload>.steps.jsonl)
#                     for `brisk profile --from-steps` (a latency model fitted on the loaded server)
# Writes OUTDIR/<server>-<workload>.json (sweep summary), .rate-R.json (reports), .txt, .log,
# load.txt, env.txt, commands.txt and capacity.txt (the table).
set -euo pipefail

OUT=${1:-bench/results/slo-capacity-$(date -u +%Y%m%dT%H%M%SZ)}
BRISK=${BRISK:-target/release/brisk}
LLAMA=${LLAMA:-$HOME/.cache/brisk-peers/llama.cpp-build/bin/llama-server}
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
LATENCY=${LATENCY:?give LATENCY=latency.json from brisk profile}
SERVERS=${SERVERS:-fcfs slo llama}
WORKLOADS=${WORKLOADS:-azure burst}
AZURE_RATES=${AZURE_RATES:-1,1.5,2,3,4}
BURST_RATES=${BURST_RATES:-0.2,0.3,0.5,1}
REQUESTS=${REQUESTS:-60}
BURST_REQUESTS=${BURST_REQUESTS:-40}
BURST_LLAMA=${BURST_LLAMA:-0}
SCALE=${SCALE:-0.1}
MAX_PROMPT=${MAX_PROMPT:-1024}
MAX_OUTPUT=${MAX_OUTPUT:-128}
SLO=${SLO:-ttft=2000,tpot=100}
SEQS=${SEQS:-16}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
RECORD_STEPS=${RECORD_STEPS:-0}
PORT=${PORT:-8131}
KV_TOKENS=$((SEQS * (MAX_PROMPT + MAX_OUTPUT)))
TTFT_MS=$(echo "$SLO" | sed -n 's/.*ttft=\([0-9.]*\).*/\1/p')
TPOT_MS=$(echo "$SLO" | sed -n 's/.*tpot=\([0-9.]*\).*/\1/p')

for f in "$MODEL" "$TRACE" "$BRISK" "$LATENCY"; do
  [ -e "$f" ] || { echo "missing $f (see the header of $0)" >&2; exit 1; }
done
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
  echo "latency model: $LATENCY"
  echo "azure: scale $SCALE, max prompt/output $MAX_PROMPT/$MAX_OUTPUT, rates $AZURE_RATES, $REQUESTS requests/rate"
  echo "burst: burstiness 0.25, rates $BURST_RATES, $BURST_REQUESTS requests/rate"
  echo "slo: $SLO  seqs: $SEQS  kv tokens: $KV_TOKENS  threads: $THREADS  seed: $SEED"
} >"$OUT/env.txt"
cat "$OUT/env.txt"

SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT

start_server() {  # fcfs | slo | llama, then the workload (names the step recording)
  local log="$OUT/$1.log" record=()
  [ "$RECORD_STEPS" = 1 ] && record=(--record-steps "$OUT/$1-$2.steps.jsonl")
  case $1 in
    fcfs|slo)
      start_bg "$PORT" "$log" env BRISK_THREADS="$THREADS" "$BRISK" serve --model "$MODEL" \
        --port "$PORT" --scheduling-policy "$1" --latency-model "$LATENCY" \
        --ttft-slo "$TTFT_MS" --tpot-slo "$TPOT_MS" --max-num-seqs "$SEQS" \
        --kv-cache-tokens "$KV_TOKENS" "${record[@]}"
      ;;
    llama)
      start_bg "$PORT" "$log" "$LLAMA" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np "$SEQS" \
        -c "$KV_TOKENS" -t "$THREADS"
      ;;
  esac
}

azure=(--trace "$TRACE" --scale-lengths "$SCALE" --max-prompt-tokens "$MAX_PROMPT"
       --max-output-tokens "$MAX_OUTPUT" --num-requests "$REQUESTS" --sweep-rates "$AZURE_RATES")
burst=(--synthetic "prompt=uniform:32:256,output=uniform:8:64" --burstiness 0.25
       --num-requests "$BURST_REQUESTS" --sweep-rates "$BURST_RATES")

for server in $SERVERS; do
  for w in $WORKLOADS; do
    [ "$server/$w" = llama/burst ] && [ "$BURST_LLAMA" != 1 ] && continue
    declare -n flags=$w
    start_server "$server" "$w"
    wait_quiet "$server-$w"
    cmd=("$BRISK" bench --url "http://127.0.0.1:$PORT" "${flags[@]}" --slo "$SLO" --seed "$SEED"
         --no-progress --output "$OUT/$server-$w.json")
    echo "${cmd[*]}" >>"$OUT/commands.txt"
    echo "== $server $w"
    "${cmd[@]}" >"$OUT/$server-$w.txt" 2>&1 || { echo "bench failed; see $OUT/$server-$w.txt" >&2; exit 1; }
    grep -i "capacity" "$OUT/$server-$w.txt" || true
    stop_server
  done
done

# The simulator on exactly the same workloads and rates, for the sim-vs-real comparison.
for policy in fcfs slo; do
  for w in $WORKLOADS; do
    declare -n flags=$w
    "$BRISK" sim --latency-model "$LATENCY" --scheduling-policy "$policy" --max-num-seqs "$SEQS" \
      --kv-cache-tokens "$KV_TOKENS" --ttft-slo "$TTFT_MS" --tpot-slo "$TPOT_MS" "${flags[@]}" \
      --slo "$SLO" --seed "$SEED" --output "$OUT/sim_$policy-$w.json" >"$OUT/sim_$policy-$w.txt"
  done
done

python3 - "$OUT" <<'PY' | tee "$OUT/capacity.txt"
import json, os, sys
out = sys.argv[1]
print("| server | workload | capacity | attainment (goodput req/s) per rate |")
print("| --- | --- | --- | --- |")
for name in sorted(f for f in os.listdir(out) if f.count(".") == 1 and f.endswith(".json") and "-" in f):
    s = json.load(open(os.path.join(out, name)))
    if "points" not in s:
        continue
    server, workload = name[:-5].split("-", 1)
    cap = s.get("capacity")
    pts = ", ".join("%g: %.0f%% (%.2f)" % (p["rate"], 100 * p["slo_attainment"], p["request_goodput"]) for p in s["points"])
    print(f"| {server} | {workload} | {cap if cap is not None else 'below the lowest rate'} | {pts} |")
PY
