#!/usr/bin/env bash
# Issue 15: priority placement and priority-triggered live migration, real. Two `brisk
# serve` replicas (one compute thread each) behind `brisk route`, on the Azure conversation
# trace's lengths (scaled by SCALE) with BATCH_SHARE of the requests in a `batch` class
# (TTFT 60 s, TPOT 1 s, sent as `"priority": "batch"`) and the rest interactive (TTFT 2 s,
# TPOT TPOT ms); each MODE in turn, interleaved and repeated (RUNS rounds):
#   off        the router as it is by default
#   placement  --priority-placement (batch prompts avoid replicas serving interactive work)
#   migration  --priority-migration (that, and batch decodes move off a replica an
#              interactive request is routed to)
# Reports per class: SLO attainment, TTFT and TPOT p99, and the migrations made.
#
#   bench/priority.sh [OUTDIR]        # default /tmp/priority-<utc timestamp>
#
# Knobs (env): RATE (3, requests/s), NUM (240), SCALE (0.1), BATCH_SHARE (0.8), TPOT (150),
# BURSTINESS (gamma shape; default Poisson), MODES ("off placement migration"), RUNS (2).
# Raw outputs stay out of git; the summary goes into BENCHMARKS.md by hand. Run after
# `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
RATE=${RATE:-3}
NUM=${NUM:-240}
SCALE=${SCALE:-0.1}
BATCH_SHARE=${BATCH_SHARE:-0.8}
TPOT=${TPOT:-150}
BURSTINESS=${BURSTINESS:-}
MODES=${MODES:-off placement migration}
RUNS=${RUNS:-2}
OUT=${1:-/tmp/priority-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_pids EXIT
describe_machine | tee "$OUT/machine.txt"
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"
ARGS=(--lengths "$LENGTHS" --scale-lengths "$SCALE" --num-requests "$NUM" --rate "$RATE"
  --slo "ttft=2000,tpot=$TPOT" --slo-class "batch:ttft=60000,tpot=1000,share=$BATCH_SHARE"
  --send-slo --seed 0 --no-progress)
[ -n "$BURSTINESS" ] && ARGS+=(--burstiness "$BURSTINESS")
sample() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {v=$2} END {print v+0}'
}
for round in $(seq "$RUNS"); do
  for mode in $MODES; do
    run=$mode-$round
    wait_quiet "$run"
    for port in 8821 8822; do
      start_bg "$port" "$OUT/replica-$run-$port.log" env BRISK_THREADS=1 "$BRISK" serve \
        --model "$MODEL" --port "$port"
      PIDS+=("$SPID")
    done
    extra=()
    [ "$mode" = placement ] && extra=(--priority-placement)
    [ "$mode" = migration ] && extra=(--priority-migration)
    start_bg 8820 "$OUT/router-$run.log" "$BRISK" route --port 8820 \
      --replica http://127.0.0.1:8821 --replica http://127.0.0.1:8822 "${extra[@]}"
    PIDS+=("$SPID")
    "$BRISK" bench --url http://127.0.0.1:8820 "${ARGS[@]}" --output "$OUT/$run.json" \
      >"$OUT/$run.txt" 2>&1
    migrations=$(sample 8820 'brisk_router_migrations_total{reason="priority"}')
    python3 - "$OUT/$run.json" "$mode" "$round" "$migrations" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, mode, round_, migrations = sys.argv[1:]
r = json.load(open(path))
row = {"mode": mode, "round": int(round_), "migrations": int(float(migrations)),
       "completed": r["completed"], "failed": r["failed"]}
for c in r.get("slo_classes") or []:
    row[c["name"]] = {"attainment": round(c["slo_attainment"], 3),
                      "ttft_p99_ms": round(c["p99_ttft_ms"]), "tpot_p99_ms": round(c["p99_tpot_ms"], 1),
                      "tpot_p50_ms": round(c["median_tpot_ms"], 1)}
print(json.dumps(row))
PY
    stop_pids
  done
done
