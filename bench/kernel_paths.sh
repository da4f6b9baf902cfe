#!/usr/bin/env bash
# Issue 18: brisk's kernel paths (AVX2, AVX-512 VNNI, AMX) against each other and against
# llama.cpp's llama-server, on this machine, in one run, same GGUF, same threads.
#
#   bench/kernel_paths.sh [OUTDIR]          # default /tmp/kernel-paths-<utc timestamp>
#
# 1. step_bench per path (prefill 512, decode batches 1/4/16/64) and llama-bench
#    (pp512, pp2048, tg128);
# 2. serving, 16 streams (70-token prompts, 64 output tokens, 32 requests), REPS times:
#    brisk with the detected path, brisk with BRISK_KERNELS=avx2, llama-server;
# 3. prefill of a ~1,500-word prompt (2,000 tokens, 1 output token, one at a time):
#    the same three servers.
# llama.cpp 0c1e570's AMX path crashes on the Sapphire Rapids VMs seen here, so llama-server
# and llama-bench run with repacking off (--no-repack); that is their AVX-512 VNNI path.
# Raw outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
# Run after `cargo build --release -p brisk -p brisk-backend --example step_bench`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_BIN=${LLAMA_BIN:-$HOME/.cache/brisk-peers/llama.cpp-build/bin}
BRISK=${BRISK:-target/release/brisk}
STEP=${STEP:-target/release/examples/step_bench}
REPS=${REPS:-2}
PATHS=${PATHS:-avx2 avx512-vnni amx}
OUT=${1:-/tmp/kernel-paths-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT

describe_machine | tee "$OUT/machine.txt"

for p in $PATHS; do
  wait_quiet "step $p"
  BRISK_KERNELS=$p "$STEP" "$MODEL" 5 >"$OUT/step-$p.txt" 2>&1
  tail -n 5 "$OUT/step-$p.txt"
done
wait_quiet llama-bench
"$LLAMA_BIN/llama-bench" -m "$MODEL" -p 512,2048 -n 128 -t 2 -r 3 --repack 0 -o md \
  >"$OUT/llama-bench.md" 2>/dev/null
cat "$OUT/llama-bench.md"

start_brisk() {  # name, port, env...
  local name=$1 port=$2; shift 2
  start_bg "$port" "$OUT/server-$name.log" env "$@" "$BRISK" serve --model "$MODEL" --port "$port"
}
start_llama() {  # port, slots, context
  start_bg "$1" "$OUT/server-llama.log" "$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 \
    --port "$1" -np "$2" -c "$3" -t 2 --no-repack
}
run() {  # name, port, bench args...
  local name=$1 port=$2; shift 2
  wait_quiet "$name"
  "$BRISK" bench --url "http://127.0.0.1:$port" --no-progress --output "$OUT/$name.json" "$@" \
    >"$OUT/$name.txt" 2>&1
}
STREAMS=(--synthetic prompt=70,output=64 --num-requests 32 --max-concurrency 16)
PREFILL=(--synthetic prompt=2000,output=1 --num-requests 5 --max-concurrency 1)

for rep in $(seq 1 "$REPS"); do
  start_brisk auto 8201 BRISK_KERNELS=auto
  run "streams-auto-$rep" 8201 "${STREAMS[@]}"
  [ "$rep" = 1 ] && run prefill-auto 8201 "${PREFILL[@]}"
  stop_server
  start_brisk avx2 8202 BRISK_KERNELS=avx2
  run "streams-avx2-$rep" 8202 "${STREAMS[@]}"
  [ "$rep" = 1 ] && run prefill-avx2 8202 "${PREFILL[@]}"
  stop_server
  start_llama 8203 16 16384
  run "streams-llama-$rep" 8203 "${STREAMS[@]}"
  stop_server
done
start_llama 8204 1 4096
run prefill-llama 8204 "${PREFILL[@]}"
stop_server

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    return json.loads((out / f"{name}.json").read_text())
for name in sorted(p.stem for p in out.glob("streams-*.json")):
    r = load(name)
    print(f"{name:22s} output tok/s {r['output_throughput']:8.1f}  tpot p50 {r['median_tpot_ms']:6.1f}"
          f" p99 {r['p99_tpot_ms']:6.1f} ms  completed {r['completed']}/{r['num_requests']}")
for name in sorted(p.stem for p in out.glob("prefill-*.json")):
    r = load(name)
    print(f"{name:22s} ttft p50 {r['median_ttft_ms']:8.1f} ms  p99 {r['p99_ttft_ms']:8.1f}"
          f"  completed {r['completed']}/{r['num_requests']}")
EOF
