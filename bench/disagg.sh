#!/usr/bin/env bash
# Issue 15: prefill/decode disaggregation on this machine. Two `brisk serve` replicas (one
# compute thread each) behind `brisk route`: colocated (`--role both` twice) against
# disaggregated (`--role prefill` + `--role decode`), on the Azure conversation trace's
# lengths with Poisson arrivals and with gamma bursts (shape 0.25), at each rate of RATES.
# For each layout, workload and rate: fresh replicas and router, one `brisk bench` run
# through the router; hand-over counts, K/V bytes and the pause a handed-over request saw
# are read from the prefill replica's metrics.
#
#   bench/disagg.sh [OUTDIR]          # default /tmp/disagg-<utc timestamp>
#   NETNS=1 bench/disagg.sh [OUTDIR]  # each replica in a network namespace of its own (root),
#                                     # its link rate-limited to LINK_RATE (tbf) both ways;
#                                     # DELAY=1ms adds a delay with netem instead, where the
#                                     # kernel has it
#
# Knobs (env): RATES (space-separated req/s), NUM (requests per run), SCALE
# (--scale-lengths), SLO, LAYOUTS ("colocated disagg"; "disagg-int8" and "disagg-int4" have
# the prefill replica send its K/V with --kv-transfer-dtype int8 / int4), WORKLOADS
# ("poisson burst"). Raw
# outputs stay out of git; the summary goes into BENCHMARKS.md by hand. Run after
# `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
RATES=${RATES:-2 3}
NUM=${NUM:-200}
SCALE=${SCALE:-0.1}
SLO=${SLO:-ttft=2000,tpot=150}
LAYOUTS=${LAYOUTS:-colocated disagg}
WORKLOADS=${WORKLOADS:-poisson burst}
NETNS=${NETNS:-0}
LINK_RATE=${LINK_RATE:-1gbit}
DELAY=${DELAY:-}  # e.g. 1ms: netem on each link instead of tbf, where the kernel has netem
OUT=${1:-/tmp/disagg-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
replica_hosts
describe_machine | tee "$OUT/machine.txt"
echo "netns: $NETNS, link rate: $LINK_RATE, delay: ${DELAY:-none}" | tee -a "$OUT/machine.txt"
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"

# Starts replica I (port 860I, on HOSTS[I-1], in its namespace with NETNS=1) in role ROLE,
# sending K/V as WIRE (default auto).
start_replica() {
  start_replica_at "$1" "860$1" "$BRISK" --role "$2" --kv-transfer-dtype "${3:-auto}"
}

# The value of one sample of the metrics of replica I (0 when absent).
sample() {
  curl -s "http://${HOSTS[$(($1 - 1))]}:860$1/metrics" | awk -v n="$2" '$1==n {v=$2} END {print v+0}'
}

for workload in $WORKLOADS; do
  ARGS=(--lengths "$LENGTHS" --scale-lengths "$SCALE" --num-requests "$NUM" --slo "$SLO"
    --seed 0 --no-progress)
  [ "$workload" = burst ] && ARGS+=(--burstiness 0.25)
  for rate in $RATES; do
    for layout in $LAYOUTS; do
      wait_quiet "$workload-$layout-$rate"
      if [ "${layout%%-*}" = disagg ]; then
        wire=auto
        [ "$layout" != disagg ] && wire=${layout#disagg-}
        start_replica 1 prefill "$wire"; start_replica 2 decode
      else
        start_replica 1 both; start_replica 2 both
      fi
      start_bg 8600 "$OUT/router.log" "$BRISK" route --port 8600 \
        --replica "http://${HOSTS[0]}:8601" --replica "http://${HOSTS[1]}:8602"
      PIDS+=("$SPID")
      run=$workload-$layout-$rate
      "$BRISK" bench --url http://127.0.0.1:8600 "${ARGS[@]}" --rate "$rate" \
        --output "$OUT/$run.json" >"$OUT/$run.txt" 2>&1
      handovers=$(sample 1 'brisk_disagg_handovers_total{direction="out"}')
      bytes=$(sample 1 'brisk_kv_transfer_bytes_total{direction="sent"}')
      pause_sum=$(sample 1 'brisk_migration_pause_seconds_sum{kind="handover"}')
      computed2=$(sample 2 brisk_prompt_tokens_computed_total)
      python3 - "$OUT/$run.json" "$workload" "$layout" "$rate" "$handovers" "$bytes" \
        "$pause_sum" "$computed2" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, workload, layout, rate, handovers, kv_bytes, pause_sum, computed2 = sys.argv[1:]
r = json.load(open(path))
n = float(handovers)
print(json.dumps({"workload": workload, "layout": layout, "rate": float(rate),
    "completed": r["completed"], "failed": r["failed"],
    "slo_attainment": r["slo_attainment"], "goodput_rps": round(r["request_goodput"], 3),
    "ttft_p50_ms": round(r["median_ttft_ms"]), "ttft_p99_ms": round(r["p99_ttft_ms"]),
    "tpot_p50_ms": round(r["median_tpot_ms"], 1), "tpot_p99_ms": round(r["p99_tpot_ms"], 1),
    "handovers": int(n), "kv_mb_per_handover": round(float(kv_bytes) / n / 1e6, 2) if n else None,
    "pause_ms_mean": round(float(pause_sum) / n * 1e3, 1) if n else None,
    "replica2_prompt_tokens_computed": int(float(computed2))}))
PY
      stop_pids
    done
  done
done
