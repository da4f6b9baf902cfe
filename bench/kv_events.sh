#!/usr/bin/env bash
# Issue 13: what publishing KV events costs a serving replica. The same server without
# --kv-events-config ("off"), with it and no subscriber ("pub": batches encoded and sent,
# dropped by ZMQ), and with the Python decoder subscribed ("sub": it runs on the same cores,
# as a router on the same machine would), interleaved REPS times: 16 streams of 70-token
# prompts (each request stores four blocks) and 64 output tokens, 32 requests each.
#
#   bench/kv_events.sh [OUTDIR]          # default /tmp/kv-events-<utc timestamp>
#
# Raw outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
# Run after `cargo build --release -p brisk`; needs python3 with pyzmq and msgspec.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
REPS=${REPS:-3}
OUT=${1:-/tmp/kv-events-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
SUB=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
stop_all() {
  if [ -n "$SUB" ]; then exec 3>&-; kill "$SUB" 2>/dev/null; wait "$SUB" 2>/dev/null; SUB=; fi
  stop_server
}
trap stop_all EXIT
describe_machine | tee "$OUT/machine.txt"

EVENTS='{"enable_kv_cache_events": true, "endpoint": "tcp://*:5561", "replay_endpoint": "tcp://*:5562"}'
STREAMS=(--synthetic prompt=70,output=64 --num-requests 32 --max-concurrency 16)
run() {  # name, port
  wait_quiet "$1"
  "$BRISK" bench --url "http://127.0.0.1:$2" --no-progress --output "$OUT/$1.json" "${STREAMS[@]}" \
    >"$OUT/$1.txt" 2>&1
}
for rep in $(seq 1 "$REPS"); do
  start_bg 8301 "$OUT/server-off.log" "$BRISK" serve --model "$MODEL" --port 8301
  run "off-$rep" 8301
  stop_server
  start_bg 8303 "$OUT/server-pub.log" "$BRISK" serve --model "$MODEL" --port 8303 \
    --kv-events-config "$EVENTS"
  run "pub-$rep" 8303
  stop_server
  start_bg 8302 "$OUT/server-sub.log" "$BRISK" serve --model "$MODEL" --port 8302 \
    --kv-events-config "$EVENTS"
  # The decoder reports when a line arrives on its stdin: a fifo held open, written once.
  rm -f "$OUT/sub.in" && mkfifo "$OUT/sub.in"
  python3 crates/brisk/tests/python/kv_events_subscriber.py \
    tcp://127.0.0.1:5561 tcp://127.0.0.1:5562 "" <"$OUT/sub.in" >"$OUT/subscriber-$rep.txt" 2>&1 &
  SUB=$!
  exec 3>"$OUT/sub.in"
  run "sub-$rep" 8302
  echo >&3 && sleep 1
  stop_all
done

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in sorted(p.stem for p in out.glob("*-[0-9]*.json")):
    r = json.loads((out / f"{name}.json").read_text())
    print(f"{name:8s} output tok/s {r['output_throughput']:7.1f}  tpot p50 {r['median_tpot_ms']:5.1f}"
          f" p99 {r['p99_tpot_ms']:5.1f} ms  ttft p50 {r['median_ttft_ms']:6.1f} ms"
          f"  completed {r['completed']}/{r['num_requests']}")
PY
