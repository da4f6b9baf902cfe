#!/usr/bin/env bash
# brisk vs llama.cpp's llama-server on the Azure LLM inference conversation trace (2023,
# Splitwise), scaled to SmolLM2's context, swept over request rates: goodput, SLO attainment
# and latency percentiles per rate, capacity (highest rate with >= 90 % attainment), plots.
#
# Usage (from the workspace root, after `cargo build --release -p brisk`):
#   bench/azure.sh [OUTDIR]            default OUTDIR: bench/results/azure-<UTC timestamp>
# Smoke test (a few requests, seconds):
#   RATES=1,2 NUM_REQUESTS=4 bench/azure.sh /tmp/azure-smoke
#
# Knobs (environment), with defaults:
#   RATES=0.25,0.5,1,2     request rates (req/s) of the sweep; the trace's time axis is
#                          rescaled to each mean rate (its burstiness is kept)
#   NUM_REQUESTS=100       first N requests of the trace per rate
#   SCALE=0.25             --scale-lengths: prompt mean 1,155 -> ~289, output 211 -> ~53 tokens
#   MAX_PROMPT=2048        --max-prompt-tokens (SmolLM2's context is 8,192)
#   MAX_OUTPUT=256         --max-output-tokens
#   SLO=ttft=2000,tpot=200 objective, milliseconds
#   PARALLEL=16            llama-server slots (-np) = brisk --max-num-seqs
#   THREADS=2              llama-server -t = brisk's BRISK_THREADS
#   SEED=0                 --seed (same requests and prompts for both servers)
#   SERVERS="brisk llama"  which servers to run, in order
#   MODEL, LLAMA, BRISK    model file and binaries (defaults below)
#
# Both servers get the same model file, threads, concurrent sequences and KV capacity
# (PARALLEL x (MAX_PROMPT + MAX_OUTPUT) tokens). Prompts are token ids, so their lengths are
# exact on both; outputs are forced to length with ignore_eos/min_tokens and the reports
# count any server that ignored them. Each rate gets new prompt contents (same lengths), so
# no rate is served from the previous rate's prefix cache. Writes, under OUTDIR:
# <server>.json (sweep summary), <server>.rate-R.json (one report per rate), <server>.txt
# (bench output), <server>.log (server log), <server>.metrics.txt (Prometheus metrics after
# the sweep), curves.png (latency percentiles and goodput vs rate, both servers),
# cdf-rate-R.png (TTFT/TPOT CDFs per rate), summary.txt (printed at the end), env.txt,
# load.txt (the machine's load before each server's sweep), commands.txt.
set -euo pipefail

MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA=${LLAMA:-$HOME/.cache/brisk-peers/llama.cpp-build/bin/llama-server}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
RATES=${RATES:-0.25,0.5,1,2}
NUM_REQUESTS=${NUM_REQUESTS:-100}
SCALE=${SCALE:-0.25}
MAX_PROMPT=${MAX_PROMPT:-2048}
MAX_OUTPUT=${MAX_OUTPUT:-256}
SLO=${SLO:-ttft=2000,tpot=200}
PARALLEL=${PARALLEL:-16}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
SERVERS=${SERVERS:-brisk llama}
PORT=${PORT:-8111}
OUT=${1:-bench/results/azure-$(date -u +%Y%m%dT%H%M%SZ)}

for f in "$MODEL" "$TRACE" "$BRISK"; do
  [ -e "$f" ] || { echo "missing $f (see the header of $0)" >&2; exit 1; }
done
case " $SERVERS " in *" llama "*)
  [ -x "$LLAMA" ] || { echo "missing $LLAMA: build it with ../shared/peers/build-llama-server.sh" >&2; exit 1; };;
esac
mkdir -p "$OUT"
SLOT_CTX=$((MAX_PROMPT + MAX_OUTPUT))
KV_TOKENS=$((PARALLEL * SLOT_CTX))

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
  echo "model: $MODEL ($(stat -c %s "$MODEL") bytes)"
  echo "trace: $TRACE"
  echo "rates: $RATES  requests/rate: $NUM_REQUESTS  scale: $SCALE  max prompt/output: $MAX_PROMPT/$MAX_OUTPUT"
  echo "slo: $SLO  parallel: $PARALLEL  threads: $THREADS  kv tokens: $KV_TOKENS  seed: $SEED"
} >"$OUT/env.txt"
cat "$OUT/env.txt"

SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT

start_server() {  # name
  local log="$OUT/$1.log"
  : >"$log"
  case $1 in
    brisk)
      start_bg "$PORT" "$log" env BRISK_THREADS="$THREADS" "$BRISK" serve --model "$MODEL" \
        --port "$PORT" --max-num-seqs "$PARALLEL" --kv-cache-tokens "$KV_TOKENS"
      ;;
    llama)
      start_bg "$PORT" "$log" "$LLAMA" -m "$MODEL" --host 127.0.0.1 --port "$PORT" \
        -np "$PARALLEL" -c "$KV_TOKENS" -t "$THREADS" --metrics
      ;;
    *) echo "unknown server $1 (brisk or llama)" >&2; exit 1;;
  esac
  # Warm up (first-request allocations, page cache) outside the measurement.
  curl -s -o /dev/null "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Hello", "max_tokens": 4}'
}

for name in $SERVERS; do
  start_server "$name"
  wait_quiet "$name"
  cmd=("$BRISK" bench --url "http://127.0.0.1:$PORT" --trace "$TRACE" --num-requests "$NUM_REQUESTS"
       --scale-lengths "$SCALE" --max-prompt-tokens "$MAX_PROMPT" --max-output-tokens "$MAX_OUTPUT"
       --sweep-rates "$RATES" --slo "$SLO" --seed "$SEED" --no-progress --output "$OUT/$name.json")
  echo "${cmd[*]}" >>"$OUT/commands.txt"
  echo "== $name: ${cmd[*]}"
  "${cmd[@]}" >"$OUT/$name.txt" 2>&1 || { echo "bench against $name failed; see $OUT/$name.txt" >&2; exit 1; }
  curl -s "http://127.0.0.1:$PORT/metrics" >"$OUT/$name.metrics.txt" || true
  stop_server
done

# Plots: the curves of every server on one figure, and the CDFs at each rate.
names=($SERVERS)
sweeps=()
for n in "${names[@]}"; do sweeps+=("$OUT/$n.json"); done
labels=$(echo "${names[*]}" | sed 's/llama/llama-server/; s/ /,/g')
"$BRISK" bench plot "${sweeps[@]}" --labels "$labels" --output "$OUT/curves.png" >/dev/null
IFS=, read -r -a rates <<<"$RATES"
for r in "${rates[@]}"; do
  reports=()
  for n in "${names[@]}"; do
    reports+=("$(jq -r --argjson r "$r" '.points[] | select(.rate == $r) | .report' "$OUT/$n.json")")
  done
  "$BRISK" bench plot "${reports[@]}" --labels "$labels" --output "$OUT/cdf-rate-$r.png" >/dev/null
done

# Summary: one row per rate and server, then capacities.
{
  echo "Azure conversation trace, first $NUM_REQUESTS requests, lengths x$SCALE (prompt <= $MAX_PROMPT, output <= $MAX_OUTPUT), SLO $SLO"
  printf '%-8s %-13s %10s %9s %9s %11s %11s %11s %7s %7s\n' rate server "tput r/s" "goodput" "attain" "p50 ttft" "p99 ttft" "p99 tpot" failed ignored
  for r in "${rates[@]}"; do
    for n in "${names[@]}"; do
      report=$(jq -r --argjson r "$r" '.points[] | select(.rate == $r) | .report' "$OUT/$n.json")
      jq -r --arg r "$r" --arg n "$n" \
        '[$r, $n, (.request_throughput*100|round/100), (.request_goodput*100|round/100),
          ((.slo_attainment*1000|round)/10|tostring + "%"), (.median_ttft_ms|round), (.p99_ttft_ms|round),
          (.p99_tpot_ms|round), .failed, .ignored_length_requests] | @tsv' "$report" |
        awk -F'\t' '{printf "%-8s %-13s %10s %9s %9s %11s %11s %11s %7s %7s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
    done
  done
  for n in "${names[@]}"; do
    echo "capacity ($n, attainment >= 90%): $(jq -r 'if .capacity then "\(.capacity) req/s" else "no rate kept it" end' "$OUT/$n.json")"
  done
  echo "latency/ms; ignored = completed requests shorter than asked (ignore_eos/min_tokens not honoured)"
  echo "files: $OUT"
} | tee "$OUT/summary.txt"
