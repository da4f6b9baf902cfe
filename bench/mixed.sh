#!/usr/bin/env bash
# Issue 17 (a): long best-effort prompts beside short interactive requests on one server.
# Two `brisk bench` runs at once against each server variant: best effort (PROMPT_BE-token
# prompts at RATE_BE req/s, `priority: "batch"`) and interactive (PROMPT_IA-token prompts at
# RATE_IA req/s with the objective `slo` ttft=TTFT_MS, tpot=TPOT_MS sent in each request).
# Prints, per variant, the interactive requests' attainment and TTFT p50/p99 and the best-effort
# output throughput.
#
#   bench/mixed.sh [OUTDIR]                   # default /tmp/mixed-<utc timestamp>
#
# Variants (env VARIANTS, `label=binary:policy` separated by spaces) default to this build under
# fcfs and slo; add `before=/tmp/brisk-before:slo` to compare with an older binary. Knobs:
# DURATION (s), RATE_BE, RATE_IA, PROMPT_BE, PROMPT_IA, OUT_BE, OUT_IA, TTFT_MS, TPOT_MS,
# LATENCY (the model the slo policy uses), BRISK_THREADS (default 1). Raw outputs stay out of
# git; the summary goes into BENCHMARKS.md by hand. Run after `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
VARIANTS=${VARIANTS:-fcfs=$BRISK:fcfs slo=$BRISK:slo}
DURATION=${DURATION:-90}
RATE_BE=${RATE_BE:-0.5}
RATE_IA=${RATE_IA:-2.5}
PROMPT_BE=${PROMPT_BE:-1600}
PROMPT_IA=${PROMPT_IA:-50}
OUT_BE=${OUT_BE:-32}
OUT_IA=${OUT_IA:-64}
TTFT_MS=${TTFT_MS:-1000}
TPOT_MS=${TPOT_MS:-150}
LATENCY=${LATENCY:?set LATENCY to a latency model profiled on this machine (brisk profile)}
export BRISK_THREADS=${BRISK_THREADS:-1}
OUT=${1:-/tmp/mixed-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT
describe_machine >"$OUT/machine.txt"
PORT=8471
for variant in $VARIANTS; do
  label=${variant%%=*}
  rest=${variant#*=}
  binary=${rest%%:*}
  policy=${rest##*:}
  wait_quiet "$label"
  start_bg "$PORT" "$OUT/$label-server.log" "$binary" serve --model "$MODEL" --port "$PORT" \
    --scheduling-policy "$policy" --latency-model "$LATENCY" || exit 1
  url=http://127.0.0.1:$PORT
  "$BRISK" bench --url "$url" --synthetic "prompt=$PROMPT_BE,output=$OUT_BE" --rate "$RATE_BE" \
    --duration "$DURATION" --num-requests 100000 --seed 1 --no-progress \
    --request-field 'priority="batch"' -o "$OUT/$label-best-effort.json" >"$OUT/$label-be.log" 2>&1 &
  be=$!
  "$BRISK" bench --url "$url" --synthetic "prompt=$PROMPT_IA,output=$OUT_IA" --rate "$RATE_IA" \
    --duration "$DURATION" --num-requests 100000 --seed 2 --no-progress \
    --slo "ttft=$TTFT_MS,tpot=$TPOT_MS" \
    --request-field "slo={\"ttft_ms\": $TTFT_MS, \"tpot_ms\": $TPOT_MS}" \
    -o "$OUT/$label-interactive.json" >"$OUT/$label-ia.log" 2>&1
  wait "$be"
  stop_server
  python3 - "$OUT/$label-interactive.json" "$OUT/$label-best-effort.json" "$label" <<'PY'
import json, sys
ia, be, label = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
lat = ia
print(json.dumps({"variant": label, "interactive_requests": ia["completed"],
    "interactive_attainment": round(ia["slo_attainment"], 3),
    "interactive_ttft_p50_ms": round(lat.get("median_ttft_ms", float("nan")), 1),
    "interactive_ttft_p99_ms": round(lat.get("p99_ttft_ms", float("nan")), 1),
    "interactive_tpot_p50_ms": round(lat.get("median_tpot_ms", float("nan")), 1),
    "best_effort_requests": be["completed"], "best_effort_failed": be["failed"],
    "best_effort_output_tok_s": round(be["output_throughput"], 1)}))
PY
done | tee "$OUT/summary.jsonl"
