#!/usr/bin/env bash
# Issue 17 (c), real: capacity on ServeGen's multi-client workload (DeepSeek-R1 client
# statistics, each client sent as `user`) and on a gamma burst of the Azure trace's lengths,
# for the old default (`fcfs`, 512-token budget, no fair share), `slo` without fair share,
# today's default (`slo` with fair share), and the slo policy as it was before issue 17
# (`slo-before`: `--scheduling-policy slo` of the binary BRISK_BEFORE, built from 25fa3d9),
# one sweep of fixed rates per variant, then `brisk sim` on the same arguments and flags
# (not for slo-before). Capacity is the highest rate of the sweep keeping ≥ 90 % of requests
# within SLO.
#
#   bench/capacity_mix.sh [OUTDIR]            # default /tmp/capacity-mix-<utc timestamp>
#
# Knobs: WORKLOADS (default "servegen burst"), RATES (comma list, req/s), NUM_REQUESTS (per
# rate), SCALE (--scale-lengths), SLO, SEND_SLO (1, default: each request carries the SLO as
# `slo`, so every server knows the objective it is judged by; 0: the servers' defaults),
# VARIANTS (fcfs, slo, default, slo-before, and slo-blind / default-blind: the same without
# output-length prediction; a variant named again is a repeat, its files tagged -r1, -r2, …,
# and the simulator plays only its first run, being deterministic), BRISK_BEFORE, LATENCY (the latency model of slo-before and the
# simulator; default: the one today's server keeps for this model and thread count). Raw
# outputs stay out of git; the summary goes into BENCHMARKS.md by hand. Run after
# `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
SERVEGEN=${SERVEGEN:-../shared/workloads/servegen/servegen_deepseek-r1.tar.xz}
RATES=${RATES:-5,6.5,8}
NUM_REQUESTS=${NUM_REQUESTS:-300}
SCALE=${SCALE:-0.1}
SLO=${SLO:-ttft=2000,tpot=150}
VARIANTS=${VARIANTS:-fcfs slo-before default}
SEND_SLO=${SEND_SLO:-1}
BRISK_BEFORE=${BRISK_BEFORE:-../old-target/release/brisk}
LATENCY=${LATENCY:-$(ls "$HOME"/.cache/brisk/latency/*-"${BRISK_THREADS:-$(nproc)}"t-auto-f32-bs16.json | head -1)}
OUT=${1:-/tmp/capacity-mix-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT
describe_machine >"$OUT/machine.txt"
PORT=8476
declare -A FLAGS=(
  [fcfs]="--scheduling-policy fcfs --max-num-batched-tokens 512 --no-fair-share"
  [slo]="--no-fair-share"
  [default]=""
  [slo-blind]="--no-fair-share --no-output-length-prediction"
  [default-blind]="--no-output-length-prediction"
  [slo-before]="--scheduling-policy slo --latency-model $LATENCY"
)
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"
for workload in ${WORKLOADS:-servegen burst}; do
  if [ "$workload" = servegen ]; then
    ARGS=(--trace "$SERVEGEN" --send-user)
  else
    ARGS=(--lengths "$LENGTHS" --burstiness 0.25)
  fi
  ARGS+=(--sweep-rates "$RATES" --scale-lengths "$SCALE" --num-requests "$NUM_REQUESTS"
    --slo "$SLO" --seed 0 --no-progress)
  [ "$SEND_SLO" = 1 ] && ARGS+=(--send-slo)
  declare -A runs=()
  for variant in $VARIANTS; do
    repeat=${runs[$variant]:-0}
    runs[$variant]=$((repeat + 1))
    tag=$variant
    [ "$repeat" -gt 0 ] && tag=$variant-r$repeat
    wait_quiet "$workload-$tag"
    server=$BRISK
    [ "$variant" = slo-before ] && server=$BRISK_BEFORE
    # shellcheck disable=SC2086
    start_bg "$PORT" "$OUT/$workload-$tag-server.log" "$server" serve --model "$MODEL" \
      --port "$PORT" ${FLAGS[$variant]} || exit 1
    "$BRISK" bench --url "http://127.0.0.1:$PORT" "${ARGS[@]}" \
      -o "$OUT/$workload-$tag.json" >"$OUT/$workload-$tag.log" 2>&1
    stop_server
    sides=(real)
    if [ "$variant" != slo-before ] && [ "$repeat" = 0 ]; then
      # shellcheck disable=SC2086
      "$BRISK" sim --latency-model "$LATENCY" "${ARGS[@]}" ${FLAGS[$variant]} \
        -o "$OUT/$workload-$variant-sim.json" >"$OUT/$workload-$variant-sim.log" 2>&1
      sides+=(sim)
    fi
    for side in "${sides[@]}"; do
      file=$OUT/$workload-$tag.json
      [ "$side" = sim ] && file=$OUT/$workload-$variant-sim.json
      python3 - "$file" "$workload" "$tag" "$side" <<'PY'
import json, sys
s, workload, variant, side = json.load(open(sys.argv[1])), *sys.argv[2:]
points = {}
for p in s.get("points", []):
    r = p.get("latency", {})
    points[str(p["rate"])] = {"attainment": round(p["slo_attainment"], 3),
        **{k: round(r[k], 1) for k in ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms") if k in r}}
print(json.dumps({"workload": workload, "variant": variant, "side": side,
                  "capacity": s.get("capacity"), "by_rate": points}))
PY
    done
  done
done | tee "$OUT/summary.jsonl"
