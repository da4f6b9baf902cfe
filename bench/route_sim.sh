#!/usr/bin/env bash
# Issue 14, simulated: routers over fleets of N replicas (one compute thread each, a latency
# model of this machine) on the Mooncake conversation trace (shared prefixes, the same scale
# as bench/route.sh): the capacity (highest rate keeping 90 % SLO attainment, bisected) and
# the hit rate at that rate, over several arrival seeds, for each of ROUTERS:
#   ttft@MS        brisk's choice by predicted TTFT with an affinity allowance of MS
#                  (`brisk route --affinity-slack MS`)
#   ttft@MSxR      … and an allowance of R times the fastest prediction (`--affinity-ratio R`;
#                  1: none, the rule before it existed)
#   overlap-load   (uncached + queued prompt tokens) × (requests + 1): vllm-router kv_aware's cost
#   round-robin    blind
#
#   bench/route_sim.sh [OUTDIR]        # default /tmp/route-sim-<utc timestamp>
#
# Knobs (env): SIZES ("2 8 16"), ROUTERS ("ttft@0 ttft@50 ttft@250 ttft@1000 overlap-load
# round-robin"), SEEDS ("0 1 2 3"),
# NUM (requests for 2 replicas: 600, as bench/route.sh; larger fleets replay the whole
# trace), SCALE (0.02), LATENCY (the model; default: the one kept for one thread), SIM_ARGS
# (more `brisk sim` flags, e.g. `--send-slo`: requests carry their objective to the router). Raw
# outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
set -u
cd "$(dirname "$0")/.."
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/mooncake_fast25_conversation_trace.jsonl}
SIZES=${SIZES:-2 8 16}
ROUTERS=${ROUTERS:-ttft@0 ttft@50 ttft@250 ttft@1000 overlap-load round-robin}
SEEDS=${SEEDS:-0 1 2 3}
NUM=${NUM:-600}
SCALE=${SCALE:-0.02}
LATENCY=${LATENCY:-$(ls "$HOME"/.cache/brisk/latency/*-1t-auto-f32-bs16.json | head -1)}
OUT=${1:-/tmp/route-sim-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
for n in $SIZES; do
  if [ "$n" -le 2 ]; then count=(--num-requests "$NUM"); else count=(); fi
  for seed in $SEEDS; do
    for router in $ROUTERS; do
      case $router in
        ttft@*x*) spec=${router#*@}
          flags=(--router ttft --router-affinity-slack "${spec%x*}" --router-affinity-ratio "${spec#*x}") ;;
        ttft@*) flags=(--router ttft --router-affinity-slack "${router#*@}") ;;
        *) flags=(--router "$router") ;;
      esac
      out="$OUT/n$n-s$seed-$router.json"
      "$BRISK" sim --latency-model "$LATENCY" --trace "$TRACE" --scale-lengths "$SCALE" \
        "${count[@]}" --max-prompt-tokens 4096 --max-output-tokens 32 \
        --slo ttft=2000,tpot=200 --kv-cache-tokens 65536 --max-model-len 8192 \
        --replicas "$n" "${flags[@]}" ${SIM_ARGS:-} \
        --find-capacity $((8 * n)) --capacity-steps 7 --seed "$seed" --output "$out" \
        >"$OUT/n$n-s$seed-$router.txt" 2>&1 || { echo "failed: $out" >&2; continue; }
      python3 - "$out" "$n" "$seed" "$router" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, n, seed, router = sys.argv[1:]
r = json.load(open(path))
cap = r["capacity"]
at = [p["report"] for p in r["points"] if p["rate"] == cap]
fleet = json.load(open(at[0])).get("fleet", {}) if at else {}
print(json.dumps({"replicas": int(n), "seed": int(seed), "router": router,
    "capacity": cap, "hit_rate": fleet.get("prefix_cache_hit_rate")}))
PY
    done
  done
done
python3 - "$OUT/summary.jsonl" <<'PY' | tee "$OUT/table.txt"
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows:
    by[(r["replicas"], r["router"])].append(r)
print("| replicas | router | capacity per seed (req/s) | mean | hit rate at capacity (mean) |")
print("| --- | --- | --- | --- | --- |")
for (n, a), rs in sorted(by.items()):
    caps = [r["capacity"] or 0 for r in rs]
    hits = [r["hit_rate"] for r in rs if r["hit_rate"] is not None]
    hit = f"{100 * sum(hits) / len(hits):.1f} %" if hits else "-"
    print(f"| {n} | {a} | {' / '.join(f'{c:g}' for c in caps)} | {sum(caps) / len(caps):.2f} | {hit} |")
PY
