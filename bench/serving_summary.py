#!/usr/bin/env python3
"""Summarise bench/serving.sh reports: python3 bench/serving_summary.py bench/results/serving-<ts>"""
import json, os, sys
d = sys.argv[1]
keys = ["completed", "failed", "duration", "output_throughput", "median_ttft_ms", "p99_ttft_ms",
        "median_tpot_ms", "p99_tpot_ms", "ignored_length_requests", "prompt_lengths_exact"]
print("| run | " + " | ".join(keys) + " |")
print("|" + "---|" * (len(keys) + 1))
for f in sorted(os.listdir(d)):
    if f.endswith(".json"):
        r = json.load(open(os.path.join(d, f)))
        vals = [r.get(k) for k in keys]
        print(f"| {f[:-5]} | " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in vals) + " |")
for f in sorted(os.listdir(d)):
    if f.endswith(".metrics.txt"):
        for line in open(os.path.join(d, f)):
            if line.startswith("brisk_prefix_cache"):
                print(f, line.strip())
