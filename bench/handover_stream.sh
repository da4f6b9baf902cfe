#!/usr/bin/env bash
# Issue 15: a hand-over's K/V streamed while the prompt is computed, against sent after the
# first token. A `--role prefill` and a `--role decode` replica (one compute thread each;
# NETNS=1: each in a network namespace of its own behind a LINK_RATE link), prompts of
# LENGTHS tokens (random ids: nothing cached) sent to the prefill replica naming the decode
# replica, prefill in chunks of CHUNK tokens. Per request: TTFT and the gap between the first
# and second token (the hand-over as the client sees it), and the prefill replica's pause
# (`brisk_migration_pause_seconds{kind="handover"}`). BASELINE (a brisk binary without
# streaming, e.g. built from 8da9e6b) and BRISK alternate, REPEATS rounds.
#
#   BASELINE=/tmp/brisk-nostream bench/handover_stream.sh [OUTDIR]
#
# Knobs (env): LENGTHS ("1024 2048 4096"), CHUNK (512), REPEATS (3), NETNS (0), LINK_RATE
# (1gbit), DELAY. Raw outputs stay out of git; the summary goes into BENCHMARKS.md by hand.
set -u
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$HOME/.cache/brisk/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BRISK=${BRISK:-target/release/brisk}
BASELINE=${BASELINE:?a brisk binary without streaming}
LENGTHS=${LENGTHS:-1024 2048 4096}
CHUNK=${CHUNK:-512}
REPEATS=${REPEATS:-3}
NETNS=${NETNS:-0}
LINK_RATE=${LINK_RATE:-1gbit}
DELAY=${DELAY:-}
OUT=${1:-/tmp/handover-stream-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
SPID=
replica_hosts
describe_machine | tee "$OUT/machine.txt"
echo "netns: $NETNS, link rate: $LINK_RATE, chunk: $CHUNK" | tee -a "$OUT/machine.txt"

# Starts replica I of binary BIN in role ROLE on HOSTS[I-1]:863I.
start_replica() {
  start_replica_at "$2" "863$2" "$1" --role "$3" --max-model-len 8192 \
    --max-num-batched-tokens "$CHUNK"
}

for round in $(seq "$REPEATS"); do
  for variant in baseline streamed; do
    bin=$BRISK
    [ "$variant" = baseline ] && bin=$BASELINE
    wait_quiet "$variant-$round"
    start_replica "$bin" 1 prefill && start_replica "$bin" 2 decode || { stop_pids; exit 1; }
    python3 - "$variant" "$round" "${HOSTS[0]}" "${HOSTS[1]}" $LENGTHS <<'PY' | tee -a "$OUT/summary.jsonl"
import http.client, json, random, re, sys, time
variant, round_, prefill, decode = sys.argv[1:5]
lengths = [int(x) for x in sys.argv[5:]]
rng = random.Random(f"{variant}-{round_}")

def pause_sum():
    c = http.client.HTTPConnection(prefill, 8631, timeout=60)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    vals = {}
    for name in ("sum", "count"):
        m = re.search(r'^brisk_migration_pause_seconds_%s\{kind="handover"\} (\S+)' % name, text, re.M)
        vals[name] = float(m.group(1)) if m else 0.0
    return vals

for n in lengths:
    before = pause_sum()
    body = json.dumps({"prompt": [rng.randrange(1000, 40000) for _ in range(n)], "max_tokens": 16,
                       "ignore_eos": True, "temperature": 0, "stream": True})
    c = http.client.HTTPConnection(prefill, 8631, timeout=300)
    start = time.monotonic()
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json",
              "x-brisk-decode-on": f"http://{decode}:8632"})
    r = c.getresponse()
    times = []
    for line in r:
        line = line.strip()
        if line.startswith(b"data: {"):
            times.append(time.monotonic())
    after = pause_sum()
    pause = (after["sum"] - before["sum"]) * 1e3 if after["count"] > before["count"] else None
    print(json.dumps({"variant": variant, "round": int(round_), "prompt_tokens": n,
                      "ttft_ms": round((times[0] - start) * 1e3, 1),
                      "second_token_gap_ms": round((times[1] - times[0]) * 1e3, 1),
                      "handover_pause_ms": None if pause is None else round(pause, 1),
                      "tokens": len(times)}))
PY
    stop_pids
  done
done
