#!/usr/bin/env bash
# Where a step's time goes (issue 7): perf profiles of step_bench for a 512-token prefill and
# decode steps at batch 1, 4, 16 and 64, each phase in its own run; recording starts after
# DELAY_MS so that model loading stays out of the profile.
#
#   bench/profile_batches.sh [OUTDIR]      # default bench/results/profile-<utc timestamp>
#
# Environment: MODEL, DELAY_MS (2500), THREADS (unset: one per core).
# Writes OUTDIR/<phase>.txt (step_bench's line) and OUTDIR/<phase>-top.txt (perf report,
# self time by symbol); perf.data files are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUTDIR=${1:-bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
DELAY_MS=${DELAY_MS:-2500}
mkdir -p "$OUTDIR"
cargo build --release -p brisk-backend --example step_bench
STEP=target/release/examples/step_bench
{
  echo "date: $(date -u)"
  echo "git: $(git rev-parse HEAD)"
  echo "load before: $(cat /proc/loadavg)"
} | tee "$OUTDIR/machine.txt"
# (phase, repeats): enough steps that each profile covers several seconds.
for spec in prefill:6 decode1:150 decode4:60 decode16:30 decode64:10; do
  phase=${spec%%:*} repeats=${spec##*:}
  ${THREADS:+env BRISK_THREADS=$THREADS} perf record -q -D "$DELAY_MS" -F 1999 -g \
    -o "$OUTDIR/$phase.perf.data" "$STEP" "$MODEL" "$repeats" "$phase" | tee "$OUTDIR/$phase.txt"
  { perf report -i "$OUTDIR/$phase.perf.data" --no-children -g none --sort symbol 2>/dev/null \
    | grep -E '^ +[0-9]' | head -15 | sed -E 's/ +- +- +$//' > "$OUTDIR/$phase-top.txt"; } || true
  echo "--- $phase"; head -8 "$OUTDIR/$phase-top.txt"
done
echo "load after: $(cat /proc/loadavg)" | tee -a "$OUTDIR/machine.txt"
