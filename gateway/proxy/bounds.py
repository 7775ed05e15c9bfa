"""What a request may bill at most, and the caps the gateway sets upstream to make it so.

A reservation is only as good as its bound. Where the request gives none, the gateway makes
one and tells the upstream: an output cap (the model's maximum output, or a lower default ops
chose), a built-in tool-call cap, a service tier. Context the gateway cannot see (an earlier
response, a conversation, a stored prompt, a file, search results) is bounded by the model's
context window less the output cap: the upstream refuses a call whose input and output cap
exceed it. What cannot be bounded at all is refused with a 400 that says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.cost.pricing import DEFAULT_TIER, Price
from gateway.errors import InvalidRequest
from gateway.proxy.endpoints import Endpoint

COMPLETIONS_DEFAULT_MAX_TOKENS = 16
"""The legacy completions endpoint writes at most 16 tokens when ``max_tokens`` is absent."""

_MIN_CAP = {Endpoint.RESPONSES: 16}  # OpenAI refuses max_output_tokens below 16

# Built-in Responses tools whose calls bill a fee and feed the model context the gateway never
# sees (results are read back as input); each call is one more model pass over the context.
_CONTEXT_TOOLS = frozenset({
    "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
    "file_search", "mcp",
})
# Tools the client runs itself: their results come back in a later, visible request.
_CLIENT_TOOLS = frozenset({
    "function", "custom", "computer_use_preview", "computer_use", "local_shell", "shell",
    "apply_patch",
})


@dataclass(frozen=True, slots=True)
class Defaults:
    """Ops' settings for requests that leave a bound out (compiled once per load)."""

    max_output_tokens: int | None = None  # None: the model's own maximum
    max_tool_calls: int = 4
    service_tier: str = DEFAULT_TIER


@dataclass(frozen=True, slots=True)
class Bounds:
    """The output side of a request's bound and what the gateway sets upstream for it."""

    cap: int  # output tokens per choice
    choices: int = 1  # completions generated (n, best_of)
    predicted: int = 0  # predicted-output tokens, billed as output when rejected
    calls: int = 0  # built-in tool calls
    context_calls: int = 0  # of those, calls whose results feed hidden context
    tiers: tuple[str, ...] = (DEFAULT_TIER,)  # every service tier it may be served at
    set_cap: bool = False  # the request had no output cap: the gateway sets ``cap``
    set_calls: bool = False  # the gateway sets ``max_tool_calls`` to ``calls``
    set_tier: str | None = None  # the gateway sets ``service_tier`` to this
    minimum: int = 1  # the lowest output cap the endpoint accepts

    @property
    def output_tokens(self) -> int:
        return self.cap * self.choices + self.predicted


def output_bounds(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    price: Price,
    defaults: Defaults,
    *,
    visible_input: int,
    hidden: bool,
) -> Bounds:
    if endpoint is Endpoint.EMBEDDINGS:
        return Bounds(cap=0, minimum=0)
    n = choices(endpoint, body)
    calls, context_calls, set_calls = _tool_calls(endpoint, body, defaults)
    tiers, set_tier = _tiers(endpoint, body, defaults)
    minimum = _MIN_CAP.get(endpoint, 1)
    requested = next(
        (v for v in map(_positive_int, map(body.get, endpoint.output_fields)) if v is not None),
        None,
    )
    cap = requested
    if cap is None:
        cap = _default_cap(endpoint, body, price, defaults)
        if price.context_window is not None and not hidden and not context_calls:
            cap = min(cap, price.context_window - visible_input)  # as the upstream would allow
        cap = max(cap, minimum)
    return Bounds(cap, n, 0, calls, context_calls, tiers, requested is None,
                  set_calls, set_tier, minimum)


def input_bound(visible: int, hidden: bool, bounds: Bounds, context: int | None,
                model: str) -> int:
    """Visible input, or the context window less the output cap for each model pass that may
    read context the gateway cannot see; never more than the upstream accepts."""
    if context is None:
        if hidden or bounds.context_calls:
            raise InvalidRequest(
                f"This request carries context the gateway cannot see (an earlier response, a "
                f"conversation, a stored prompt, a file or built-in tool results), and the "
                f"context window of '{model}' is unknown, so its cost cannot be bounded. Add "
                f"'context_window' to its entry under 'pricing:' in the gateway configuration.",
                param="model",
            )
        return visible
    room = max(context - bounds.cap, 0)
    first = room if hidden else min(visible, room)
    return first + bounds.context_calls * room


def _default_cap(endpoint: Endpoint, body: Mapping[str, Any], price: Price,
                 defaults: Defaults) -> int:
    model_max = price.max_output_tokens or price.context_window
    if endpoint is Endpoint.COMPLETIONS:
        chosen: int | None = COMPLETIONS_DEFAULT_MAX_TOKENS
    else:
        chosen = price.default_max_output_tokens or defaults.max_output_tokens
    if chosen is not None and model_max is not None:
        return min(chosen, model_max)
    if chosen is None:
        chosen = model_max
    if chosen is None:
        field = endpoint.output_fields[0]
        raise InvalidRequest(
            f"The maximum output of '{body.get('model')}' is unknown, so a request without "
            f"'{field}' cannot be bounded. Set '{field}', or add 'max_output_tokens' to the "
            f"model's entry under 'pricing:' in the gateway configuration.",
            param=field,
        )
    return chosen


def choices(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    """Completions' ``best_of`` generates (and bills) that many candidates even when ``n`` are
    returned, so the larger of the two counts."""
    count = 1
    if endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
        count = _positive_int(body.get("n")) or 1
    if endpoint is Endpoint.COMPLETIONS:
        count = max(count, _positive_int(body.get("best_of")) or 1)
    return count


def _tool_calls(endpoint: Endpoint, body: Mapping[str, Any],
                defaults: Defaults) -> tuple[int, int, bool]:
    """(calls bound, calls that feed hidden context, whether the gateway sets the cap)."""
    if endpoint is Endpoint.CHAT:
        model = body.get("model")
        searches = "web_search_options" in body or (isinstance(model, str) and "search" in model)
        n = choices(endpoint, body) if searches else 0
        return n, n, False
    if endpoint is not Endpoint.RESPONSES:
        return 0, 0, False
    tools = body.get("tools")
    kinds = {t.get("type") for t in tools if isinstance(t, Mapping)} if isinstance(
        tools, list) else set()
    builtin = {k for k in kinds if k not in _CLIENT_TOOLS}
    refused = sorted(str(k) for k in builtin - _CONTEXT_TOOLS)
    if refused:
        raise InvalidRequest(
            f"The tool type(s) {', '.join(repr(k) for k in refused)} bill fees this gateway "
            "cannot bound (containers, generated images), so the request is refused rather "
            "than let through unbudgeted.",
            param="tools",
        )
    if not builtin:
        return 0, 0, False
    requested = _positive_int(body.get("max_tool_calls"))
    calls = requested or defaults.max_tool_calls
    return calls, calls, requested is None


def _tiers(endpoint: Endpoint, body: Mapping[str, Any],
           defaults: Defaults) -> tuple[tuple[str, ...], str | None]:
    """Every tier the request may be served at, dearest included; and the tier the gateway
    asks for when the request names none (so "auto" cannot mean a dearer one)."""
    if endpoint not in (Endpoint.CHAT, Endpoint.RESPONSES):
        return (DEFAULT_TIER,), None
    tier = body.get("service_tier")
    if tier is None or tier == "auto":
        return (defaults.service_tier,), defaults.service_tier
    if not isinstance(tier, str):
        raise InvalidRequest("Invalid type for 'service_tier': expected a string.",
                             param="service_tier")
    if tier == "flex":
        return ("flex",), None  # served at flex or refused, never at a dearer tier
    return tuple(dict.fromkeys((tier, DEFAULT_TIER))), None  # priority may fall back


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value
