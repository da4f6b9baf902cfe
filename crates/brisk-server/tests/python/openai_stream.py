"""Streams a chat completion and a completion from brisk with the official `openai` package.

Usage: python3 openai_stream.py BASE_URL MODEL
Prints one JSON line with what it received; exits non-zero on any failure.
"""
import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused")

pieces = []
finish = None
usage = None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=8,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason

completion = client.completions.create(model=model, prompt="1, 2, 3, 4, 5, 6,", max_tokens=8, temperature=0)
models = [m.id for m in client.models.list()]
print(json.dumps({
    "chat": "".join(pieces),
    "chunks": len(pieces),
    "finish": finish,
    "usage": usage,
    "completion": completion.choices[0].text,
    "models": models,
}))
