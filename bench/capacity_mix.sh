#!/usr/bin/env bash
# Issue 17 (c), real: capacity on ServeGen's multi-client workload (DeepSeek-R1 client
# statistics, each client sent as `user`) and on a gamma burst of the Azure trace's lengths,
# for the old default (`fcfs`, 512-token budget, no fair share), `slo` without fair share,
# and today's default (`slo` with fair share), one sweep of fixed rates per variant; the
# simulated counterpart is in BENCHMARKS.md ("Capacity on ServeGen's multi-client workload
# and a gamma burst"). Capacity is the highest rate of the sweep keeping ≥ 90 % of requests
# within SLO.
#
#   bench/capacity_mix.sh [OUTDIR]            # default /tmp/capacity-mix-<utc timestamp>
#
# Knobs: WORKLOADS (default "servegen burst"), RATES (comma list, req/s), NUM_REQUESTS (per
# rate), SCALE (--scale-lengths), SLO, VARIANTS (fcfs, slo, default, and slo-blind /
# default-blind: the same without output-length prediction). Raw outputs stay out of git; the summary goes
# into BENCHMARKS.md by hand. Run after `cargo build --release -p brisk`.
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
VARIANTS=${VARIANTS:-fcfs slo default}
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
  for variant in $VARIANTS; do
    wait_quiet "$workload-$variant"
    # shellcheck disable=SC2086
    start_bg "$PORT" "$OUT/$workload-$variant-server.log" "$BRISK" serve --model "$MODEL" \
      --port "$PORT" ${FLAGS[$variant]} || exit 1
    "$BRISK" bench --url "http://127.0.0.1:$PORT" "${ARGS[@]}" \
      -o "$OUT/$workload-$variant.json" >"$OUT/$workload-$variant.log" 2>&1
    stop_server
    python3 - "$OUT/$workload-$variant.json" "$workload" "$variant" <<'PY'
import json, sys
s, workload, variant = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
points = {str(p["rate"]): round(p["slo_attainment"], 3) for p in s.get("points", s.get("runs", []))}
print(json.dumps({"workload": workload, "variant": variant, "capacity": s.get("capacity"),
                  "attainment_by_rate": points}))
PY
  done
done | tee "$OUT/summary.jsonl"
