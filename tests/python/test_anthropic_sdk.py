"""The official Anthropic Python SDK against `tollgate serve`'s Messages API (`/v1/messages`).

infra/test.sh starts the gateway (simulated providers) and passes its URL, the demo keys and the
file that receives its EMF lines through the environment. The SDK sends the key in `x-api-key`
and `anthropic-version`, as it does against Anthropic.
"""

import json
import os
import time
from pathlib import Path

import anthropic
import pytest

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
ACME_KEY = os.environ["TOLLGATE_ACME_KEY"]
EMF_LOG = Path(os.environ["TOLLGATE_EMF_LOG"])


def client(key=ACME_KEY):
    # The SDK appends /v1/messages to the base URL.
    return anthropic.Anthropic(base_url=BASE_URL, api_key=key, max_retries=0)


def emf_line(request_id, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in EMF_LOG.read_text().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("RequestId") == request_id and "_aws" in doc:
                    return doc
        time.sleep(0.05)
    raise AssertionError(f"no EMF line for {request_id}")


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o"])
def test_a_message_is_answered_in_anthropics_shape_on_either_providers_route(model):
    raw = client().messages.with_raw_response.create(
        model=model,
        max_tokens=200,
        system="Answer briefly.",
        messages=[{"role": "user", "content": f"What do you sell? ({model})"}],
        metadata={"user_id": "end-user-1"},
        extra_headers={"Cache-Control": "no-cache"},
    )
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == model
    assert message.content[0].type == "text"
    assert message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    doc = emf_line(raw.headers["x-request-id"])
    assert doc["TenantId"] == "acme"
    assert doc["Model"] == model
    assert doc["CompletionTokens"] == message.usage.output_tokens


def test_a_streamed_message_accumulates_to_the_same_text_and_final_usage():
    with client().messages.stream(
        model="claude-haiku",
        max_tokens=200,
        messages=[{"role": "user", "content": "Stream a short answer."}],
        extra_headers={"Cache-Control": "no-cache"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


def test_a_bad_key_raises_authentication_error():
    with pytest.raises(anthropic.AuthenticationError) as err:
        client("tg_live_not-a-key").messages.create(
            model="claude-haiku", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.body["error"]["type"] == "authentication_error"


def test_a_bad_body_raises_bad_request_error_and_an_unknown_model_not_found():
    with pytest.raises(anthropic.BadRequestError) as err:
        client().messages.create(
            model="claude-haiku", max_tokens=0, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in err.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        client().messages.create(
            model="made-up", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_runs_through_the_messages_api_on_either_providers_route(model, stream):
    messages = [{"role": "user", "content": f"Weather in Rome? ({model}, stream={stream})"}]
    kwargs = dict(
        model=model,
        max_tokens=300,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_headers={"Cache-Control": "no-cache"},
    )
    if stream:
        # The SDK's stream helper assembles tool_use blocks from input_json_delta events.
        with client().messages.stream(messages=messages, **kwargs) as s:
            first = s.get_final_message()
    else:
        first = client().messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(calls[0].input["city"], str)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Rome: 24 degrees"}],
        },
    ]
    del kwargs["tool_choice"]
    raw = client().messages.with_raw_response.create(messages=messages, **kwargs)
    answer = raw.parse()
    assert answer.stop_reason == "end_turn"
    assert "Rome: 24 degrees" in answer.content[0].text
    doc = emf_line(raw.headers["x-request-id"])
    assert doc["CompletionTokens"] == answer.usage.output_tokens


def test_an_image_block_is_answered():
    import base64
    import struct

    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 32, 32)
    data = base64.b64encode(header + b"\x08\x06\x00\x00\x00").decode()
    message = client().messages.create(
        model="claude-haiku",
        max_tokens=300,
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
            {"type": "text", "text": "Describe this image."},
        ]}],
        extra_headers={"Cache-Control": "no-cache"},
    )
    assert "You sent 1 image." in message.content[0].text


def test_count_tokens_returns_the_prompt_a_message_would_send():
    counted = client().messages.count_tokens(
        model="claude-haiku",
        messages=[{"role": "user", "content": "How many tokens is this?"}],
        tools=[WEATHER_TOOL],
    )
    plain = client().messages.count_tokens(
        model="claude-haiku", messages=[{"role": "user", "content": "How many tokens is this?"}]
    )
    assert plain.input_tokens > 0
    assert counted.input_tokens > plain.input_tokens
