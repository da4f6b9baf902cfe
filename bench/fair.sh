#!/usr/bin/env bash
# Issue 17 (b): a client flooding the server with long prompts beside a light client with short
# interactive requests, real and simulated. One `brisk bench` run per server variant offers
# both clients' traffic (`--send-user`: each SLO class is one client, sent as `user`;
# `--send-slo`: each request carries its class's objective), then `brisk sim` replays the same
# arguments on its virtual clock. Prints, per variant and side (real, sim), the light client's
# attainment and latencies and the flood's throughput.
#
#   bench/fair.sh [OUTDIR]                   # default /tmp/fair-<utc timestamp>
#
# Variants (env VARIANTS, `label=policy:fair|nofair[:quantum]` separated by spaces) default
# to FCFS and SLO, each with and without fair share; a quantum sets --fair-share-quantum. Knobs: DURATION (s), RATE (both clients, req/s),
# FLOOD_SHARE (the flood's share of requests), PROMPT_FLOOD, PROMPT_LIGHT, OUT (output tokens),
# LIGHT_TTFT_MS, LIGHT_TPOT_MS, FLOOD_TTFT_MS, FLOOD_TPOT_MS, LATENCY (the model the slo policy
# and the simulator use), BRISK_THREADS (default 1). Raw outputs stay out of git; the summary
# goes into BENCHMARKS.md by hand. Run after `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
VARIANTS=${VARIANTS:-fcfs=fcfs:nofair fcfs-fair=fcfs:fair slo=slo:nofair slo-fair=slo:fair}
DURATION=${DURATION:-90}
RATE=${RATE:-1.0}
FLOOD_SHARE=${FLOOD_SHARE:-0.5}
PROMPT_FLOOD=${PROMPT_FLOOD:-1600}
PROMPT_LIGHT=${PROMPT_LIGHT:-50}
OUT_TOKENS=${OUT_TOKENS:-64}
LIGHT_TTFT_MS=${LIGHT_TTFT_MS:-1000}
LIGHT_TPOT_MS=${LIGHT_TPOT_MS:-150}
FLOOD_TTFT_MS=${FLOOD_TTFT_MS:-10000}
FLOOD_TPOT_MS=${FLOOD_TPOT_MS:-150}
LATENCY=${LATENCY:?set LATENCY to a latency model profiled on this machine (brisk profile)}
export BRISK_THREADS=${BRISK_THREADS:-1}
OUT=${1:-/tmp/fair-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT
describe_machine >"$OUT/machine.txt"
ARGS=(--synthetic "prompt=mix:$PROMPT_FLOOD:$PROMPT_LIGHT:$FLOOD_SHARE,output=$OUT_TOKENS"
  --rate "$RATE" --duration "$DURATION" --num-requests 100000 --seed 4 --no-progress
  --slo-class "flood:ttft=$FLOOD_TTFT_MS,tpot=$FLOOD_TPOT_MS,min-prompt=$(((PROMPT_FLOOD + PROMPT_LIGHT) / 2))"
  --slo-class "light:ttft=$LIGHT_TTFT_MS,tpot=$LIGHT_TPOT_MS" --send-slo --send-user)
PORT=8473
for variant in $VARIANTS; do
  label=${variant%%=*}
  rest=${variant#*=}
  IFS=: read -r policy fair quantum <<<"$rest"
  flags=(--scheduling-policy "$policy" --latency-model "$LATENCY")
  [ "$fair" = nofair ] && flags+=(--no-fair-share)
  [ -n "$quantum" ] && flags+=(--fair-share-quantum "$quantum")
  wait_quiet "$label"
  start_bg "$PORT" "$OUT/$label-server.log" "$BRISK" serve --model "$MODEL" --port "$PORT" \
    "${flags[@]}" || exit 1
  "$BRISK" bench --url "http://127.0.0.1:$PORT" "${ARGS[@]}" -o "$OUT/$label-real.json" \
    >"$OUT/$label-real.log" 2>&1
  stop_server
  "$BRISK" sim "${ARGS[@]}" "${flags[@]}" -o "$OUT/$label-sim.json" >"$OUT/$label-sim.log" 2>&1
  for side in real sim; do
    python3 - "$OUT/$label-$side.json" "$label" "$side" <<'PY'
import json, sys
r, label, side = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
light = next(c for c in r["slo_classes"] if c["name"] == "light")
flood = [q for q in r["requests"] if q["slo_class"] == "flood" and q.get("error") is None]
lat = light
print(json.dumps({"variant": label, "side": side,
    "light_requests": light["num_requests"], "light_attainment": round(light["slo_attainment"], 3),
    "light_ttft_p50_ms": round(lat.get("median_ttft_ms", float("nan")), 1),
    "light_ttft_p99_ms": round(lat.get("p99_ttft_ms", float("nan")), 1),
    "light_tpot_p50_ms": round(lat.get("median_tpot_ms", float("nan")), 1),
    "flood_done": len(flood), "flood_failed": sum(1 for q in r["requests"] if q["slo_class"] == "flood") - len(flood),
    "flood_output_tok_s": round(sum(q["output_len"] for q in flood) / r["duration"], 1)}))
PY
  done
done | tee "$OUT/summary.jsonl"
