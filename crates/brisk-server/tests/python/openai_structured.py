"""Structured outputs, tool calls and the Responses API, as a user of the `openai` package sees them.

Usage: python3 openai_structured.py BASE_URL MODEL [SCHEMAS]
Asserts as it goes (a failure exits non-zero with the reason) and prints one JSON line of
what it saw. SCHEMAS (default 12) random JSON schemas are generated from a fixed seed; each
answer, sampled at temperature 1, must validate against its schema with `jsonschema`.
"""
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai

base_url, model = sys.argv[1], sys.argv[2]
schema_count = int(sys.argv[3]) if len(sys.argv) > 3 else 12
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
report = {}


def chat(content, **kw):
    kw.setdefault("max_tokens", 300)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


def random_schema(rng, depth=0):
    """A random schema whose every valid instance is short (bounded strings, arrays, depth)."""
    kinds = ["string", "enum", "pattern", "integer", "number", "boolean"]
    if depth < 2:
        kinds += ["anyof", "array", "object"]
    kind = rng.choice(kinds)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 12)}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "cat", "dog", "yes", "no"], rng.randint(1, 4))}
    if kind == "pattern":
        return {"type": "string", "pattern": rng.choice(["^[a-z]{1,8}$", "^[0-9]{3}-[0-9]{4}$", "^(ab|cd)+$"])}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 100)}
    if kind == "number":
        # A JSON number may have any number of digits, and a hot sample takes them: a
        # `multipleOf` bounds its precision, as a real schema for a price or a score would.
        return {"type": "number", "minimum": 0, "maximum": rng.choice([1, 10, 1000]),
                "multipleOf": rng.choice([0.25, 0.5])}  # exact in binary: no float error in the check
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "anyof":
        return {"anyOf": [random_schema(rng, depth + 1), random_schema(rng, depth + 1)]}
    if kind == "array":
        return {"type": "array", "items": random_schema(rng, depth + 1), "maxItems": rng.randint(1, 3)}
    names = rng.sample(["id", "name", "size", "tags", "ok", "kind", "score", "meta"], rng.randint(1, 3))
    return {
        "type": "object",
        "properties": {n: random_schema(rng, depth + 1) for n in names},
        "required": names,
        "additionalProperties": False,
    }


# json_object: a JSON object comes back. (Nothing bounds its size: a 135M model sampling hot
# can ramble past any max_tokens inside one string, so this one is greedy; the random
# schemas below, bounded, are sampled at temperature 1.)
r = chat("Reply with a JSON object holding a cat's name and age.", response_format={"type": "json_object"},
         temperature=0, max_tokens=600)
assert r.choices[0].finish_reason == "stop", r
assert isinstance(json.loads(r.choices[0].message.content), dict)

# Random schemas, strict, at temperature 1: every answer validates.
rng = random.Random(20261205)
schemas = [random_schema(rng) for _ in range(schema_count)]


def answer(i_schema):
    i, schema = i_schema
    fmt = {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}}
    r = chat("Fill in this form with plausible values.", response_format=fmt, temperature=1.0, seed=i)
    return schema, r.choices[0].finish_reason, r.choices[0].message.content


with ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(answer, enumerate(schemas)))
for schema, finish, text in answers:
    assert finish == "stop", (schema, finish, text)
    jsonschema.validate(json.loads(text), schema)
report["schemas_validated"] = len(answers)

# vLLM's fields: regex, choice, Lark and GBNF grammars.
r = chat("A phone number:", extra_body={"guided_regex": "[0-9]{3}-[0-9]{4}"}, temperature=1.0)
assert len(r.choices[0].message.content) == 8 and r.choices[0].message.content[3] == "-", r
r = chat("Is the sky blue?", extra_body={"guided_choice": ["yes", "no", "maybe"]}, temperature=1.0)
assert r.choices[0].message.content in ("yes", "no", "maybe"), r
r = chat("Add two numbers.", extra_body={"structured_outputs": {"grammar": 'start: NUM " + " NUM\nNUM: /[0-9]{1,3}/'}})
assert " + " in r.choices[0].message.content, r
r = chat("Say yes or no.", extra_body={"guided_grammar": 'root ::= ("yes" | "no") "!"'})
assert r.choices[0].message.content in ("yes!", "no!"), r

# Tools.
weather = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
           "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}
tools = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": weather}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                      "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"]}}},
]
question = [{"role": "user", "content": "What is the weather in Paris?"}]
r = client.chat.completions.create(model=model, messages=question, tools=tools, tool_choice="required",
                                   parallel_tool_calls=False, temperature=1.0, max_tokens=200)
calls = r.choices[0].message.tool_calls
assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1, r
call = calls[0]
assert call.function.name in ("get_weather", "get_time"), call
if call.function.name == "get_weather":
    jsonschema.validate(json.loads(call.function.arguments), weather)
named = {"type": "function", "function": {"name": "get_weather"}}
stream = client.chat.completions.create(model=model, messages=question, tools=tools, tool_choice=named,
                                        temperature=0, max_tokens=200, stream=True)
streamed, finish = [], None
for chunk in stream:
    for choice in chunk.choices:
        streamed.extend(choice.delta.tool_calls or [])
        finish = choice.finish_reason or finish
assert finish == "tool_calls" and streamed and streamed[0].function.name == "get_weather", (finish, streamed)
jsonschema.validate(json.loads(streamed[0].function.arguments), weather)
# The call goes back with its result; the model answers in text.
second = question + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": streamed[0].id, "type": "function",
         "function": {"name": "get_weather", "arguments": streamed[0].function.arguments}}]},
    {"role": "tool", "tool_call_id": streamed[0].id, "content": '{"temperature": 18, "sky": "clear"}'},
]
r = client.chat.completions.create(model=model, messages=second, tools=tools, tool_choice="none",
                                   temperature=0, max_tokens=40)
assert r.choices[0].message.content and not r.choices[0].message.tool_calls, r
report["tool_round_trip"] = r.choices[0].message.content

# The Responses API.
r = client.responses.create(model=model, input="Say hello.", instructions="Be brief.", max_output_tokens=30)
assert r.output_text and r.status in ("completed", "incomplete"), r
assert r.usage.output_tokens > 0
events = [e.type for e in client.responses.create(model=model, input="Say hello.", max_output_tokens=8, stream=True)]
assert events[0] == "response.created" and events[-1] in ("response.completed", "response.incomplete"), events
assert "response.output_text.delta" in events, events
fmt = {"format": {"type": "json_schema", "name": "w", "schema": weather, "strict": True}}
r = client.responses.create(model=model, input="Weather in Oslo as JSON.", text=fmt, max_output_tokens=200, temperature=1.0)
jsonschema.validate(json.loads(r.output_text), weather)
report["responses_events"] = len(events)

# Mistakes are 400s that name the field.
refusals = {}
for name, call_it in {
    "bad_schema": lambda: chat("x", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}),
    "bad_regex": lambda: chat("x", extra_body={"guided_regex": "(unclosed"}),
    "bad_grammar": lambda: chat("x", extra_body={"guided_grammar": "start: undefined_rule"}),
    "bad_gbnf": lambda: chat("x", extra_body={"guided_grammar": 'root ::= "a" ('}),
    "unknown_tool": lambda: client.chat.completions.create(model=model, messages=question, tools=tools,
                                                          tool_choice={"type": "function", "function": {"name": "nope"}}),
    "unknown_field": lambda: chat("x", extra_body={"best_of": 2}),
    "bad_role": lambda: client.chat.completions.create(model=model, messages=[{"role": "robot", "content": "x"}]),
    "stored": lambda: client.responses.create(model=model, input="x", previous_response_id="resp_1"),
    "builtin_tool": lambda: client.responses.create(model=model, input="x", tools=[{"type": "web_search_preview"}]),
}.items():
    try:
        call_it()
        raise AssertionError(f"{name}: no error")
    except openai.BadRequestError as e:
        refusals[name] = e.body.get("param")
report["refusals"] = refusals
print(json.dumps(report))
