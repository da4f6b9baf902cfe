#!/usr/bin/env bash
# Issue 15, simulated: live migration in `brisk sim` at fleet scale. For fleets of N
# replicas (one compute thread each, this machine's latency model) on the Azure
# conversation trace's lengths, at offered loads of RATES requests/s per replica, each
# migration MODE against none:
#   off           no migration
#   balance:S     --rebalance-slack S (Llumnix's load balance)
#   priority      --priority-migration, with half the requests in a `batch` class
#                 (ttft 60 s, tpot 1 s, sent as priority batch), against the same classes
#                 with --priority-placement alone (`placement`) and with neither
#                 (`off-classes`)
# and reports per class: SLO attainment, p99 TTFT and TPOT, migrations and their pause.
#
#   bench/migration_sim.sh [OUTDIR]        # default /tmp/migration-sim-<utc timestamp>
#
# Knobs (env): SIZES ("8 32"), RATES ("4.5 5 5.5"), MODES ("off balance:2 balance:0 priority"),
# TPOT (50 ms; TTFT 2 s), BATCH_SHARE (0.5: the batch class's share), SCALE (0.1), PER_REPLICA (150), BURSTINESS (gamma shape; default
# Poisson), SEEDS ("0"), GBIT (10), LATENCY (the model). Raw outputs stay out of git; the
# summary goes into BENCHMARKS.md by hand.
set -u
cd "$(dirname "$0")/.."
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/azure2023_conv.csv}
SIZES=${SIZES:-8 32}
RATES=${RATES:-4.5 5 5.5}
MODES=${MODES:-off balance:2 balance:0 priority}
TPOT=${TPOT:-50}
SCALE=${SCALE:-0.1}
PER_REPLICA=${PER_REPLICA:-150}
SEEDS=${SEEDS:-0}
BURSTINESS=${BURSTINESS:-}
GBIT=${GBIT:-10}
LATENCY=${LATENCY:-$(ls "$HOME"/.cache/brisk/latency/*-1t-auto-f32-bs16.json | head -1)}
OUT=${1:-/tmp/migration-sim-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
LENGTHS="$OUT/azure-lengths.csv"
{ echo "num_prefill_tokens,num_decode_tokens"; tail -n +2 "$TRACE" | cut -d, -f2,3; } >"$LENGTHS"
CLASSES=(--slo-class "batch:ttft=60000,tpot=1000,share=${BATCH_SHARE:-0.5}" --send-slo)
for n in $SIZES; do
  for rate in $RATES; do
    for seed in $SEEDS; do
      for mode in $MODES; do
        # Priority is measured against the same mixed classes without migration.
        variants=("$mode")
        [ "$mode" = priority ] && variants=(off-classes placement priority)
        for v in "${variants[@]}"; do
          flags=(--kv-transfer-gbit "$GBIT")
          case $v in
            balance:*) flags+=(--rebalance-slack "${v#balance:}") ;;
            priority) flags+=(--priority-migration "${CLASSES[@]}") ;;
            placement) flags+=(--priority-placement "${CLASSES[@]}") ;;
            off-classes) flags+=("${CLASSES[@]}") ;;
          esac
          [ -n "$BURSTINESS" ] && flags+=(--burstiness "$BURSTINESS")
          run=n$n-r$rate-$v-s$seed
          "$BRISK" sim --latency-model "$LATENCY" --lengths "$LENGTHS" --scale-lengths "$SCALE" \
            --num-requests $((PER_REPLICA * n)) --slo "ttft=2000,tpot=$TPOT" --seed "$seed" \
            --no-progress --replicas "$n" --rate "$(python3 -c "print($rate * $n)")" "${flags[@]}" \
            -o "$OUT/$run.json" >"$OUT/$run.txt" 2>&1
          python3 - "$OUT/$run.json" "$n" "$rate" "$v" "$seed" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, n, rate, mode, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
r = json.load(open(path))
f = r.get("fleet") or {}
row = {"replicas": n, "rate_per_replica": rate, "mode": mode, "seed": seed,
       "attainment": round(r["slo_attainment"], 4),
       "p99_ttft_ms": round(r["p99_ttft_ms"], 1), "p99_tpot_ms": round(r["p99_tpot_ms"], 1),
       "migrations": f.get("migrations", 0), "pause_ms": f.get("migration_pause_ms")}
for c in r.get("slo_classes") or []:
    row[c["name"]] = {"attainment": round(c["slo_attainment"], 4),
                      "p99_ttft_ms": round(c["p99_ttft_ms"], 1),
                      "p99_tpot_ms": round(c["p99_tpot_ms"], 1)}
print(json.dumps(row))
PY
        done
      done
    done
  done
done
