#!/usr/bin/env bash
# Issue 17: output-length awareness, real. ShareGPT prompts on the chat endpoint with outputs
# that end where the model ends them (`--natural-output`, capped at CAP tokens), Poisson
# arrivals above what the server sustains, against `brisk serve` with its defaults (slo,
# output lengths learned online) and with `--no-output-length-prediction`. Each variant
# starts a fresh server, so each learns from nothing during its own run. Prints per variant
# the report's latencies and the server's ranking counters (Kendall's tau over consecutive
# finished requests).
#
#   bench/lengths.sh [OUTDIR]                 # default /tmp/lengths-<utc timestamp>
#
# Knobs: RATE (req/s), REQUESTS, CAP (output cap), PROMPT (bench --synthetic prompt spec),
# VARIANTS (`label=flags` separated by spaces, flags comma-separated), SEED; WORKLOAD=azure
# replays the Azure conversation trace instead (exact output lengths, the bench's default:
# `max_tokens` then tells each request's length, so the predictor has something to learn;
# SCALE scales its lengths). Raw outputs
# stay out of git; the summary goes into BENCHMARKS.md by hand. Run after
# `cargo build --release -p brisk`.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
PROMPTS=${PROMPTS:-../shared/workloads/prompts/sharegpt_v3_filtered_first_turn_1000.json}
RATE=${RATE:-1.2}
REQUESTS=${REQUESTS:-240}
CAP=${CAP:-400}
PROMPT=${PROMPT:-uniform:32:300}
SEED=${SEED:-1}
VARIANTS=${VARIANTS:-predicted= blind=--no-output-length-prediction}
OUT=${1:-/tmp/lengths-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SPID=
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap stop_server EXIT
describe_machine >"$OUT/machine.txt"
if [ "${WORKLOAD:-sharegpt}" = azure ]; then
  WORKLOAD_ARGS=(--trace ../shared/workloads/traces/azure2023_conv.csv --scale-lengths "${SCALE:-0.25}")
else
  WORKLOAD_ARGS=(--endpoint chat --prompts "$PROMPTS" --synthetic "prompt=$PROMPT,output=$CAP"
    --natural-output)
fi
PORT=8475
for variant in $VARIANTS; do
  label=${variant%%=*}
  IFS=, read -r -a flags <<<"${variant#*=}"
  wait_quiet "$label"
  start_bg "$PORT" "$OUT/$label-server.log" "$BRISK" serve --model "$MODEL" --port "$PORT" \
    "${flags[@]}" || exit 1
  "$BRISK" bench --url "http://127.0.0.1:$PORT" "${WORKLOAD_ARGS[@]}" --rate "$RATE" \
    --num-requests "$REQUESTS" --seed "$SEED" --no-progress -o "$OUT/$label.json" \
    >"$OUT/$label.log" 2>&1
  curl -s "http://127.0.0.1:$PORT/metrics" >"$OUT/$label-metrics.txt"
  stop_server
  python3 - "$OUT/$label.json" "$OUT/$label-metrics.txt" "$label" <<'PY'
import json, re, sys
r, metrics, label = json.load(open(sys.argv[1])), open(sys.argv[2]).read(), sys.argv[3]
def counter(name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else 0.0
c = counter('brisk_output_length_rank_pairs_total{agreement="concordant"}')
d = counter('brisk_output_length_rank_pairs_total{agreement="discordant"}')
ok = [q for q in r["requests"] if q.get("error") is None]
capped = sum(1 for q in ok if q["output_len"] >= q["output_len_requested"])
print(json.dumps({"variant": label, "done": len(ok), "capped": capped,
    "mean_ttft_ms": round(r["mean_ttft_ms"]), "median_ttft_ms": round(r["median_ttft_ms"]),
    "p99_ttft_ms": round(r["p99_ttft_ms"]), "mean_e2el_ms": round(r["mean_e2el_ms"]),
    "median_e2el_ms": round(r["median_e2el_ms"]), "p99_e2el_ms": round(r["p99_e2el_ms"]),
    "median_tpot_ms": round(r["median_tpot_ms"], 1), "output_tok_s": round(r["output_throughput"], 1),
    "rank_pairs": [int(c), int(d)], "kendall_tau": round((c - d) / (c + d), 3) if c + d else None}))
PY
done | tee "$OUT/summary.jsonl"
