#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600, the issue's minimum), starting from
# the small seed corpora in fuzz/corpus/<target>/ (committed) plus what earlier runs grew in
# fuzz/corpus-work/<target>/ (not committed), and writing crashes to fuzz/artifacts/<target>/
# and new inputs to fuzz/corpus-work/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET…]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), and the SmolLM2
# model for the tokenizer and chat-template targets (`cargo run -p brisk -- download`).
# To keep a new input as a seed (a regression, say), copy it into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-600}
shift || true
TARGETS=${*:-gguf_parse request_json tokenizer chat_template}
for t in $TARGETS; do
  echo "== $t for ${SECONDS_EACH}s"
  mkdir -p "corpus-work/$t"
  if ! cargo +nightly fuzz run "$t" "corpus-work/$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" \
    -rss_limit_mb=4096 -max_len=65536 >"/tmp/brisk-fuzz-$t.log" 2>&1; then
    FOUND="${FOUND:-} $t"
    grep -E 'panicked|SUMMARY' "/tmp/brisk-fuzz-$t.log" | head -5
  fi
  grep -E '^#[0-9]+ +DONE|Done [0-9]+ runs' "/tmp/brisk-fuzz-$t.log" | tail -n 1 || true
done
if [[ -n "${FOUND:-}" ]]; then
  echo "findings in:$FOUND (inputs under fuzz/artifacts/)"
  exit 1
fi
