#!/usr/bin/env bash
# Serving benchmarks for issue 3: brisk vs llama.cpp llama-server on the same GGUF.
# Usage: bench/serving.sh [outdir]   (run from the workspace root after `cargo build --release -p brisk`)
set -u
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA=${LLAMA:-$HOME/.cache/brisk-peers/llama.cpp-build/bin/llama-server}
BRISK=${BRISK:-target/release/brisk}
OUT=${1:-bench/results/serving-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
start_brisk() {  # port, extra args...
  local p=$1; shift
  start_bg "$p" "$OUT/brisk-$p.log" $BRISK serve --model "$MODEL" --port "$p" "$@"
}
start_llama() {
  local p=$1
  start_bg "$p" "$OUT/llama-$p.log" $LLAMA -m "$MODEL" --host 127.0.0.1 --port "$p" -np 16 -c 16384 -t 2
}
bench() {  # port, name, args...
  local p=$1 name=$2; shift 2
  wait_quiet "$name"
  $BRISK bench --url http://127.0.0.1:$p --slo ttft=2000,tpot=200 --output "$OUT/$name.json" --no-progress "$@" \
    >"$OUT/$name.txt" 2>&1
}

# (a) one stream, (b) 16 streams, interleaved brisk / llama, (b) twice.
for rep in 1 2; do
  start_brisk 8101
  [ $rep = 1 ] && bench 8101 a-brisk --synthetic prompt=70,output=64 --num-requests 8 --max-concurrency 1
  bench 8101 b$rep-brisk --synthetic prompt=70,output=64 --num-requests 32 --max-concurrency 16
  stop_server
  start_llama 8102
  [ $rep = 1 ] && bench 8102 a-llama --synthetic prompt=70,output=64 --num-requests 8 --max-concurrency 1
  bench 8102 b$rep-llama --synthetic prompt=70,output=64 --num-requests 32 --max-concurrency 16
  stop_server
done

# (c) shared 1,024-token prefix (two shared 512-token Mooncake blocks) + 32 distinct tokens, 16 output tokens.
TRACE="$OUT/shared-prefix.jsonl"
for i in $(seq 0 9); do
  echo "{\"timestamp\": $((i*1000)), \"input_length\": 1056, \"output_length\": 16, \"hash_ids\": [0, 1, $((100+i))]}"
done >"$TRACE"
for mode in on off; do
  if [ $mode = on ]; then start_brisk 8103; else start_brisk 8103 --no-prefix-caching; fi
  bench 8103 c-prefix-$mode --trace "$TRACE" --max-concurrency 1
  curl -s http://127.0.0.1:8103/metrics >"$OUT/c-prefix-$mode.metrics.txt"
  stop_server
done
echo "results in $OUT"
