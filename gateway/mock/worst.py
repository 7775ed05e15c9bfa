"""Worst mode's usage rules: what the real OpenAI API may bill for a request, at the most.

A polite mock bills what the text it writes costs; the real API also bills output the client
never sees (reasoning, rejected predictions, every ``n`` and ``best_of`` candidate), input the
request does not carry (a previous response, a conversation, a stored prompt, files, search
results) and per-call tool fees. Here every request gets all of it:

- output: the request's cap per choice, or the model's maximum output when it has none, times
  ``n`` (completions: ``best_of`` when larger); reasoning models report all but the text
  written as ``reasoning_tokens``; chat ``prediction`` content adds its tokens as
  ``rejected_prediction_tokens``; chat ``modalities`` with ``"audio"``: the output is audio.
- input: the token counter's count; plus a previous response's input and output; filled up
  to the context window (less the output cap) when the request points at context it does not
  carry; plus ``SEARCH_INPUT_TOKENS`` per search call; plus chat ``input_audio`` as audio
  tokens.
The text written stays short (``TEXT_TOKENS`` per choice at most): the usage is what counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.mock import fields
from gateway.mock.fields import TokenCounter
from gateway.mock.shapes import JSON, MockError, Plan, Usage
from gateway.proxy.endpoints import Endpoint

TEXT_TOKENS = 16
SEARCH_INPUT_TOKENS = 2_000
"""Hidden input per search call: the search results or retrieved chunks the model reads."""
SEARCH_CALLS = 20
"""Search calls per search tool when the request sets no ``max_tool_calls``."""
AUDIO_TOKENS_PER_1000_CHARS = 10

# (model prefix, tokens), longest prefix first where two overlap.
MAX_OUTPUT: tuple[tuple[str, int], ...] = (
    ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-4o-mini", 16_384),
    ("gpt-4o", 16_384),
    ("gpt-4.1", 32_768),
    ("gpt-5", 128_000),
    ("o4-mini", 100_000),
    ("o3", 100_000),
    ("o1", 100_000),
)
DEFAULT_MAX_OUTPUT = 100_000
CONTEXT_WINDOW: tuple[tuple[str, int], ...] = (
    ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-4o", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("o4-mini", 200_000),
    ("o3", 200_000),
    ("o1", 200_000),
)
DEFAULT_CONTEXT_WINDOW = 128_000
_REASONING = re.compile(r"(gpt-5|o\d)")
_TIERS = {"auto": "default", "default": "default", "flex": "flex", "scale": "scale",
          "priority": "priority", "fast": "priority"}
_SEARCH_KINDS = (("web_search", "web_search_call"), ("file_search", "file_search_call"))

PreviousTokens = Callable[[str], int | None]
"""Input plus output tokens of a stored response, None when there is none by that id."""


def model_limit(model: str, table: Sequence[tuple[str, int]], default: int) -> int:
    name = model.lower().removeprefix("ft:")
    return next((tokens for prefix, tokens in table if name.startswith(prefix)), default)


def is_reasoning(model: str) -> bool:
    return _REASONING.match(model.lower().removeprefix("ft:")) is not None


def service_tier(body: JSON) -> str:
    """The tier the answer says it was served on: ``auto`` (or none) is ``default``."""
    tier = body.get("service_tier")
    if tier is None:
        return "default"
    if not isinstance(tier, str) or tier not in _TIERS:
        raise MockError(400, f"Invalid value for 'service_tier': {tier!r}.", param="service_tier")
    return _TIERS[tier]


@dataclass(frozen=True, slots=True)
class Searches:
    items: tuple[JSON, ...] = ()
    web: int = 0
    files: int = 0


def searches(endpoint: Endpoint, body: JSON, plan_id: str) -> Searches:
    """Responses: as many search calls as ``max_tool_calls`` allows (shared by the search
    tools, in turn), ``SEARCH_CALLS`` per tool without it; chat: one web search for a search
    model or ``web_search_options``."""
    if endpoint is Endpoint.CHAT:
        wanted = "-search-" in body["model"] or body.get("web_search_options") is not None
        return Searches(web=1) if wanted else Searches()
    if endpoint is not Endpoint.RESPONSES or body.get("tool_choice") == "none":
        return Searches()
    kinds = _search_kinds(body.get("tools"))
    limit = fields.int_field(body, "max_tool_calls", -1, low=0)
    calls = [k for k in kinds for _ in range(SEARCH_CALLS)] if limit < 0 else [
        kinds[i % len(kinds)] for i in range(limit if kinds else 0)
    ]
    suffix = plan_id.removeprefix("resp_")
    items = tuple(_search_item(kind, f"{suffix}_{i:03d}", i) for i, kind in enumerate(calls))
    return Searches(items, calls.count("web_search_call"), calls.count("file_search_call"))


def _search_kinds(tools: object) -> list[str]:
    kinds: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        for prefix, call in _SEARCH_KINDS:
            if isinstance(kind, str) and kind.startswith(prefix) and call not in kinds:
                kinds.append(call)
    return kinds


def _search_item(kind: str, suffix: str, i: int) -> JSON:
    query = f"mock search {i + 1}"
    if kind == "web_search_call":
        return {"type": kind, "id": f"ws_{suffix}", "status": "completed",
                "action": {"type": "search", "query": query}}
    return {"type": kind, "id": f"fs_{suffix}", "status": "completed", "queries": [query],
            "results": None}


def points_at_hidden_context(endpoint: Endpoint, body: JSON) -> bool:
    """The request names context it does not carry: a conversation, a stored prompt, item
    references, files by id."""
    if endpoint is Endpoint.RESPONSES:
        if body.get("conversation") is not None or body.get("prompt") is not None:
            return True
        items = body.get("input")
        return isinstance(items, list) and any(map(_hidden_item, items))
    if endpoint is Endpoint.CHAT:
        return any(_file_by_id(part) for part in _chat_parts(body))
    return False


def _hidden_item(item: object) -> bool:
    if not isinstance(item, dict):
        return False
    content = item.get("content")
    parts = content if isinstance(content, list) else ()
    return item.get("type") == "item_reference" or any(map(_file_by_id, parts))


def _file_by_id(part: object) -> bool:
    if not isinstance(part, dict) or part.get("type") not in ("input_file", "file"):
        return False
    inner = part.get("file")
    return part.get("file_id") is not None or (
        isinstance(inner, dict) and inner.get("file_id") is not None
    )


def _chat_parts(body: JSON) -> list[Any]:
    messages = body.get("messages")
    parts: list[Any] = []
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts.extend(content)
    return parts


def input_audio_tokens(endpoint: Endpoint, body: JSON) -> int:
    """Chat ``input_audio`` parts: ``AUDIO_TOKENS_PER_1000_CHARS`` per 1,000 base64 chars."""
    if endpoint is not Endpoint.CHAT:
        return 0
    chars = 0
    for part in _chat_parts(body):
        audio = part.get("input_audio") if isinstance(part, dict) else None
        data = audio.get("data") if isinstance(audio, dict) else None
        if part.get("type") == "input_audio" and isinstance(data, str):
            chars += len(data)
    return math.ceil(chars * AUDIO_TOKENS_PER_1000_CHARS / 1000)


def prediction_text(endpoint: Endpoint, body: JSON) -> str | None:
    """Chat ``prediction`` content (a string or text parts), or None."""
    prediction = body.get("prediction")
    if endpoint is not Endpoint.CHAT or not isinstance(prediction, dict):
        return None
    content = prediction.get("content")
    if isinstance(content, list):
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(
                p.get("text"), str)
        )
    return content if isinstance(content, str) and prediction.get("type") == "content" else None


def billed_choices(endpoint: Endpoint, body: JSON) -> tuple[int, int]:
    """(choices returned, candidates generated and billed)."""
    if endpoint is Endpoint.RESPONSES:
        return 1, 1
    n = fields.int_field(body, "n", 1, low=1)
    if endpoint is Endpoint.COMPLETIONS:
        return n, max(n, fields.int_field(body, "best_of", 1, low=1))
    return n, n


def response_echo(body: JSON, cap: int | None) -> JSON:
    """What a Responses object repeats of its request."""
    metadata = body.get("metadata")
    return {
        "background": body.get("background") is True,
        "store": body.get("store") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "max_output_tokens": cap,
        "max_tool_calls": body.get("max_tool_calls"),
        "instructions": body.get("instructions"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


class WorstPlanner:
    """Plans an answer that bills everything the real API may bill for the request."""

    def __init__(self, tokens: TokenCounter, previous: PreviousTokens) -> None:
        self._tokens = tokens
        self._previous = previous

    def plan(self, endpoint: Endpoint, body: JSON, plan: Plan) -> Plan:
        """``plan``: the polite plan for the request (ids, usage wanted, visible input)."""
        model: str = body["model"]
        cap = fields.max_output(endpoint, body)
        per_choice = cap if cap is not None else model_limit(model, MAX_OUTPUT, DEFAULT_MAX_OUTPUT)
        shown, generated = billed_choices(endpoint, body)
        text = min(per_choice, TEXT_TOKENS)
        found = searches(endpoint, body, plan.id)
        output = self._output(endpoint, body, per_choice * generated, text * shown)
        input_tokens = self._input(endpoint, body, plan.input_tokens, per_choice)
        input_tokens += SEARCH_INPUT_TOKENS * (found.web + found.files)
        input_tokens += (audio := input_audio_tokens(endpoint, body))
        cached = min(fields.metadata_count(body, "mock_cached_tokens"), input_tokens)
        written = fields.metadata_count(body, "mock_cache_write_tokens")
        billed = Usage(
            input_tokens=input_tokens,
            output_tokens=output.output_tokens,
            cached_tokens=cached,
            cache_write_tokens=min(written, input_tokens - cached),
            input_audio_tokens=audio,
            reasoning_tokens=output.reasoning_tokens,
            output_audio_tokens=output.output_audio_tokens,
            rejected_prediction_tokens=output.rejected_prediction_tokens,
            web_searches=found.web,
            file_searches=found.files,
        )
        responses = endpoint is Endpoint.RESPONSES
        return Plan(
            id=plan.id,
            model=model,
            created=plan.created,
            billed=billed,
            per_choice=text,
            choices=shown,
            capped=cap is not None,  # as the polite mock: "length" / "incomplete" with a cap
            usage=plan.usage,
            service_tier=None if endpoint is Endpoint.COMPLETIONS else service_tier(body),
            tool_items=found.items,
            echo=response_echo(body, cap) if responses else {},
        )

    def _output(self, endpoint: Endpoint, body: JSON, generated: int, written: int) -> Usage:
        """Output tokens and their details (``input_tokens`` unused)."""
        text = prediction_text(endpoint, body)
        rejected = 0 if text is None else self._count_text(body["model"], text)
        modalities = body.get("modalities")
        audio = endpoint is Endpoint.CHAT and isinstance(modalities, list) and (
            "audio" in modalities
        )
        reasoning = is_reasoning(body["model"]) and not audio
        return Usage(
            input_tokens=0,
            output_tokens=generated + rejected,
            reasoning_tokens=max(generated - written, 0) if reasoning else 0,
            output_audio_tokens=generated if audio else 0,
            rejected_prediction_tokens=rejected,
        )

    def _input(self, endpoint: Endpoint, body: JSON, visible: int, cap: int) -> int:
        tokens = visible + self._previous_tokens(endpoint, body)
        if points_at_hidden_context(endpoint, body):
            window = model_limit(body["model"], CONTEXT_WINDOW, DEFAULT_CONTEXT_WINDOW)
            tokens = max(tokens, window - cap)
        return tokens

    def _previous_tokens(self, endpoint: Endpoint, body: JSON) -> int:
        previous = body.get("previous_response_id")
        if endpoint is not Endpoint.RESPONSES or previous is None:
            return 0
        tokens = self._previous(previous) if isinstance(previous, str) else None
        if tokens is None:
            raise MockError(
                404,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return tokens

    def _count_text(self, model: str, text: str) -> int:
        """Tokens of plain text, by the mock's token counter (a completions prompt is counted
        as its text alone)."""
        return self._tokens(Endpoint.COMPLETIONS, {"model": model, "prompt": text})

