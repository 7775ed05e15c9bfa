"""The bounds the gateway makes where a request gives none, and what it refuses to let through."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cost.pricing import Price
from gateway.errors import InvalidRequest
from gateway.proxy.bounds import Defaults, input_bound, output_bounds
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import estimate

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = (
    Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS, Endpoint.RESPONSES,
)
RATES = Price.per_million(1.0, 0.5, 4.0).rates
MODEL = Price(RATES, context_window=400_000, max_output_tokens=128_000)
DEFAULTS = Defaults()


def cap(endpoint: Endpoint, body: dict[str, Any], price: Price = MODEL,
        defaults: Defaults = DEFAULTS, visible: int = 100) -> tuple[int, int, bool]:
    b = output_bounds(endpoint, body, price, defaults, visible_input=visible, hidden=False)
    return b.cap, b.output_tokens, b.set_cap


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (CHAT, {}, (128_000, 128_000, True)),  # the model's own maximum, told upstream
        (CHAT, {"max_tokens": 50}, (50, 50, False)),
        (CHAT, {"max_completion_tokens": 70, "max_tokens": 50}, (70, 70, False)),
        (CHAT, {"max_completion_tokens": None, "max_tokens": 50}, (50, 50, False)),
        (CHAT, {"max_tokens": 50, "n": 3}, (50, 150, False)),
        (CHAT, {"n": 2}, (128_000, 256_000, True)),
        (COMPLETIONS, {}, (16, 16, True)),  # the endpoint's own default, made explicit
        (COMPLETIONS, {"max_tokens": 16, "n": 2, "best_of": 5}, (16, 80, False)),
        (RESPONSES, {"max_output_tokens": 300}, (300, 300, False)),
        (RESPONSES, {}, (128_000, 128_000, True)),
        (EMBEDDINGS, {"max_tokens": 300}, (0, 0, False)),
    ],
)
def test_output_cap(endpoint: Endpoint, body: dict[str, Any],
                    expected: tuple[int, int, bool]) -> None:
    assert cap(endpoint, body) == expected


def test_a_lower_default_from_ops_globally_or_per_model() -> None:
    assert cap(CHAT, {}, defaults=Defaults(max_output_tokens=1000))[0] == 1000
    per_model = Price(RATES, context_window=400_000, max_output_tokens=128_000,
                      default_max_output_tokens=500)
    assert cap(CHAT, {}, per_model, Defaults(max_output_tokens=1000))[0] == 500
    assert cap(CHAT, {}, defaults=Defaults(max_output_tokens=10**9))[0] == 128_000


def test_the_default_cap_leaves_room_for_the_visible_input() -> None:
    assert cap(CHAT, {}, visible=390_000)[0] == 10_000  # as the upstream itself would allow
    assert cap(RESPONSES, {}, visible=399_999)[0] == 16  # never below the endpoint's minimum


def test_a_model_with_no_known_maximum_needs_a_cap() -> None:
    with pytest.raises(InvalidRequest, match="max_completion_tokens"):
        cap(CHAT, {}, Price(RATES))
    assert cap(CHAT, {"max_tokens": 10}, Price(RATES))[0] == 10
    assert cap(CHAT, {}, Price(RATES, context_window=8000))[0] == 7900  # the context bounds it


def test_hidden_context_is_bounded_by_the_context_window() -> None:
    b = output_bounds(RESPONSES, {"max_output_tokens": 1000}, MODEL, DEFAULTS,
                      visible_input=10, hidden=True)
    assert input_bound(10, True, b, 400_000, "m") == 399_000
    with pytest.raises(InvalidRequest, match="context window"):
        input_bound(10, True, b, None, "m")
    assert input_bound(10, False, b, None, "m") == 10


def test_built_in_tools_get_a_call_cap_and_a_pass_each_over_the_context() -> None:
    body = {"tools": [{"type": "web_search"}, {"type": "function", "name": "f"}],
            "max_output_tokens": 1000}
    b = output_bounds(RESPONSES, body, MODEL, DEFAULTS, visible_input=10, hidden=False)
    assert (b.calls, b.set_calls) == (DEFAULTS.max_tool_calls, True)
    assert input_bound(10, False, b, 400_000, "m") == 10 + 4 * 399_000
    own = output_bounds(RESPONSES, {**body, "max_tool_calls": 2}, MODEL, DEFAULTS,
                        visible_input=10, hidden=False)
    assert (own.calls, own.set_calls) == (2, False)
    functions_only = output_bounds(RESPONSES, {"tools": [{"type": "function"}]}, MODEL,
                                   DEFAULTS, visible_input=10, hidden=False)
    assert functions_only.calls == 0


@pytest.mark.parametrize("tool", ["code_interpreter", "image_generation", "future_tool"])
def test_tools_with_fees_that_cannot_be_bounded_are_refused(tool: str) -> None:
    with pytest.raises(InvalidRequest, match=tool):
        output_bounds(RESPONSES, {"tools": [{"type": tool}]}, MODEL, DEFAULTS,
                      visible_input=1, hidden=False)


@pytest.mark.parametrize(
    ("tier", "tiers", "set_tier"),
    [
        (None, ("default",), "default"),
        ("auto", ("default",), "default"),
        ("priority", ("priority", "default"), None),
        ("flex", ("flex",), None),
        ("default", ("default",), None),
    ],
)
def test_service_tiers(tier: str | None, tiers: tuple[str, ...], set_tier: str | None) -> None:
    body = {"service_tier": tier} if tier else {}
    b = output_bounds(CHAT, body, MODEL, DEFAULTS, visible_input=1, hidden=False)
    assert (b.tiers, b.set_tier) == (tiers, set_tier)
    own = output_bounds(CHAT, body, MODEL, Defaults(service_tier="priority"), visible_input=1,
                        hidden=False)
    if tier in (None, "auto"):
        assert own.tiers == ("priority",)


async def test_predicted_output_is_reserved_as_output() -> None:
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "prediction": {"type": "content", "content": "one two three four"}}
    result = await estimate(CHAT, body, MODEL, DEFAULTS)
    assert result.output_tokens == 10 + 4


async def test_responses_reference_items_and_stored_context_are_hidden() -> None:
    for extra in ({"previous_response_id": "resp_1"}, {"conversation": "conv_1"},
                  {"prompt": {"id": "pmpt_1"}},
                  {"input": [{"type": "item_reference", "id": "msg_1"}]}):
        body = {"model": "gpt-5", "input": "hi", "max_output_tokens": 1000, **extra}
        result = await estimate(RESPONSES, body, MODEL, DEFAULTS)
        assert result.hidden and result.input_tokens == 399_000, extra
