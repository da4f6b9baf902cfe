#!/usr/bin/env bash
# Issue 14, simulated: how much predicted TTFT a request should give up to follow its cached
# blocks (`brisk route --affinity-slack`). For fleets of N replicas (one compute thread each,
# a latency model of this machine) on the Mooncake conversation trace (shared prefixes, the
# same scale as bench/route.sh), the capacity (highest rate keeping 90 % SLO attainment,
# bisected) and hit rate at that rate for each allowance, over several arrival seeds.
#
#   bench/affinity_sim.sh [OUTDIR]        # default /tmp/affinity-sim-<utc timestamp>
#
# Knobs (env): SIZES ("2 8 16"), SLACKS ("0 50 100 250 1000", ms), SEEDS ("0 1 2 3"),
# NUM (requests for 2 replicas: 600, as bench/route.sh; larger fleets replay the whole
# trace), SCALE (0.02), LATENCY (the model; default: the one kept for one thread). Raw
# outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
set -u
cd "$(dirname "$0")/.."
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/mooncake_fast25_conversation_trace.jsonl}
SIZES=${SIZES:-2 8 16}
SLACKS=${SLACKS:-0 50 100 250 1000}
SEEDS=${SEEDS:-0 1 2 3}
NUM=${NUM:-600}
SCALE=${SCALE:-0.02}
LATENCY=${LATENCY:-$(ls "$HOME"/.cache/brisk/latency/*-1t-auto-f32-bs16.json | head -1)}
OUT=${1:-/tmp/affinity-sim-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
for n in $SIZES; do
  if [ "$n" -le 2 ]; then count=(--num-requests "$NUM"); else count=(); fi
  for seed in $SEEDS; do
    for slack in $SLACKS; do
      out="$OUT/n$n-s$seed-a$slack.json"
      "$BRISK" sim --latency-model "$LATENCY" --trace "$TRACE" --scale-lengths "$SCALE" \
        "${count[@]}" --max-prompt-tokens 4096 --max-output-tokens 32 \
        --slo ttft=2000,tpot=200 --kv-cache-tokens 65536 --max-model-len 8192 \
        --replicas "$n" --router ttft --router-affinity-slack "$slack" \
        --find-capacity $((4 * n)) --capacity-steps 7 --seed "$seed" --output "$out" \
        >"$OUT/n$n-s$seed-a$slack.txt" 2>&1 || { echo "failed: $out" >&2; continue; }
      python3 - "$out" "$n" "$seed" "$slack" <<'PY' | tee -a "$OUT/summary.jsonl"
import json, sys
path, n, seed, slack = sys.argv[1:]
r = json.load(open(path))
cap = r["capacity"]
at = [p["report"] for p in r["points"] if p["rate"] == cap]
fleet = json.load(open(at[0])).get("fleet", {}) if at else {}
print(json.dumps({"replicas": int(n), "seed": int(seed), "affinity_slack_ms": float(slack),
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
    by[(r["replicas"], r["affinity_slack_ms"])].append(r)
print("| replicas | allowance (ms) | capacity per seed (req/s) | mean | hit rate at capacity (mean) |")
print("| --- | --- | --- | --- | --- |")
for (n, a), rs in sorted(by.items()):
    caps = [r["capacity"] or 0 for r in rs]
    hits = [r["hit_rate"] for r in rs if r["hit_rate"] is not None]
    hit = f"{100 * sum(hits) / len(hits):.1f} %" if hits else "-"
    print(f"| {n} | {a:g} | {' / '.join(f'{c:g}' for c in caps)} | {sum(caps) / len(caps):.2f} | {hit} |")
PY
