"""Issue 19: one-stream TPOT with and without speculative decoding, on copy-heavy and plain
prompts, against two running servers of the same model (one started with
`--speculative-config`, one without), in one run.

    python3 bench/speculative.py PLAIN_URL SPEC_URL MODEL [ROUNDS]

Each prompt is sent greedily to each server in turn, ROUNDS times; the time per output token
(first streamed token to last, over the tokens after the first) is read from the chunks. The
two servers' texts must be identical (speculation changes when tokens come, never which):
any difference is reported and fails the run. Prints one JSON line per prompt — median TPOT
(ms) plain and speculative, their ratio, tokens — and a last line over all copy-heavy and all
plain prompts. Raw numbers stay out of git; the summary goes into BENCHMARKS.md by hand.
"""
import json
import statistics
import sys
import time

import openai

plain_url, spec_url, model = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
clients = {
    "plain": openai.OpenAI(base_url=plain_url, api_key="unused", max_retries=0),
    "spec": openai.OpenAI(base_url=spec_url, api_key="unused", max_retries=0),
}

ITEMS = ", ".join(["apples", "bread", "cheddar cheese", "dish soap", "eggs", "flour",
                   "green tea", "honey", "ice cream", "jam", "kale", "lemons", "milk",
                   "noodles", "olive oil", "peppers", "quinoa", "rice", "salt", "tomatoes"])
CODE = '''def total(xs):
    s = 0
    for x in xs:
        if x > 0:
            s = s + x
    return s


def mean(xs):
    if not xs:
        return 0
    return total(xs) / len(xs)
'''
PASSAGE = ("The committee met on Tuesday. \"We will not raise the fees this year,\" the chair "
           "said, \"because the reserves are larger than we expected.\" A member objected: "
           "\"The reserves are for the new roof, not for keeping fees low.\" The chair replied "
           "that the roof would be paid from a separate grant. The vote passed seven to two.")
PROMPTS = [
    ("copy", "list", f"Repeat this shopping list exactly, one item per line: {ITEMS}."),
    ("copy", "code-edit", f"Rename the variable `s` to `acc` in this Python code and print the "
                          f"whole code again:\n\n{CODE}"),
    ("copy", "quotes", f"Summarize this passage, quoting what each person said word for "
                       f"word:\n\n{PASSAGE}"),
    ("plain", "poem", "Write a short poem about the sea."),
    ("plain", "advice", "Give me three tips for sleeping better."),
    ("plain", "explain", "Explain what a hash table is to a beginner."),
]


def run(server, prompt):
    times, text = [], []
    stream = clients[server].chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=200,
        temperature=0, stream=True, stream_options={"include_usage": True})
    tokens = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    tpot = (times[-1] - times[0]) / max(tokens - 1, 1) * 1e3 if len(times) > 1 else float("nan")
    return tpot, tokens, "".join(text)


failed = False
summary = {"copy": {"plain": [], "spec": []}, "plain": {"plain": [], "spec": []}}
for kind, name, prompt in PROMPTS:
    tpots = {"plain": [], "spec": []}
    texts = {}
    tokens = 0
    for _ in range(rounds):
        for server in ("plain", "spec"):
            tpot, tokens, text = run(server, prompt)
            tpots[server].append(tpot)
            texts.setdefault(server, text)
    same = texts["plain"] == texts["spec"]
    failed |= not same
    p, s = statistics.median(tpots["plain"]), statistics.median(tpots["spec"])
    summary[kind]["plain"].append(p)
    summary[kind]["spec"].append(s)
    print(json.dumps({"prompt": name, "kind": kind, "tokens": tokens,
                      "tpot_plain_ms": round(p, 2), "tpot_spec_ms": round(s, 2),
                      "speedup": round(p / s, 3), "identical_text": same}), flush=True)
for kind, v in summary.items():
    p, s = statistics.mean(v["plain"]), statistics.mean(v["spec"])
    print(json.dumps({"kind": kind, "mean_tpot_plain_ms": round(p, 2),
                      "mean_tpot_spec_ms": round(s, 2), "speedup": round(p / s, 3)}))
sys.exit(1 if failed else 0)
