#!/usr/bin/env bash
# Issue 14: routing two `brisk serve` replicas (one compute thread each) on the Mooncake
# conversation trace (shared prefixes): `brisk route` (predicted TTFT) against round robin
# and vllm-router 0.1.17's cache_aware and kv_aware policies on the same replicas, and a
# single replica with the pools of both as the reference hit rate. For each policy and rate:
# fresh replicas (empty caches), the router, one `brisk bench` run through it; the fleet's
# prefix-cache hit rate is read from the replicas' counters.
#
#   bench/route.sh [OUTDIR]          # default /tmp/route-<utc timestamp>
#
# Knobs (env): RATES, NUM (requests), SCALE (--scale-lengths), POOL (KV tokens per
# replica), POLICIES (`brisk-ttft@MS`: `brisk route --affinity-slack MS`), SEED (the bench's
# seed: arrivals; 0), ROUTE_ARGS (extra flags for `brisk route`, e.g. `--affinity-ratio 1`),
# REPLICA_ARGS (extra flags for each `brisk serve`, e.g. `--latency-model FILE`),
# RECORD_STEPS (1: each replica writes its engine steps to OUT/steps-POLICY-RATE-I.jsonl,
# for `brisk profile --from-steps`: a latency model of the live fleet for `brisk sim`). Raw outputs stay out of git; the summary goes
# into BENCHMARKS.md by hand. Run after `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
TRACE=${TRACE:-../shared/workloads/traces/mooncake_fast25_conversation_trace.jsonl}
RATES=${RATES:-3}
NUM=${NUM:-600}
SCALE=${SCALE:-0.02}
POOL=${POOL:-65536}
POLICIES=${POLICIES:-single brisk-ttft brisk-round-robin vllm-cache_aware vllm-kv_aware}
OUT=${1:-/tmp/route-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_pids EXIT
describe_machine | tee "$OUT/machine.txt"
VLLM_ROUTER=(python3 -c 'import sys; from vllm_router.launch_router import main; sys.exit(main())')

# Starts replica I (port 850I, events on 556I, replay on 557I) with POOL tokens.
start_replica() {
  local i=$1 pool=$2 record=()
  [ "${RECORD_STEPS:-0}" = 1 ] && record=(--record-steps "$OUT/steps-$policy-$rate-$i.jsonl")
  start_bg "850$i" "$OUT/replica-$i.log" env BRISK_THREADS=1 "$BRISK" serve --model "$MODEL" \
    --port "850$i" --kv-cache-tokens "$pool" --max-model-len 8192 "${record[@]}" ${REPLICA_ARGS:-} \
    --kv-events-config "{\"enable_kv_cache_events\": true, \"endpoint\": \"tcp://*:556$i\", \"replay_endpoint\": \"tcp://*:557$i\"}"
  PIDS+=("$SPID"); REPLICA_PIDS+=("$SPID")
}

# Sums a counter (all its label sets) over the replicas on the given ports.
counter() {
  local name=$1 total=0 v port
  shift
  for port in "$@"; do
    v=$(curl -s "http://127.0.0.1:$port/metrics" |
      awk -v n="$name" '$1==n || index($1, n "{")==1 {s+=$2} END {print s+0}')
    total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN{print a+b}')
  done
  echo "$total"
}

start_router() {
  local policy=$1
  case $policy in
    brisk-ttft|brisk-ttft@*)
      local slack=()
      [[ $policy == *@* ]] && slack=(--affinity-slack "${policy#*@}")
      start_bg 8500 "$OUT/router.log" "$BRISK" route --port 8500 ${ROUTE_ARGS:-} "${slack[@]}" \
        --replica http://127.0.0.1:8501 --replica http://127.0.0.1:8502 ;;
    brisk-round-robin) start_bg 8500 "$OUT/router.log" "$BRISK" route --port 8500 --policy round-robin \
        --replica http://127.0.0.1:8501 --replica http://127.0.0.1:8502 ;;
    vllm-cache_aware) start_bg 8500 "$OUT/router.log" "${VLLM_ROUTER[@]}" --host 127.0.0.1 --port 8500 \
        --prometheus-port 8599 --policy cache_aware --worker-startup-check-interval 1 \
        --worker-urls http://127.0.0.1:8501 http://127.0.0.1:8502 ;;
    vllm-kv_aware) start_bg 8500 "$OUT/router.log" "${VLLM_ROUTER[@]}" --host 127.0.0.1 --port 8500 \
        --prometheus-port 8599 --policy kv_aware --worker-startup-check-interval 1 \
        --kv-event-model SmolLM2-135M-Instruct.Q4_1 --kv-event-block-size 16 \
        --worker-urls http://127.0.0.1:8501 http://127.0.0.1:8502 \
        --kv-event-source http://127.0.0.1:8501=tcp://127.0.0.1:5561 \
        --kv-event-source http://127.0.0.1:8502=tcp://127.0.0.1:5562 \
        --kv-event-replay-source http://127.0.0.1:8501=tcp://127.0.0.1:5571 \
        --kv-event-replay-source http://127.0.0.1:8502=tcp://127.0.0.1:5572 ;;
  esac
  PIDS+=("$SPID"); ROUTER_PID=$SPID
  sleep 2
}

# CPU seconds (user + system, all threads) a live process has used.
cpu_seconds() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"
}

for rate in $RATES; do
  for policy in $POLICIES; do
    wait_quiet "$policy-$rate"
    REPLICA_PIDS=(); ROUTER_PID=
    if [ "$policy" = single ]; then
      start_replica 1 $((2 * POOL)); ports=(8501); url=http://127.0.0.1:8501
    else
      start_replica 1 "$POOL"; start_replica 2 "$POOL"; ports=(8501 8502)
      start_router "$policy" || { stop_pids; continue; }
      url=http://127.0.0.1:8500
    fi
    "$BRISK" bench --url "$url" --trace "$TRACE" --scale-lengths "$SCALE" --rate "$rate" \
      --num-requests "$NUM" --max-prompt-tokens 4096 --max-output-tokens 32 \
      --slo ttft=2000,tpot=200 --seed "${SEED:-0}" --no-progress --output "$OUT/$policy-$rate.json" \
      >"$OUT/$policy-$rate.txt" 2>&1
    # CPU seconds the router (with its threads) and the replicas used: they share the cores.
    router_cpu=$(cpu_seconds "${ROUTER_PID:-}"); replica_cpu=0
    for p in "${REPLICA_PIDS[@]}"; do replica_cpu=$(awk -v a="$replica_cpu" -v b="$(cpu_seconds "$p")" 'BEGIN{print a+b}'); done
    hits=$(counter brisk_prefix_cache_hits_total "${ports[@]}")
    queries=$(counter brisk_prefix_cache_queries_total "${ports[@]}")
    per=""
    for port in "${ports[@]}"; do per="$per $(counter brisk_request_success_total "$port")"; done
    python3 - "$OUT/$policy-$rate.json" "$policy" "$rate" "$hits" "$queries" "$per" "$router_cpu" "$replica_cpu" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, policy, rate, hits, queries, per, router_cpu, replica_cpu = sys.argv[1:]
r = json.load(open(path))
slo = r["slo"] or {}
done = [q for q in r["requests"] if not q["error"]]
ttft_missed = sum(q["ttft"] > (slo.get("ttft_ms") or float("inf")) for q in done)
tpot_missed = sum((q["tpot"] or 0) > (slo.get("tpot_ms") or float("inf")) for q in done)
print(json.dumps({"policy": policy, "rate": float(rate), "seed": r["seed"],
    "router_cpu_s": float(router_cpu), "replica_cpu_s": float(replica_cpu),
    "ttft_missed": ttft_missed, "tpot_missed": tpot_missed,
    "hit_rate": round(float(hits) / max(float(queries), 1), 3),
    "served_per_replica": per.split(), "completed": r["completed"], "failed": r["failed"],
    "ttft_p50_ms": round(r["median_ttft_ms"]), "ttft_p99_ms": round(r["p99_ttft_ms"]),
    "tpot_p50_ms": round(r["median_tpot_ms"]), "slo_attainment": r["slo_attainment"]}))
PY
    stop_pids
  done
done
