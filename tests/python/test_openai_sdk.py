"""The official OpenAI Python SDK against `tollgate serve`.

infra/test.sh starts the gateway and passes its URL, the demo keys and the file that receives
its EMF lines through the environment. Every test checks what a tenant's developer would see.
"""

import json
import os
import time
from decimal import Decimal
from pathlib import Path

import openai
import pytest

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
ACME_KEY = os.environ["TOLLGATE_ACME_KEY"]
GLOBEX_KEY = os.environ["TOLLGATE_GLOBEX_KEY"]
EMF_LOG = Path(os.environ["TOLLGATE_EMF_LOG"])
PRICES = json.loads(
    (Path(__file__).parents[2] / "shared" / "data" / "prices.json").read_text()
)


def client(key=ACME_KEY):
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0)


def price(provider, model):
    for entry in PRICES["models"]:
        if entry["provider"] == provider and entry["model"] == model:
            return entry
    raise KeyError(model)


def emf_line(request_id, timeout=5.0):
    """The EMF document the gateway wrote for `request_id` (written when metering ends)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in EMF_LOG.read_text().splitlines():
            if not line.startswith("{"):
                continue
            doc = json.loads(line)
            if doc.get("RequestId") == request_id and "_aws" in doc:
                return doc
        time.sleep(0.05)
    raise AssertionError(f"no EMF line for {request_id}")


def expected_cost(provider, model, prompt, completion, cached=0):
    p = price(provider, model)
    cached_price = Decimal(p.get("cached_input", p["input"]))
    return (
        Decimal(prompt - cached) * Decimal(p["input"])
        + Decimal(cached) * cached_price
        + Decimal(completion) * Decimal(p["output"])
    ) / Decimal(1_000_000)


def test_a_buffered_completion_has_content_usage_and_one_emf_line_with_its_cost():
    raw = client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What do you sell?"}],
        extra_headers={"Cache-Control": "no-cache"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0

    doc = emf_line(raw.headers["x-request-id"])
    assert doc["TenantId"] == "acme"
    assert doc["Model"] == "gpt-4o-mini"
    assert doc["PromptTokens"] == completion.usage.prompt_tokens
    assert doc["CompletionTokens"] == completion.usage.completion_tokens
    cost = expected_cost(
        "openai", "gpt-4o-mini", completion.usage.prompt_tokens, completion.usage.completion_tokens
    )
    assert Decimal(doc["CostUSDExact"]) == cost


def test_a_streamed_completion_delivers_deltas_and_final_usage():
    stream = client(GLOBEX_KEY).chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert "Stream please" in text
    assert usage is not None and usage.completion_tokens > 0
    # globex's long system prompt is written to (simulated) Anthropic's prompt cache.
    assert usage.prompt_tokens > 1024


def test_a_streamed_call_is_metered_like_a_buffered_one():
    raw = client(GLOBEX_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Count me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in raw.parse():
        if chunk.usage:
            usage = chunk.usage
    doc = emf_line(raw.headers["x-request-id"])
    assert doc["Streamed"] is True
    assert doc["PromptTokens"] == usage.prompt_tokens
    assert doc["CompletionTokens"] == usage.completion_tokens
    cached = usage.prompt_tokens_details.cached_tokens
    assert Decimal(doc["CostUSDExact"]) == expected_cost(
        "openai", "gpt-4o", usage.prompt_tokens, usage.completion_tokens, cached
    )


def test_a_bad_key_raises_authentication_error():
    with pytest.raises(openai.AuthenticationError) as err:
        client("tg_AAAAAAAAAAAA_" + "B" * 40).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.code == "invalid_api_key"


def test_a_malformed_request_raises_bad_request_error():
    with pytest.raises(openai.BadRequestError) as err:
        client().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=-1,
        )
    assert err.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        client().chat.completions.create(model="gpt-4o-mini", messages=[])


def test_an_unknown_model_raises_not_found_error():
    with pytest.raises(openai.NotFoundError) as err:
        client().chat.completions.create(
            model="gpt-imaginary", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.code == "model_not_found"


def test_embeddings_create_returns_vectors_and_one_emf_line_with_their_exact_cost():
    # The SDK asks for base64 and decodes it itself: that path is the one exercised here.
    raw = client().embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["Refunds are issued within 30 days.", "Launch windows open at dawn."],
        dimensions=64,
    )
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 64 for d in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens

    doc = emf_line(raw.headers["x-request-id"])
    assert doc["TenantId"] == "acme"
    assert doc["Model"] == "text-embedding-3-small"
    assert doc["PromptTokens"] == result.usage.prompt_tokens
    cost = expected_cost("openai", "text-embedding-3-small", result.usage.prompt_tokens, 0)
    assert Decimal(doc["CostUSDExact"]) == cost

    floats = client().embeddings.create(
        model="text-embedding-3-small",
        input="Refunds are issued within 30 days.",
        dimensions=64,
        encoding_format="float",
    )
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding)


def test_a_repeated_embeddings_call_is_a_cache_hit_at_no_cost():
    text = f"Cache me {time.time_ns()}"
    first = client().embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    again = client().embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
    assert first.headers["x-tollgate-cache"] == "miss"
    assert again.headers["x-tollgate-cache"] == "hit"
    assert again.parse().data[0].embedding == first.parse().data[0].embedding
    doc = emf_line(again.headers["x-request-id"])
    assert Decimal(doc["CostUSDExact"]) == 0


def test_embeddings_on_a_chat_model_raise_bad_request_error():
    with pytest.raises(openai.BadRequestError) as err:
        client().embeddings.create(model="gpt-4o-mini", input="hello")
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client(GLOBEX_KEY).embeddings.create(model="text-embedding-3-small", input="hello")


def test_models_lists_only_the_tenants_own_routes():
    acme = {m.id for m in client().models.list()}
    globex = {m.id for m in client(GLOBEX_KEY).models.list()}
    assert "claude-haiku" in acme and "claude-haiku" not in globex
    assert "claude-sonnet" in globex and "claude-sonnet" not in acme


def test_the_response_cache_serves_repeats_for_tenants_that_opt_in():
    def ask():
        return client().chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Cache me if you can"}],
        )

    first, second = ask(), ask()
    assert first.headers["x-tollgate-cache"] in ("miss", "hit")
    assert second.headers["x-tollgate-cache"] == "hit"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    assert emf_line(second.headers["x-request-id"])["CacheHit"] == 1


TRIP_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "nights": {"type": "integer", "minimum": 1},
        "season": {"type": "string", "enum": ["summer", "winter"]},
    },
    "required": ["city", "nights", "season"],
    "additionalProperties": False,
}


def test_a_json_schema_response_format_gets_conforming_json_from_either_provider():
    # acme's gpt-4o-mini is OpenAI (response_format as sent), globex's is Anthropic (a forced tool).
    for key in (ACME_KEY, GLOBEX_KEY):
        for stream in (False, True):
            kwargs = dict(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Plan a trip as JSON."}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "trip", "strict": True, "schema": TRIP_SCHEMA},
                },
                extra_headers={"Cache-Control": "no-cache"},
            )
            if stream:
                chunks = client(key).chat.completions.create(stream=True, **kwargs)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                text = client(key).chat.completions.create(**kwargs).choices[0].message.content
            trip = json.loads(text)
            assert set(trip) == {"city", "nights", "season"}
            assert isinstance(trip["nights"], int) and trip["nights"] >= 1
            assert trip["season"] in ("summer", "winter")


def test_a_response_format_without_a_schema_name_raises_bad_request_error():
    with pytest.raises(openai.BadRequestError) as err:
        client().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"schema": TRIP_SCHEMA}},
        )
    assert err.value.param == "response_format.json_schema.name"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


def run_tool(call):
    """The client side of the loop: the tool's result for the model's call."""
    args = json.loads(call.function.arguments)
    assert call.function.name == "get_weather"
    return f"{args['city']}: 21 degrees {args['unit']}, clear"


@pytest.mark.parametrize(
    "model,provider,provider_model",
    [("gpt-4o-mini", "openai", "gpt-4o-mini"), ("claude-haiku", "anthropic", "claude-haiku-4-5")],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_full_tool_loop_runs_on_either_providers_route(model, provider, provider_model, stream):
    question = f"What's the weather in Paris? ({model}, stream={stream})"
    messages = [{"role": "user", "content": question}]
    kwargs = dict(model=model, tools=[WEATHER_TOOL], extra_headers={"Cache-Control": "no-cache"})

    # Step 1: the model calls the tool.
    if stream:
        raw = client().chat.completions.with_raw_response.create(
            messages=messages, stream=True, stream_options={"include_usage": True}, **kwargs
        )
        calls, finish, usage = {}, None, None
        for chunk in raw.parse():
            if chunk.usage:
                usage = chunk.usage
            if not chunk.choices:
                continue
            finish = chunk.choices[0].finish_reason or finish
            for piece in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] += (piece.function.name or "") if piece.function else ""
                call["arguments"] += (piece.function.arguments or "") if piece.function else ""
        assert finish == "tool_calls"
        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}}
                for _, c in sorted(calls.items())
            ],
        }
        tool_calls = [openai.types.chat.ChatCompletionMessageToolCall(**c) for c in assistant["tool_calls"]]
    else:
        raw = client().chat.completions.with_raw_response.create(messages=messages, **kwargs)
        completion = raw.parse()
        assert completion.choices[0].finish_reason == "tool_calls"
        assert completion.choices[0].message.content is None
        tool_calls = completion.choices[0].message.tool_calls
        usage = completion.usage
        assistant = completion.choices[0].message.model_dump(exclude_none=True)
    assert len(tool_calls) == 1
    doc = emf_line(raw.headers["x-request-id"])
    assert Decimal(doc["CostUSDExact"]) == expected_cost(
        provider, provider_model, usage.prompt_tokens, usage.completion_tokens,
        usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0,
    )

    # Step 2: the client runs the tool and sends the result; the model answers from it.
    result = run_tool(tool_calls[0])
    messages += [assistant, {"role": "tool", "tool_call_id": tool_calls[0].id, "content": result}]
    raw = client().chat.completions.with_raw_response.create(messages=messages, **kwargs)
    answer = raw.parse()
    assert answer.choices[0].finish_reason == "stop"
    assert result in answer.choices[0].message.content
    doc = emf_line(raw.headers["x-request-id"])
    assert Decimal(doc["CostUSDExact"]) == expected_cost(
        provider, provider_model, answer.usage.prompt_tokens, answer.usage.completion_tokens,
        answer.usage.prompt_tokens_details.cached_tokens if answer.usage.prompt_tokens_details else 0,
    )


def test_a_tool_message_answering_no_call_raises_bad_request_error():
    with pytest.raises(openai.BadRequestError) as err:
        client().chat.completions.create(
            model="gpt-4o-mini",
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_nope", "content": "x"},
            ],
        )
    assert err.value.body["param"] == "messages[1].tool_call_id"


def tiny_png(width=64, height=48):
    """A PNG signature and header (what the gateway reads dimensions from), as a data URL."""
    import base64
    import struct

    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height)
    return "data:image/png;base64," + base64.b64encode(header + b"\x08\x06\x00\x00\x00").decode()


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
def test_an_image_request_is_answered_and_metered_on_either_providers_route(model):
    raw = client().chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": tiny_png(), "detail": "low"}},
        ]}],
        extra_headers={"Cache-Control": "no-cache"},
    )
    completion = raw.parse()
    assert "You sent 1 image." in completion.choices[0].message.content
    doc = emf_line(raw.headers["x-request-id"])
    assert doc["PromptTokens"] == completion.usage.prompt_tokens


def test_an_unsupported_image_raises_bad_request_error():
    with pytest.raises(openai.BadRequestError) as err:
        client().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}},
            ]}],
        )
    assert err.value.body["param"] == "messages[0].content[0].image_url.url"


def usage_events(request_ids, timeout=5.0):
    """The tenant's usage events for `request_ids`, from `GET /v1/usage/events`."""
    import urllib.request

    deadline = time.time() + timeout
    while True:
        req = urllib.request.Request(
            f"{BASE_URL}/v1/usage/events?limit=100", headers={"Authorization": f"Bearer {ACME_KEY}"}
        )
        with urllib.request.urlopen(req) as res:
            items = json.loads(res.read())["data"]
        found = {e["request_id"]: e for e in items if e["request_id"] in request_ids}
        if len(found) == len(request_ids) or time.time() > deadline:
            return found
        time.sleep(0.05)


def test_a_tool_loop_and_an_embeddings_call_appear_in_the_usage_api_with_exact_costs():
    kwargs = dict(model="gpt-4o-mini", tools=[WEATHER_TOOL], extra_headers={"Cache-Control": "no-cache"})
    messages = [{"role": "user", "content": "Weather in Lisbon? (usage report)"}]
    first = client().chat.completions.with_raw_response.create(messages=messages, **kwargs)
    call = first.parse().choices[0].message.tool_calls[0]
    messages += [
        first.parse().choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": run_tool(call)},
    ]
    second = client().chat.completions.with_raw_response.create(messages=messages, **kwargs)
    # A text no other test embeds: acme's response cache would serve a repeat at $0.
    embedded = client().embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=[f"Usage report check {time.time_ns()}."]
    )
    expected = {}
    for raw in (first, second):
        usage = raw.parse().usage
        expected[raw.headers["x-request-id"]] = expected_cost(
            "openai", "gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens
        )
    expected[embedded.headers["x-request-id"]] = expected_cost(
        "openai", "text-embedding-3-small", embedded.parse().usage.prompt_tokens, 0
    )
    events = usage_events(set(expected))
    assert set(events) == set(expected), events
    for request_id, cost in expected.items():
        assert Decimal(events[request_id]["cost_usd"]) == cost, events[request_id]
