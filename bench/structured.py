"""Issue 16: the per-token cost of structured outputs, at 1 and 16 concurrent streams.

Against a running `brisk serve` (URL), each stream asks for the same kind of answer twice
over, without and then with a JSON schema, and the time per output token (TPOT: first token
to last, over the tokens after the first) is read from the streamed chunks. Both modes run in
the same process against the same server, so the ratio compares like with like.

    python3 bench/structured.py URL MODEL [ROUNDS]

Prints one JSON line per concurrency: median TPOT (ms) unconstrained and constrained, their
ratio, and the tokens measured. Raw numbers stay out of git; the summary goes into
BENCHMARKS.md by hand.
"""
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai

url, model = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 6,
            "maxItems": 6,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "city": {"type": "string", "maxLength": 16},
                },
                "required": ["name", "age", "city"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}
PROMPT = "List six people with their name, age and city, as JSON."


def tpot(constrained, seed):
    extra = {}
    if constrained:
        extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA, "strict": True}}
    times = []
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=160,
        temperature=0.8, seed=seed, stream=True, **extra)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 2 else None, len(times)


for streams in (1, 16):
    result = {"streams": streams}
    for constrained in (False, True):
        samples, tokens = [], 0
        with ThreadPoolExecutor(streams) as pool:
            for r in range(rounds):
                for t, n in pool.map(lambda i: tpot(constrained, 1000 * r + i), range(streams)):
                    if t is not None:
                        samples.append(t)
                        tokens += n
        key = "constrained" if constrained else "plain"
        result[f"{key}_tpot_ms"] = round(1e3 * statistics.median(samples), 2)
        result[f"{key}_tokens"] = tokens
    result["ratio"] = round(result["constrained_tpot_ms"] / result["plain_tpot_ms"], 3)
    print(json.dumps(result), flush=True)
