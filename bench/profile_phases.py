#!/usr/bin/env python3
"""Records step_bench under `perf record -g` with CLOCK_MONOTONIC timestamps, stamps each
output line with the same clock, stops at the end of the batch-1 decode phase, and writes
`perf report --no-children` slices for the prefill phase and the batch-1 decode phase.

usage: profile_phases.py OUTPREFIX STEP_BENCH MODEL REPEATS [--report-only]
(--report-only re-slices an existing OUTPREFIX.data with OUTPREFIX-stamps.txt)
"""
import re, signal, subprocess, sys, time

prefix, step, model, repeats = sys.argv[1:5]
data, stamps = f"{prefix}.data", f"{prefix}-stamps.txt"

if not (len(sys.argv) > 5 and sys.argv[5] == "--report-only"):
    t0 = time.monotonic()
    p = subprocess.Popen(["perf", "record", "-k", "CLOCK_MONOTONIC", "-F", "4000", "-g", "-o", data,
                          step, model, repeats], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with open(stamps, "w") as log:
        log.write(f"{t0:.6f} start\n")
        for line in p.stdout:
            log.write(f"{time.monotonic():.6f} {line}")
            log.flush()
            if line.startswith("decode batch  1:"):
                p.send_signal(signal.SIGINT)  # perf stops recording and ends step_bench
                break
    p.wait()

marks = {}
for line in open(stamps):
    t, text = line.split(" ", 1)
    if text.startswith("start"):
        marks["start"] = float(t)
    elif text.startswith("prefill 512"):
        marks["prefill"] = float(t)
    elif text.startswith("decode batch  1:"):
        marks["decode1"] = float(t)
        step_s = float(re.search(r"([\d.]+) ms/step", text).group(1)) / 1e3
# The batch-1 phase starts with a 64-token cache fill (a small prefill) before the timed
# steps: 2*max(REPEATS,3) back-to-back single-token steps ending at the "decode batch  1"
# line. The decode slice is the final 0.9 * steps * median-step seconds of the phase.
steps = 2 * max(int(repeats), 3)
d1 = max(marks["prefill"], marks["decode1"] - 0.9 * steps * step_s)
for name, (a, b) in {"prefill": (marks["start"], marks["prefill"]), "decode1": (d1, marks["decode1"])}.items():
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--time", f"{a:.6f},{b:.6f}"],
                         capture_output=True, text=True).stdout
    open(f"{prefix}-{name}.txt", "w").write(rep)
    top = [l for l in rep.splitlines() if re.match(r"^ +[0-9.]+% ", l)]
    samples = re.search(r"# Samples: (\S+)", rep)
    print(f"--- {name}: top self-time symbols ({a:.3f}..{b:.3f} s, {samples.group(1) if samples else '?'} samples)")
    print("\n".join(top[:15]))
