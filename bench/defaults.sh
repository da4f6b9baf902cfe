#!/usr/bin/env bash
# Issue 17 (0): what a user gets without flags. `brisk serve` with no scheduling flags (the
# `slo` policy, its kept quick latency model, 150 ms default TPOT, 2,048-token budget, fair
# share) against the previous default spelled out (`--scheduling-policy fcfs
# --max-num-batched-tokens 512`), on the Azure conversation trace and a gamma-burst variant of
# it, at rising rates; every compute thread the machine has, as a user would run it. Judged
# against SLO (default TTFT 2 s, TPOT 150 ms). Then `brisk sim` plays the same arguments with
# each variant's settings (requests carry the objective they are judged by).
#
#   bench/defaults.sh [OUTDIR]                # default /tmp/defaults-<utc timestamp>
#
# Knobs: WORKLOADS (default "azure burst"; the simulator always plays both), RATES (comma
# list, req/s), BURST_RATES, NUM_REQUESTS (per rate), SCALE
# (--scale-lengths), SLO, LATENCY (the latency model for the simulator; default: the one the
# new default server kept). Raw outputs stay out of git; the summary goes into BENCHMARKS.md by
# hand. Run after `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
RATES=${RATES:-1,2,3,4}
BURST_RATES=${BURST_RATES:-0.5,1,2,3}
NUM_REQUESTS=${NUM_REQUESTS:-80}
SCALE=${SCALE:-0.25}
SLO=${SLO:-ttft=2000,tpot=150}
OUT=${1:-/tmp/defaults-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT
describe_machine >"$OUT/machine.txt"
PORT=8474
declare -A FLAGS=([before]="--scheduling-policy fcfs --max-num-batched-tokens 512" [default]="")
# The gamma burst: the trace's lengths (as a length-sample CSV made from it, under $OUT) with
# gamma arrivals of shape 0.25 (--burstiness); the trace itself replays its own arrivals.
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"
workload_args() {
  if [ "$1" = azure ]; then
    ARGS=(--trace "$TRACE" --sweep-rates "$RATES")
  else
    ARGS=(--lengths "$LENGTHS" --burstiness 0.25 --sweep-rates "$BURST_RATES")
  fi
  ARGS+=(--scale-lengths "$SCALE" --num-requests "$NUM_REQUESTS" --slo "$SLO" --seed 0 --no-progress)
}
WORKLOADS=${WORKLOADS:-azure burst}
for workload in $WORKLOADS; do
  workload_args "$workload"
  for variant in before default; do
    [ "${REAL:-1}" = 0 ] && continue
    wait_quiet "$workload-$variant"
    # shellcheck disable=SC2086
    start_bg "$PORT" "$OUT/$workload-$variant-server.log" "$BRISK" serve --model "$MODEL" \
      --port "$PORT" ${FLAGS[$variant]} || exit 1
    "$BRISK" bench --url "http://127.0.0.1:$PORT" "${ARGS[@]}" \
      -o "$OUT/$workload-$variant-real.json" >"$OUT/$workload-$variant-real.log" 2>&1
    stop_server
  done
done
# The simulator, with the latency model the default server kept (or LATENCY).
LATENCY=${LATENCY:-$(grep -o '/[^ ]*latency/[^ ]*\.json' "$OUT/azure-default-server.log" | head -1)}
for workload in azure burst; do
  workload_args "$workload"
  "$BRISK" sim --latency-model "$LATENCY" "${ARGS[@]}" --scheduling-policy fcfs \
    --max-num-batched-tokens 512 -o "$OUT/$workload-before-sim.json" >"$OUT/$workload-before-sim.log" 2>&1
  "$BRISK" sim --latency-model "$LATENCY" "${ARGS[@]}" --scheduling-policy slo \
    --max-num-batched-tokens 2048 -o "$OUT/$workload-default-sim.json" >"$OUT/$workload-default-sim.log" 2>&1
done
python3 - "$OUT" <<'PY' | tee "$OUT/summary.jsonl"
import glob, json, os, sys
out = sys.argv[1]
for path in sorted(glob.glob(os.path.join(out, "*-*-*.rate-*.json"))):
    name = os.path.basename(path)
    workload, variant, side = name.split(".")[0].split("-")
    r = json.load(open(path))
    lat = r
    print(json.dumps({"workload": workload, "variant": variant, "side": side, "rate": r["rate"],
        "attainment": round(r["slo_attainment"], 3), "completed": r["completed"],
        "ttft_p50_ms": round(lat["median_ttft_ms"], 1), "ttft_p99_ms": round(lat["p99_ttft_ms"], 1),
        "tpot_p50_ms": round(lat["median_tpot_ms"], 1), "tpot_p99_ms": round(lat["p99_tpot_ms"], 1),
        "output_tok_s": round(r["output_throughput"], 1)}))
PY
