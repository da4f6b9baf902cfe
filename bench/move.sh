#!/usr/bin/env bash
# Issue 13: moving a running request between two `brisk serve` processes on this machine.
# For each context (prompt tokens) and KV cache type: a streamed completion on replica A
# (64 output tokens), moved to replica B after its 4th token; reports the bytes moved, the
# pause the source measured (export → destination accepted), the client's largest gap
# between two tokens around the move against its median gap, and whether the text matches
# an undisturbed run.
#
#   bench/move.sh [OUTDIR]          # default /tmp/move-<utc timestamp>
#
# Raw outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
# Run after `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
CONTEXTS=${CONTEXTS:-1024 4096}
DTYPES=${DTYPES:-f32 int8}
OUT=${1:-/tmp/move-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_pids EXIT
describe_machine | tee "$OUT/machine.txt"

for dtype in $DTYPES; do
  for port in 8401 8402; do
    start_bg "$port" "$OUT/server-$dtype-$port.log" env BRISK_THREADS=1 "$BRISK" serve \
      --model "$MODEL" --port $port --kv-cache-dtype "$dtype" --max-model-len 8192 \
      --kv-cache-tokens 16384
    PIDS+=("$SPID")
  done
  for context in $CONTEXTS; do
    python3 - "$context" "$dtype" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys, threading, time, urllib.request
context, dtype = int(sys.argv[1]), sys.argv[2]
A, B = "http://127.0.0.1:8401", "http://127.0.0.1:8402"
prompt = [100 + (i * 37) % 20000 for i in range(context)]
def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=600)
body = {"prompt": prompt, "max_tokens": 64, "ignore_eos": True, "temperature": 0}
want = json.load(post(A + "/v1/completions", body))["choices"][0]["text"]
resp = post(A + "/v1/completions", dict(body, stream=True))
times, text, moved = [], "", {}
def move():
    ids = json.load(urllib.request.urlopen(A + "/internal/v1/requests"))["requests"]
    moved.update(json.load(post(A + f"/internal/v1/requests/{ids[0]}/move", {"to": B})))
for raw in resp:
    line = raw.decode().strip()
    if not line.startswith("data: ") or line == "data: [DONE]":
        continue
    times.append(time.perf_counter())
    text += json.loads(line[6:])["choices"][0]["text"]
    if len(times) == 4:
        threading.Thread(target=move).start()
gaps = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
print(f"context {context:5d} {dtype:4s} kv {moved.get('kv_bytes', 0)/1e6:7.1f} MB  "
      f"source pause {moved.get('pause_ms', float('nan')):7.1f} ms  "
      f"client gap max {max(gaps):7.1f} ms (median {statistics.median(gaps):5.1f})  "
      f"same text {text == want}")
PY
  done
  stop_pids
done
