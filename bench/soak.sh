#!/usr/bin/env bash
# Soak test (issue 6): drives `brisk serve` at about 1.5x its capacity for DURATION seconds
# with a mix of normal, cancelled and malformed requests (`brisk bench --soak`), then checks:
# no panic, every request answered (a completion or a clean error), resident memory growth
# after the warm-up < 5 %, KV-cache usage back to where it started. Exits non-zero when a
# check fails.
#
# Usage (from the workspace root, after `cargo build --release -p brisk`):
#   bench/soak.sh [OUTDIR]             default OUTDIR: bench/results/soak-<UTC timestamp>
# Short smoke run:  DURATION=60 WARMUP=10 bench/soak.sh /tmp/soak-smoke
#
# Knobs (environment), with defaults:
#   RATE=0.75          req/s: 1.5x brisk's SLO capacity on this workload (0.5 req/s at TTFT <= 2 s,
#                      TPOT <= 200 ms; BENCHMARKS.md, "Goodput on the Azure trace"); brisk
#                      still keeps up with it. RATE=2 overloads it (queue full, 429s, timeouts).
#   DURATION=660       seconds of arrivals (the first WARMUP of them warm up): the first
#                      RATE x DURATION requests of the trace, its time axis rescaled to RATE
#   WARMUP=60          seconds before the resident-memory baseline
#   CANCEL=0.2         share of requests the client drops after 0-4 s
#   MALFORMED=0.1      share of requests replaced by malformed bodies
#   MAX_WAITING=32     brisk --max-waiting (beyond it: 429 + Retry-After)
#   TIMEOUT=120        brisk --request-timeout, seconds (beyond it: 504 / error event)
#   TRACE, SCALE, MAX_PROMPT, MAX_OUTPUT, PARALLEL, THREADS, SEED: as bench/azure.sh
# Writes OUTDIR/soak.json (report with every /metrics sample), soak.txt (summary),
# brisk.log (server log, checked for panics), metrics.txt (its /metrics at the end), env.txt,
# commands.txt.
set -euo pipefail

MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
RATE=${RATE:-0.75}
DURATION=${DURATION:-660}
WARMUP=${WARMUP:-60}
CANCEL=${CANCEL:-0.2}
MALFORMED=${MALFORMED:-0.1}
MAX_WAITING=${MAX_WAITING:-32}
TIMEOUT=${TIMEOUT:-120}
SCALE=${SCALE:-0.25}
MAX_PROMPT=${MAX_PROMPT:-2048}
MAX_OUTPUT=${MAX_OUTPUT:-256}
PARALLEL=${PARALLEL:-16}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
PORT=${PORT:-8121}
OUT=${1:-bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}

for f in "$MODEL" "$TRACE" "$BRISK"; do
  [ -e "$f" ] || { echo "missing $f (see the header of $0)" >&2; exit 1; }
done
mkdir -p "$OUT"
KV_TOKENS=$((PARALLEL * (MAX_PROMPT + MAX_OUTPUT)))
NUM_REQUESTS=$(awk -v r="$RATE" -v d="$DURATION" 'BEGIN{printf "%d", r * d + 0.5}')
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
  echo "load before: $(cat /proc/loadavg)"
  echo "rate: $RATE req/s for $DURATION s ($NUM_REQUESTS requests) (warm-up $WARMUP s)  cancel: $CANCEL  malformed: $MALFORMED"
  echo "trace: $TRACE scale $SCALE, max prompt/output $MAX_PROMPT/$MAX_OUTPUT"
  echo "brisk: --max-num-seqs $PARALLEL --kv-cache-tokens $KV_TOKENS --max-waiting $MAX_WAITING --request-timeout $TIMEOUT, threads $THREADS"
} >"$OUT/env.txt"
cat "$OUT/env.txt"

SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT

serve=("$BRISK" serve --model "$MODEL" --port "$PORT" --max-num-seqs "$PARALLEL"
       --kv-cache-tokens "$KV_TOKENS" --max-waiting "$MAX_WAITING" --request-timeout "$TIMEOUT")
echo "BRISK_THREADS=$THREADS ${serve[*]}" >"$OUT/commands.txt"
: >"$OUT/brisk.log"
start_bg "$PORT" "$OUT/brisk.log" env BRISK_THREADS="$THREADS" "${serve[@]}"

soak=("$BRISK" bench --url "http://127.0.0.1:$PORT" --trace "$TRACE" --rate "$RATE"
      --num-requests "$NUM_REQUESTS" --scale-lengths "$SCALE" --max-prompt-tokens "$MAX_PROMPT"
      --max-output-tokens "$MAX_OUTPUT" --seed "$SEED" --soak --cancel-fraction "$CANCEL"
      --malformed-fraction "$MALFORMED" --soak-warmup "$WARMUP" --request-timeout 600
      --no-progress --output "$OUT/soak.json")
echo "${soak[*]}" >>"$OUT/commands.txt"
status=0
"${soak[@]}" 2>&1 | tee "$OUT/soak.txt" || status=$?
curl -s "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics.txt" || true
kill -0 "$SPID" 2>/dev/null || { echo "FAIL: the server is gone" | tee -a "$OUT/soak.txt"; status=1; }
stop_server
if grep -q "panicked" "$OUT/brisk.log"; then
  echo "FAIL: the server log shows a panic" | tee -a "$OUT/soak.txt"
  status=1
fi
echo "wrote $OUT (exit $status)"
exit "$status"
