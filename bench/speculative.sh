#!/usr/bin/env bash
# Issue 19: speculative decoding (prompt lookup) against plain decoding, one run, two servers
# of the same model side by side (one with --speculative-config), used one at a time:
#   1. one stream, greedy, copy-heavy and plain chat prompts: TPOT and identical texts
#      (bench/speculative.py);
#   2. 16 concurrent streams of ShareGPT prompts: output throughput (the latency model must
#      switch speculation off where it does not pay);
#   3. a low-rate Azure conversation trace: TPOT p50/p99.
#
#   bench/speculative.sh [OUTDIR]        # default /tmp/speculative-<utc timestamp>
#
# Knobs: SPEC (vLLM JSON), ROUNDS (per prompt in 1), STREAMS and NUM_REQUESTS (2), RATE and
# TRACE_REQUESTS (3), BRISK_THREADS (default: every core). Raw outputs stay out of git; the
# summary goes into BENCHMARKS.md by hand. Run after `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
SPEC=${SPEC:-'{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'}
ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-16}
NUM_REQUESTS=${NUM_REQUESTS:-64}
RATE=${RATE:-0.5}
TRACE_REQUESTS=${TRACE_REQUESTS:-60}
PROMPTS=${PROMPTS:-../shared/workloads/prompts/sharegpt_v3_filtered_first_turn_1000.json}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
OUT=${1:-/tmp/speculative-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_pids EXIT
describe_machine >"$OUT/machine.txt"
echo "spec: $SPEC" >>"$OUT/machine.txt"
PLAIN=8481
SPECP=8482
SPID=
start_bg "$PLAIN" "$OUT/plain-server.log" "$BRISK" serve --model "$MODEL" --port "$PLAIN" || exit 1
PIDS+=("$SPID")
start_bg "$SPECP" "$OUT/spec-server.log" "$BRISK" serve --model "$MODEL" --port "$SPECP" \
  --speculative-config "$SPEC" || exit 1
PIDS+=("$SPID")
NAME=$(curl -s "http://127.0.0.1:$PLAIN/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')

wait_quiet one-stream
python3 bench/speculative.py "http://127.0.0.1:$PLAIN/v1" "http://127.0.0.1:$SPECP/v1" "$NAME" "$ROUNDS" \
  | tee "$OUT/one-stream.jsonl"

for side in plain spec; do
  port=$PLAIN
  [ "$side" = spec ] && port=$SPECP
  wait_quiet "streams-$side"
  "$BRISK" bench --url "http://127.0.0.1:$port" --endpoint chat --prompts "$PROMPTS" \
    --synthetic "prompt=uniform:32:512,output=128" --max-concurrency "$STREAMS" \
    --num-requests "$NUM_REQUESTS" --seed 0 --no-progress \
    -o "$OUT/streams-$side.json" >"$OUT/streams-$side.log" 2>&1
  wait_quiet "trace-$side"
  "$BRISK" bench --url "http://127.0.0.1:$port" --trace "$TRACE" --scale-lengths 0.25 \
    --max-prompt-tokens 2048 --max-output-tokens 256 --rate "$RATE" --num-requests "$TRACE_REQUESTS" \
    --seed 0 --no-progress -o "$OUT/trace-$side.json" >"$OUT/trace-$side.log" 2>&1
done
curl -s "http://127.0.0.1:$SPECP/metrics" | grep '^brisk_spec_decode' >"$OUT/spec-metrics.txt"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
r = {f"{w}-{s}": json.load(open(f"{out}/{w}-{s}.json")) for w in ("streams", "trace") for s in ("plain", "spec")}
tp = lambda x: x["output_throughput"]
print(json.dumps({"streams_output_tok_s_plain": round(tp(r["streams-plain"]), 1),
                  "streams_output_tok_s_spec": round(tp(r["streams-spec"]), 1),
                  "streams_ratio": round(tp(r["streams-spec"]) / tp(r["streams-plain"]), 3)}))
for s in ("plain", "spec"):
    t = r[f"trace-{s}"]
    print(json.dumps({"trace": s, "median_tpot_ms": round(t["median_tpot_ms"], 1),
                      "p99_tpot_ms": round(t["p99_tpot_ms"], 1), "median_ttft_ms": round(t["median_ttft_ms"], 1)}))
PY
cat "$OUT/spec-metrics.txt"
