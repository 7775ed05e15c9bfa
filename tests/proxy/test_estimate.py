from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.cost.pricing import Price
from gateway.cost.tokens import (
    CL100K_BASE,
    O200K_BASE,
    Tokenizers,
    default_tokenizers,
    encoder_for,
)
from gateway.proxy import estimate as estimate_module
from gateway.proxy.bounds import Bounds, Defaults
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import (
    IMAGE_MOST,
    IMAGE_MOST_4O_MINI,
    REPLY_PRIMING,
    SCHEMA_OVERHEAD,
    TOKENS_PER_MESSAGE,
    TOOLS_OVERHEAD,
    Estimate,
    count_input_tokens,
    estimate,
)

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = (
    Endpoint.CHAT,
    Endpoint.COMPLETIONS,
    Endpoint.EMBEDDINGS,
    Endpoint.RESPONSES,
)

# The OpenAI cookbook's example ("How to count tokens with tiktoken"), whose prompt_tokens it
# checked against the API: 124 on gpt-4o / gpt-4o-mini, 129 on gpt-4 / gpt-3.5-turbo.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def tokens(text: str, model: str = "gpt-4o") -> int:
    return encoder_for(model).count(text)


def cookbook(messages: list[dict[str, str]], model: str) -> int:
    """The cookbook's num_tokens_from_messages, verbatim in substance."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += tokens(value, model)
            if key == "name":
                total += 1
    return total + 3


def chat(messages: list[Any], model: str = "gpt-4o", **extra: Any) -> int:
    count, exact = count_input_tokens(CHAT, {"model": model, "messages": messages, **extra})
    assert exact
    return count


def user(content: Any) -> int:
    """Tokens of a one-message chat whose user content is ``content``."""
    return chat([{"role": "user", "content": content}])


BARE_USER = TOKENS_PER_MESSAGE + 1 + REPLY_PRIMING  # framing plus the role "user"


# --- chat ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "api_count"),
    [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129), ("gpt-3.5-turbo", 129)],
)
def test_chat_matches_cookbook_and_api(model: str, api_count: int) -> None:
    assert chat(COOKBOOK_MESSAGES, model) == cookbook(COOKBOOK_MESSAGES, model) == api_count


def test_chat_content_null_or_missing_counts_framing_only() -> None:
    assert user(None) == BARE_USER
    assert chat([{"role": "user"}]) == BARE_USER


def test_chat_text_parts_count_their_text() -> None:
    parts = [{"type": "text", "text": "hello world"}, {"type": "text", "text": " again"}]
    assert user(parts) == BARE_USER + tokens("hello world") + tokens(" again")


@pytest.mark.parametrize(
    ("image_url", "expected"),
    [
        ({"url": "https://x/cat.png", "detail": "low"}, IMAGE_MOST),
        ({"url": "https://x/cat.png", "detail": "high"}, IMAGE_MOST),
        ({"url": "https://x/cat.png", "detail": "auto"}, IMAGE_MOST),
        ({"url": "https://x/cat.png"}, IMAGE_MOST),
        ("https://x/cat.png", IMAGE_MOST),
    ],
)
def test_chat_image_parts_count_the_most_one_image_bills(image_url: object,
                                                          expected: int) -> None:
    assert user([{"type": "image_url", "image_url": image_url}]) == BARE_USER + expected
    mini = {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": image_url}]}]}
    assert count_input_tokens(CHAT, mini)[0] == BARE_USER + IMAGE_MOST_4O_MINI


async def test_chat_audio_and_file_parts_are_hidden_input_bounded_by_the_context() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    file = {"type": "file", "file": {"file_id": "file-1"}}
    assert user([audio, file]) == BARE_USER
    body = {"model": "gpt-4o", "max_tokens": 100,
            "messages": [{"role": "user", "content": [audio, file]}]}
    result = await estimate(CHAT, body, PRICE, DEFAULTS)
    assert result.hidden and result.input_tokens == PRICE.context_window - 100


def test_chat_tool_calls_count_name_and_arguments() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
    }
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
    ]
    expected = (
        2 * TOKENS_PER_MESSAGE
        + REPLY_PRIMING
        + tokens("assistant")
        + tokens("get_current_weather")
        + tokens('{"location": "Paris"}')
        + tokens("tool")
        + tokens("call_1")
        + tokens("22 C")
    )
    assert chat(messages) == expected


def test_chat_legacy_function_call() -> None:
    message = {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}
    assert chat([message]) == cookbook([{"role": "assistant"}], "gpt-4o") + tokens("f") + 1


def test_chat_tools_count_their_json_and_exceed_what_the_api_bills() -> None:
    with_tools = chat(WEATHER_MESSAGES, tools=WEATHER_TOOLS)
    without = chat(WEATHER_MESSAGES)
    assert with_tools - without == tokens(orjson.dumps(WEATHER_TOOLS).decode()) + TOOLS_OVERHEAD
    assert with_tools >= 101  # the cookbook's API-reported prompt_tokens for this request
    legacy = chat(WEATHER_MESSAGES, functions=[WEATHER_TOOLS[0]["function"]])
    assert without < legacy < with_tools


def test_chat_json_schema_response_format() -> None:
    schema = {"name": "answer", "schema": {"type": "object", "properties": {}}}
    fmt = {"type": "json_schema", "json_schema": schema}
    plain = chat(WEATHER_MESSAGES)
    extra = tokens(orjson.dumps(schema).decode()) + SCHEMA_OVERHEAD
    assert chat(WEATHER_MESSAGES, response_format=fmt) == plain + extra
    assert chat(WEATHER_MESSAGES, response_format={"type": "json_object"}) == plain


def test_chat_special_token_text_does_not_raise() -> None:
    assert user("ignore <|endoftext|> and <|im_start|>") > BARE_USER


@pytest.mark.parametrize(
    "messages",
    [
        "not a list",
        [None, 3, "text"],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": [None, 7, {"type": 9}, {"type": "mystery", "text": "hi"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": None}]}],
        [{"role": "assistant", "tool_calls": "nope"}],
        [{"role": "assistant", "tool_calls": [None, {"function": 3}]}],
    ],
)
def test_unexpected_chat_shapes_do_not_crash(messages: Any) -> None:
    count, exact = count_input_tokens(CHAT, {"model": "gpt-4o", "messages": messages})
    assert count >= REPLY_PRIMING and exact


def test_unknown_part_counts_its_text_field() -> None:
    assert user([{"type": "mystery", "text": "hello world"}]) == BARE_USER + 2


def test_unknown_or_missing_model_is_estimated() -> None:
    count, exact = count_input_tokens(CHAT, {"model": "llama-3", "messages": WEATHER_MESSAGES})
    assert not exact and count > 0
    assert count_input_tokens(CHAT, {"messages": []}) == (REPLY_PRIMING, False)


# --- completions and embeddings -----------------------------------------------------------


@pytest.mark.parametrize("endpoint", [COMPLETIONS, EMBEDDINGS])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello world", 2),
        (["hello world", "hello world"], 4),
        ([15339, 1917, 0], 3),
        ([[15339, 1917], [0], []], 3),
        ([], 0),
        ({"not": "valid"}, 0),
        (None, 0),
    ],
)
def test_prompt_shapes(endpoint: Endpoint, value: object, expected: int) -> None:
    field = "prompt" if endpoint is COMPLETIONS else "input"
    body = {"model": "text-embedding-3-small", field: value}
    assert count_input_tokens(endpoint, body) == (expected, True)


def test_completions_suffix() -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "hello", "suffix": " world"}
    assert count_input_tokens(COMPLETIONS, body)[0] == tokens("hello") + tokens(" world")


# --- responses ----------------------------------------------------------------------------


def responses(body: dict[str, Any]) -> int:
    count, exact = count_input_tokens(RESPONSES, {"model": "gpt-4o", **body})
    assert exact
    return count


def test_responses_string_input_and_instructions() -> None:
    body = {"instructions": "Be brief.", "input": "hello world"}
    as_messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "hello world"},
    ]
    assert responses(body) == cookbook(as_messages, "gpt-4o")


def test_responses_items() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "hello world"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hi"}],
        },
        {"role": "user", "content": [{"type": "input_image", "image_url": "x", "detail": "low"}]},
        {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]},
        {"role": "user", "content": [{"type": "input_file", "file_id": "file-2"}]},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": 1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "found it"},
        {"type": "item_reference", "id": "msg_1"},
    ]
    expected = (
        (len(items) - 1) * TOKENS_PER_MESSAGE  # the item reference is hidden, not framed
        + REPLY_PRIMING
        + 4 * tokens("user")
        + tokens("hello world")
        + tokens("assistant")
        + tokens("hi")
        + 2 * IMAGE_MOST
        + tokens("lookup")
        + tokens('{"q": 1}')
        + tokens("found it")
    )
    assert responses({"input": items}) == expected


def test_responses_tools_and_text_format() -> None:
    base = responses({"input": "hi"})
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    fmt = {"type": "json_schema", "name": "a", "schema": {"type": "object"}}
    expected = (
        base
        + tokens(orjson.dumps(tools).decode())
        + TOOLS_OVERHEAD
        + tokens(orjson.dumps(fmt).decode())
        + SCHEMA_OVERHEAD
    )
    assert responses({"input": "hi", "tools": tools, "text": {"format": fmt}}) == expected


@pytest.mark.parametrize("items", [[None, 3, "loose text", {"type": 5}], {"x": 1}, 12])
def test_unexpected_responses_shapes_do_not_crash(items: object) -> None:
    assert responses({"input": items, "instructions": None, "text": "x"}) >= REPLY_PRIMING


# --- the estimate ---------------------------------------------------------------------

PRICE = Price(Price.per_million(1.0, 0.5, 4.0).rates, context_window=1_000_000,
              max_output_tokens=16_384)
DEFAULTS = Defaults()


def test_estimate_value() -> None:
    e = Estimate(10, Bounds(cap=30, choices=3), visible=10)
    assert (e.output_tokens, e.total) == (90, 100)
    assert e.with_output(5).total == 25


def test_a_lower_cap_raises_a_hidden_input_bound() -> None:
    e = Estimate(1000 - 30, Bounds(cap=30), hidden=True, visible=10, context=1000)
    assert e.with_output(5).input_tokens == 995


# --- the async stage ----------------------------------------------------------------------


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    calls: list[Callable[..., Any]] = []
    real = asyncio.to_thread

    async def spy(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    return calls


async def test_small_body_is_counted_on_the_loop(thread_calls: list[Any]) -> None:
    body = {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES, "max_tokens": 10, "n": 2}
    result = await estimate(CHAT, body, PRICE, DEFAULTS)
    assert (result.input_tokens, result.output_tokens, result.exact) == (124, 20, True)
    assert thread_calls == []


async def test_big_body_is_counted_on_a_thread(thread_calls: list[Any]) -> None:
    prose = "The quick brown fox jumps over the lazy dog; budgets hold. " * 12_000  # ~700 KB
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prose}]}
    result = await estimate(CHAT, body, PRICE, Defaults(max_output_tokens=1024))
    assert len(thread_calls) == 1
    assert (result.input_tokens, result.output_tokens) == (count_input_tokens(CHAT, body)[0],
                                                           1024)


async def test_a_vocabulary_not_preloaded_loads_on_a_thread_once(
    thread_calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = Tokenizers()
    monkeypatch.setattr(estimate_module, "default_tokenizers", lambda: fresh)
    body = {"model": "text-embedding-3-small", "input": "hello world"}
    assert not fresh.loaded(CL100K_BASE)
    result = await estimate(EMBEDDINGS, body, PRICE, DEFAULTS)
    assert (result.input_tokens, result.output_tokens) == (2, 0)
    assert thread_calls == [fresh.encoding] and fresh.loaded(CL100K_BASE)
    await estimate(EMBEDDINGS, body, PRICE, DEFAULTS)
    assert len(thread_calls) == 1


def test_only_the_current_vocabulary_is_preloaded() -> None:
    fresh = Tokenizers()
    fresh.preload()
    assert fresh.loaded(O200K_BASE) and not fresh.loaded(CL100K_BASE)


async def test_offload_threshold_is_the_collected_text_length(thread_calls: list[Any]) -> None:
    body = {"model": "text-embedding-3-small", "input": ["x" * 600, "y" * 600]}
    default_tokenizers().encoding(CL100K_BASE)  # loaded: only counting may go to a thread
    await estimate(EMBEDDINGS, body, PRICE, DEFAULTS, offload_above_chars=1_200)
    assert thread_calls == []
    await estimate(EMBEDDINGS, body, PRICE, DEFAULTS, offload_above_chars=1_199)
    assert len(thread_calls) == 1


async def test_estimated_models_are_never_offloaded(thread_calls: list[Any]) -> None:
    body = {"model": "llama-3", "prompt": "word " * 200_000}
    unbounded = Price(PRICE.rates)  # no context window: the byte count stands
    result = await estimate(COMPLETIONS, body, unbounded, DEFAULTS)
    assert (result.input_tokens, result.output_tokens, result.exact) == (1_000_000, 16, False)
    assert thread_calls == []
