#!/usr/bin/env bash
# Backend benchmark for issue 2: brisk (own kernels, candle kernels) vs llama.cpp on the
# same GGUF file and machine, interleaved A/B rounds, each round started only when the
# 1-minute load average is below LOAD_MAX (or after WAIT_MAX seconds of waiting).
#
#   bench/backend.sh [ROUNDS]            # default 3 rounds
#   PROFILE=1 bench/backend.sh 0         # only the perf profiles
#   SKIP_CANDLE=1 bench/backend.sh 3     # brisk's kernels and llama.cpp only (candle's
#                                        # fallback takes minutes per round)
#
# Environment: MODEL, LLAMA_BIN, LOAD_MAX (0.8), WAIT_MAX (300 s), OUTDIR, BIN (a dir
# holding prebuilt step_bench and brisk; default: build them into target/release).
# Writes raw logs and summary.txt under OUTDIR (default bench/results/<utc timestamp>).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_BIN=${LLAMA_BIN:-$HOME/.cache/brisk-peers/llama.cpp-build/bin}
LOAD_MAX=${LOAD_MAX:-0.8}
WAIT_MAX=${WAIT_MAX:-300}
OUTDIR=${OUTDIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUTDIR"

if [[ -z "${BIN:-}" ]]; then
  cargo build --release -p brisk-backend --example step_bench
  cargo build --release -p brisk
  BIN=target/release
  STEP=$BIN/examples/step_bench
else
  STEP=$BIN/step_bench
fi

{
  echo "date: $(date -u)"
  echo "git: $(git rev-parse HEAD) $(git status --short crates/brisk-backend | wc -l) modified backend files"
  lscpu | grep 'Model name'
  echo "cores: $(nproc)"
  echo "cpu flags: $(grep -o -w 'avx2\|fma\|f16c\|avx512[a-z]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "model: $MODEL ($(stat -c %s "$MODEL") bytes)"
} | tee "$OUTDIR/machine.txt"

load1() { cut -d' ' -f1 /proc/loadavg; }

wait_quiet() {
  local waited=0
  while awk -v l="$(load1)" -v m="$LOAD_MAX" 'BEGIN{exit !(l>=m)}'; do
    if (( waited >= WAIT_MAX )); then
      echo "load $(load1) still >= $LOAD_MAX after ${WAIT_MAX}s: measuring anyway" >&2
      return
    fi
    sleep 10; waited=$((waited + 10))
  done
}

# One round: brisk own kernels, brisk candle kernels, llama-bench, back to back.
for r in $(seq 1 "$ROUNDS"); do
  wait_quiet
  echo "== round $r, load before: $(cat /proc/loadavg)" | tee -a "$OUTDIR/loads.txt"
  "$STEP" "$MODEL" 5 | tee "$OUTDIR/brisk-own-$r.txt"
  if [[ "${SKIP_CANDLE:-0}" == 1 ]]; then
    cp "$OUTDIR/brisk-own-$r.txt" "$OUTDIR/brisk-candle-$r.txt"  # placeholder: not measured
  else
    BRISK_KERNELS=candle "$STEP" "$MODEL" 5 | tee "$OUTDIR/brisk-candle-$r.txt"
  fi
  "$LLAMA_BIN/llama-bench" -m "$MODEL" -p 512 -n 128 -t 2 -r 5 -o csv \
    2>/dev/null | tee "$OUTDIR/llama-$r.csv"
  echo "   round $r, load after: $(cat /proc/loadavg)" | tee -a "$OUTDIR/loads.txt"
done

# End to end: brisk generate (TTFT, decode tokens/s) on a short prompt, 128 tokens.
if [[ "$ROUNDS" -gt 0 ]]; then
  wait_quiet
  kinds="own candle"; [[ "${SKIP_CANDLE:-0}" == 1 ]] && kinds=own
  for k in $kinds; do
    env $([[ $k == candle ]] && echo BRISK_KERNELS=candle) "$BIN/brisk" generate --model "$MODEL" \
      --prompt "The history of the city of Paris begins" --max-tokens 128 --ignore-eos \
      >/dev/null 2> "$OUTDIR/generate-$k.txt"
    tail -n 1 "$OUTDIR/generate-$k.txt"
  done
fi

[[ "$ROUNDS" -gt 0 ]] && python3 - "$OUTDIR" "$ROUNDS" <<'EOF' | tee "$OUTDIR/summary.txt"
import csv, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def med(v): return statistics.median(v) if v else None
def step(kind):
    pp, dec = [], {}
    for r in range(1, rounds + 1):
        t = open(f"{out}/brisk-{kind}-{r}.txt").read()
        pp.append(float(re.search(r"prefill 512 tokens: [\d.]+ ms \(([\d.]+) tokens/s", t).group(1)))
        for b, ms, tps in re.findall(r"decode batch +(\d+): ([\d.]+) ms/step \(([\d.]+) tokens/s", t):
            dec.setdefault(int(b), []).append((float(ms), float(tps)))
    return pp, dec
import os
own = step("own")
skip_candle = os.environ.get("SKIP_CANDLE") == "1"
cand = ([], {1: [], 4: [], 16: [], 64: []}) if skip_candle else step("candle")
lpp, ltg = [], []
for r in range(1, rounds + 1):
    for row in csv.DictReader(open(f"{out}/llama-{r}.csv")):
        (lpp if int(row["n_prompt"]) > 0 else ltg).append(float(row["avg_ts"]))
print("per-round values:")
print("  brisk own    prefill tok/s:", own[0], " decode b1 ms:", [x[0] for x in own[1][1]])
print("  brisk candle prefill tok/s:", cand[0], " decode b1 ms:", [x[0] for x in cand[1][1]])
print("  llama.cpp    pp512 tok/s:", lpp, " tg128 ms/token:", [round(1000 / x, 2) for x in ltg])
l_ms, l_pp = 1000 / med(ltg), med(lpp)
rows = [("decode ms/token, batch 1", med([x[0] for x in own[1][1]]), med([x[0] for x in cand[1][1]]), l_ms),
        ("prefill tokens/s, 512-token prompt", med(own[0]), med(cand[0]), l_pp)]
for b in (4, 16, 64):
    rows.append((f"decode tokens/s, batch {b}", med([x[1] for x in own[1][b]]), med([x[1] for x in cand[1][b]]), None))
print(f"\n{'metric':38} {'brisk own':>10} {'brisk candle':>13} {'llama.cpp':>10} {'own/llama':>10} {'candle/llama':>12}")
for name, o, c, l in rows:
    f = lambda x: f"{x:.2f}" if x is not None else "-"
    print(f"{name:38} {f(o):>10} {f(c):>13} {f(l):>10} {f(o / l) if l else '-':>10} {f(c / l) if l and c else '-':>12}")
EOF

# Profiles (perf, brisk's own kernels; PROFILE_CANDLE=1 adds candle's): bench/profile_phases.py
# records step_bench with CLOCK_MONOTONIC timestamps, stamps its output lines with the same
# clock, and slices the report to the prefill phase (REPEATS prefills of 512 tokens) and the
# batch-1 decode phase (one 64-token cache fill, then 2*REPEATS single-token steps).
if [[ "${PROFILE:-1}" == 1 ]]; then
  wait_quiet
  echo "profile load: $(cat /proc/loadavg)" | tee -a "$OUTDIR/loads.txt"
  kinds=own; [[ "${PROFILE_CANDLE:-0}" == 1 ]] && kinds="own candle"
  for k in $kinds; do
    echo "=== $k kernels"
    env $([[ $k == candle ]] && echo BRISK_KERNELS=candle) \
      python3 bench/profile_phases.py "$OUTDIR/perf-$k" "$STEP" "$MODEL" "${PROFILE_REPEATS:-5}"
  done | tee "$OUTDIR/profile-summary.txt"
fi
