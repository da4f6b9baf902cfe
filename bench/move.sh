#!/usr/bin/env bash
# Issues 13 and 15: moving a running request between two `brisk serve` processes on this
# machine. For each context (prompt tokens), KV cache type and copy mode (COPIES: `stop`,
# stop-and-copy; `pre`, blocks sent ahead while it decodes, then a stop for the rest), REPEATS
# times: a streamed completion on replica A (64 output tokens), moved to replica B after its
# 4th token; reports the bytes moved at the stop and ahead, the pause the source measured
# (the stop → the stream handed off; p50 and max over the repeats), the client's largest gap
# between two tokens around the move against its median gap, and whether every text matched
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
COPIES=${COPIES:-stop pre}
REPEATS=${REPEATS:-1}
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
    for copy in $COPIES; do
    python3 - "$context" "$dtype" "$copy" "$REPEATS" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys, threading, time, urllib.request
context, dtype, copy, repeats = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
A, B = "http://127.0.0.1:8401", "http://127.0.0.1:8402"
def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=600)
pauses, gaps_max, same, ahead, stop_mb, stages = [], [], True, [], [], []
for r in range(repeats):
    # A fresh prompt each time: nothing cached at B from the run before.
    prompt = [100 + (i * 37 + r * 101) % 20000 for i in range(context)]
    body = {"prompt": prompt, "max_tokens": 64, "ignore_eos": True, "temperature": 0}
    want = json.load(post(A + "/v1/completions", body))["choices"][0]["text"]
    resp = post(A + "/v1/completions", dict(body, stream=True))
    times, text, moved = [], "", {}
    def move():
        ids = json.load(urllib.request.urlopen(A + "/internal/v1/requests"))["requests"]
        moved.update(json.load(post(A + f"/internal/v1/requests/{ids[0]}/move",
                                    {"to": B, "precopy": copy == "pre"})))
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        times.append(time.perf_counter())
        text += json.loads(line[6:])["choices"][0]["text"]
        if len(times) == 4:
            threading.Thread(target=move).start()
    gaps = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
    pauses.append(moved.get("pause_ms", float("nan")))
    gaps_max.append((max(gaps), statistics.median(gaps)))
    stop_mb.append(moved.get("kv_bytes", 0) / 1e6)
    ahead.append(moved.get("kv_bytes_ahead", 0) / 1e6)
    stages.append(moved.get("stages", 0))
    same &= text == want
p = sorted(pauses)
print(json.dumps({"context": context, "dtype": dtype, "copy": copy, "repeats": repeats,
    "pause_ms_p50": round(statistics.median(p), 1), "pause_ms_max": round(p[-1], 1),
    "kv_mb_at_stop": round(statistics.median(stop_mb), 2), "kv_mb_ahead": round(statistics.median(ahead), 1),
    "stages": stages, "client_gap_max_ms": round(max(g for g, _ in gaps_max), 1),
    "client_gap_median_ms": round(statistics.median(m for _, m in gaps_max), 1),
    "same_text": same}))
PY
    done
  done
  stop_pids
done
