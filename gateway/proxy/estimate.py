"""The estimate stage: how many tokens a request may consume, known before it is admitted.

Input is counted as OpenAI bills it: exact BPE counts plus the chat format's framing (the
OpenAI cookbook's 3 tokens per message, 1 per ``name``, 3 to prime the reply). Where the true
count cannot be known offline (images of unknown size, audio, files) we reserve a generous
fixed amount: settlement replaces every reservation with the upstream's reported usage, so an
overestimate only holds budget for the length of one call, while an underestimate lets
concurrent calls overshoot a budget.

The body has passed the resolve stage's type checks, but this walk stays defensive anyway:
shapes it does not know are skipped (or their ``text`` field counted), never an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.cost.tokens import Encoder, default_tokenizers, encoder_for, encoding_name_for
from gateway.proxy.endpoints import Endpoint

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

IMAGE_LOW_DETAIL = 85
IMAGE_WORST_CASE = 85 + 170 * 8
"""``high``/``auto`` detail with the image size unknown (we do not decode images): the image is
fitted in 2048x2048, then its short side scaled to 768, so at most 2x4 tiles of 512 px."""

AUDIO_PART = 2_000
"""An ``input_audio`` part: its duration is not decoded here, so a flat amount sized for a
clip of a few minutes; a longer one is under-reserved until settlement."""

FILE_PART = 4_000
"""A ``file``/``input_file`` part (e.g. a PDF: its text plus an image per page), sized for a
few pages; a long document is under-reserved until settlement."""

TOOLS_OVERHEAD = 12
"""Tool definitions are counted as their JSON, which is longer than the compact form the
upstream renders them in; this covers the wrapper text around them."""

SCHEMA_OVERHEAD = 8


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request may use; ``exact`` is False when input was estimated, not tokenized."""

    input_tokens: int
    output_tokens: int
    exact: bool

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def with_output(self, n: int) -> Estimate:
        """The same request with its output cap lowered (budget clamping)."""
        return dataclasses.replace(self, output_tokens=n)


@dataclass(slots=True)
class _Tally:
    """Texts still to tokenize plus tokens already known, gathered in one cheap walk.

    ``chars`` tells the caller, before any tokenizing, whether counting is worth a thread.
    """

    texts: list[str] = field(default_factory=list)
    fixed: int = 0
    chars: int = 0

    def text(self, value: object) -> None:
        if isinstance(value, str) and value:
            self.texts.append(value)
            self.chars += len(value)

    def json(self, value: object, overhead: int) -> None:
        """Definitions (tools, schemas) are counted as their compact JSON."""
        if not value:
            return
        try:
            self.text(orjson.dumps(value).decode())
        except TypeError:  # orjson.JSONEncodeError; not reachable from a parsed JSON body
            self.text(str(value))
        self.fixed += overhead

    def count(self, encoder: Encoder) -> int:
        return self.fixed + sum(map(encoder.count, self.texts))


# Content parts (chat and Responses): the field holding their text, or their fixed cost.
_PART_TEXT = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_PART_FIXED = {"input_audio": AUDIO_PART, "file": FILE_PART, "input_file": FILE_PART}

# Responses API input items: the fields that carry what the model reads.
_ITEM_FIELDS = {
    "message": ("role", "content"),
    "function_call": ("name", "arguments"),
    "function_call_output": ("output",),
    "custom_tool_call": ("name", "input"),
    "custom_tool_call_output": ("output",),
    "reasoning": ("summary",),
}


def _image(detail: object) -> int:
    return IMAGE_LOW_DETAIL if detail == "low" else IMAGE_WORST_CASE


def _part(part: object, tally: _Tally) -> None:
    if isinstance(part, str):
        tally.text(part)
        return
    if not isinstance(part, Mapping):
        return
    kind = part.get("type")
    kind = kind if isinstance(kind, str) else ""
    if kind == "image_url":
        image = part.get("image_url")
        tally.fixed += _image(image.get("detail") if isinstance(image, Mapping) else None)
    elif kind == "input_image":
        tally.fixed += _image(part.get("detail"))
    elif kind in _PART_FIXED:
        tally.fixed += _PART_FIXED[kind]
    else:
        tally.text(part.get(_PART_TEXT.get(kind, "text")))


def _content(value: object, tally: _Tally) -> None:
    """A string, or a list of parts; null and anything else count nothing."""
    if isinstance(value, list):
        for part in value:
            _part(part, tally)
    else:
        tally.text(value)


def _function(call: object, tally: _Tally) -> None:
    if isinstance(call, Mapping):
        for key in ("name", "arguments", "input"):
            tally.text(call.get(key))


def _chat_message(message: Mapping[str, Any], tally: _Tally) -> None:
    tally.fixed += TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "name":
            tally.fixed += TOKENS_PER_NAME
        if key == "content":
            _content(value, tally)
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                if isinstance(call, Mapping):
                    _function(call.get("function") or call.get("custom"), tally)
        elif key == "function_call":
            _function(value, tally)
        else:
            tally.text(value)  # role, name, tool_call_id, refusal... as the cookbook does


def _chat(body: Mapping[str, Any], tally: _Tally) -> None:
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                _chat_message(message, tally)
    tally.fixed += REPLY_PRIMING
    tally.json(body.get("tools"), TOOLS_OVERHEAD)
    tally.json(body.get("functions"), TOOLS_OVERHEAD)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        tally.json(response_format.get("json_schema"), SCHEMA_OVERHEAD)


def _prompt(value: object, tally: _Tally) -> None:
    """str | list[str] | list[int] (token ids) | list[list[int]]: ids count one each."""
    if not isinstance(value, list):
        tally.text(value)
        return
    for item in value:
        if isinstance(item, str):
            tally.text(item)
        elif isinstance(item, int):
            tally.fixed += 1
        elif isinstance(item, list):
            tally.fixed += len(item)


def _completions(body: Mapping[str, Any], tally: _Tally) -> None:
    _prompt(body.get("prompt"), tally)
    tally.text(body.get("suffix"))


def _embeddings(body: Mapping[str, Any], tally: _Tally) -> None:
    _prompt(body.get("input"), tally)


def _response_item(item: object, tally: _Tally) -> None:
    if not isinstance(item, Mapping):
        _part(item, tally)
        return
    kind = item.get("type", "message")
    fields = _ITEM_FIELDS.get(kind, ("text",)) if isinstance(kind, str) else ("text",)
    tally.fixed += TOKENS_PER_MESSAGE
    for key in fields:
        _content(item.get(key), tally)


def _responses(body: Mapping[str, Any], tally: _Tally) -> None:
    instructions = body.get("instructions")
    if isinstance(instructions, str):  # sent to the model as a developer message
        _response_item({"role": "developer", "content": instructions}, tally)
    items = body.get("input")
    if isinstance(items, str):  # shorthand for one user message
        _response_item({"role": "user", "content": items}, tally)
    elif isinstance(items, list):
        for item in items:
            _response_item(item, tally)
    tally.fixed += REPLY_PRIMING
    tally.json(body.get("tools"), TOOLS_OVERHEAD)
    text = body.get("text")
    text_format = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(text_format, Mapping) and text_format.get("type") == "json_schema":
        tally.json(text_format, SCHEMA_OVERHEAD)


_GATHER: dict[Endpoint, Callable[[Mapping[str, Any], _Tally], None]] = {
    Endpoint.CHAT: _chat,
    Endpoint.COMPLETIONS: _completions,
    Endpoint.EMBEDDINGS: _embeddings,
    Endpoint.RESPONSES: _responses,
}


def _gather(endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[Encoder, _Tally]:
    model = body.get("model")
    tally = _Tally()
    _GATHER[endpoint](body, tally)
    return encoder_for(model if isinstance(model, str) else ""), tally


async def _vocabulary_loaded(model: object) -> None:
    """A vocabulary not preloaded is loaded on first use (~0.1 s) on a worker thread, so the
    requests around it keep flowing; memory goes only to vocabularies in use."""
    name = encoding_name_for(model) if isinstance(model, str) else None
    tokenizers = default_tokenizers()
    if name is not None and not tokenizers.loaded(name):
        await asyncio.to_thread(tokenizers.encoding, name)


def count_input_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[int, bool]:
    """Input tokens of a request and whether the count is exact; tokenizes on this thread."""
    encoder, tally = _gather(endpoint, body)
    return tally.count(encoder), encoder.exact


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def requested_output_tokens(endpoint: Endpoint, body: Mapping[str, Any], default: int) -> int:
    """The output cap the upstream will honour, times every choice it will generate.

    Completions' ``best_of`` generates (and bills) that many candidates even when ``n`` are
    returned, so the larger of the two counts.
    """
    if endpoint is Endpoint.EMBEDDINGS:
        return 0
    cap = next(
        (v for v in map(_positive_int, map(body.get, endpoint.output_fields)) if v is not None),
        default,
    )
    return cap * choices(endpoint, body)


def choices(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    """How many completions the upstream generates (and bills) for one request."""
    count = 1
    if endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
        count = _positive_int(body.get("n")) or 1
    if endpoint is Endpoint.COMPLETIONS:
        count = max(count, _positive_int(body.get("best_of")) or 1)
    return count


async def estimate(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    default_max_output_tokens: int,
    *,
    offload_above_chars: int = 32_768,
) -> Estimate:
    """Count on the event loop when it is quick, on a worker thread when it is not.

    The size test is the total length of the strings the walk collected, known before any
    tokenizing. tiktoken releases the GIL, so a 700 KB prompt counted on a thread (~20 ms)
    does not stall other requests; ~32 K chars of prose counts in about a millisecond, less
    than the hop to a thread and back would be worth. The fallback estimator is always quick.
    """
    await _vocabulary_loaded(body.get("model"))
    encoder, tally = _gather(endpoint, body)
    if encoder.exact and tally.chars > offload_above_chars:
        input_tokens = await asyncio.to_thread(tally.count, encoder)
    else:
        input_tokens = tally.count(encoder)
    output_tokens = requested_output_tokens(endpoint, body, default_max_output_tokens)
    return Estimate(input_tokens, output_tokens, encoder.exact)
