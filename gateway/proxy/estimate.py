"""The estimate stage: the most a request may bill, known before it is admitted.

Visible input is counted as OpenAI bills it: exact BPE counts plus the chat format's framing
(the OpenAI cookbook's 3 tokens per message, 1 per ``name``, 3 to prime the reply); a model with
no offline vocabulary is counted at one token per UTF-8 byte, which no byte-level BPE exceeds.
Images are counted at the most one image can bill. Whatever the gateway cannot size (files,
audio, earlier responses, conversations, stored prompts) makes the input "hidden", bounded in
``bounds.py`` by the model's context window. Output is bounded there too.

The body has passed the resolve stage's type checks, but this walk stays defensive anyway:
shapes it does not know are skipped (or their ``text`` field counted), never an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.cost.pricing import Price
from gateway.cost.tokens import Encoder, default_tokenizers, encoder_for, encoding_name_for
from gateway.proxy.bounds import Bounds, Defaults, input_bound, output_bounds
from gateway.proxy.endpoints import Endpoint

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

IMAGE_MOST = 12_288
"""An image of unknown size at the most a model bills for one: patch-based models bill up to
1,536 patches times their multiplier (2.46 for gpt-4.1-nano), tile-based ones 85 + 170 per
512 px tile; ``detail`` and the image's size are not known here, so the most is reserved."""

IMAGE_MOST_4O_MINI = 2_833 + 5_667 * 8
"""gpt-4o-mini bills images at 2,833 base + 5,667 per tile (priced to match gpt-4o)."""

TOOLS_OVERHEAD = 12
"""Tool definitions are counted as their JSON, which is longer than the compact form the
upstream renders them in; this covers the wrapper text around them."""

SCHEMA_OVERHEAD = 8

# Responses fields that make the upstream read context this request does not carry.
_HIDDEN_FIELDS = ("conversation", "prompt")


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most a request may bill. ``exact`` is False when visible input was bounded by its
    bytes rather than tokenized; ``hidden`` when part of the input is bounded by the context
    window (``context``), so that a lower output cap raises the input bound. ``counted``: this
    is the cheap bound of a text the tokenizer could count, and that count, when it is needed
    (near a limit, or to charge a request the upstream reported no usage for)."""

    input_tokens: int
    bounds: Bounds
    exact: bool = True
    hidden: bool = False
    visible: int = 0
    context: int | None = None
    counted: Callable[[], Awaitable[Estimate]] | None = field(
        default=None, compare=False, repr=False)

    @property
    def output_tokens(self) -> int:
        return self.bounds.output_tokens

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def calls(self) -> int:
        return self.bounds.calls

    def with_output(self, cap: int) -> Estimate:
        """The same request with its per-choice output cap lowered (budget clamping)."""
        bounds = dataclasses.replace(self.bounds, cap=cap)
        return dataclasses.replace(
            self, bounds=bounds,
            input_tokens=input_bound(self.visible, self.hidden, bounds, self.context, ""),
        )


@dataclass(slots=True)
class _Tally:
    """Texts still to tokenize plus tokens already known, gathered in one cheap walk.

    ``chars`` tells the caller, before any tokenizing, whether counting is worth a thread.
    """

    texts: list[str] = field(default_factory=list)
    fixed: int = 0
    chars: int = 0
    images: int = 0
    hidden: bool = False  # some input is not in the body (a file, audio, a reference)
    prior: bool = False  # it continues an earlier response (previous_response_id)

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

    def count(self, encoder: Encoder, image: int) -> int:
        return self.fixed + self.images * image + sum(map(encoder.count, self.texts))

    def bytes_bound(self, image: int) -> int:
        """``count``'s upper bound at no cost: no byte-level BPE token is shorter than a byte."""
        return self.fixed + self.images * image + sum(
            len(text.encode("utf-8", "surrogatepass")) for text in self.texts)


# Content parts (chat and Responses): the field holding their text, or their fixed cost.
_PART_TEXT = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_PART_HIDDEN = frozenset({"input_audio", "file", "input_file", "item_reference"})

# Responses API input items: the fields that carry what the model reads.
_ITEM_FIELDS = {
    "message": ("role", "content"),
    "function_call": ("name", "arguments"),
    "function_call_output": ("output",),
    "custom_tool_call": ("name", "input"),
    "custom_tool_call_output": ("output",),
    "reasoning": ("summary",),
}


def _part(part: object, tally: _Tally) -> None:
    if isinstance(part, str):
        tally.text(part)
        return
    if not isinstance(part, Mapping):
        return
    kind = part.get("type")
    kind = kind if isinstance(kind, str) else ""
    if kind in ("image_url", "input_image"):
        tally.images += 1
    elif kind in _PART_HIDDEN:
        tally.hidden = True
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
    if kind in _PART_HIDDEN:
        tally.hidden = True
        return
    fields = _ITEM_FIELDS.get(kind, ("text",)) if isinstance(kind, str) else ("text",)
    tally.fixed += TOKENS_PER_MESSAGE
    for key in fields:
        _content(item.get(key), tally)


def _responses(body: Mapping[str, Any], tally: _Tally) -> None:
    if any(body.get(name) is not None for name in _HIDDEN_FIELDS):
        tally.hidden = True
    tally.prior = body.get("previous_response_id") is not None
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


def image_most(model: str) -> int:
    return IMAGE_MOST_4O_MINI if model.startswith("gpt-4o-mini") else IMAGE_MOST


async def _vocabulary_loaded(model: object) -> None:
    """A vocabulary not preloaded is loaded on first use (~0.1 s) on a worker thread, so the
    requests around it keep flowing; memory goes only to vocabularies in use."""
    name = encoding_name_for(model) if isinstance(model, str) else None
    tokenizers = default_tokenizers()
    if name is not None and not tokenizers.loaded(name):
        await asyncio.to_thread(tokenizers.encoding, name)


def count_input_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[int, bool]:
    """Visible input tokens of a request and whether the count is exact; on this thread."""
    encoder, tally = _gather(endpoint, body)
    model = body.get("model")
    return tally.count(encoder, image_most(model if isinstance(model, str) else "")), encoder.exact


def predicted_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    """Chat's predicted output: tokens of it that the model does not use are billed as output."""
    prediction = body.get("prediction")
    if endpoint is not Endpoint.CHAT or not isinstance(prediction, Mapping):
        return 0
    tally = _Tally()
    _content(prediction.get("content"), tally)
    model = body.get("model")
    return tally.count(encoder_for(model if isinstance(model, str) else ""), 0)


async def estimate(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    price: Price,
    defaults: Defaults,
    *,
    prior: int | None = None,
    offload: Callable[..., Awaitable[int]] | None = None,
    offload_above_chars: int = 32_768,
    cheap_first: bool = False,
) -> Estimate:
    """Count on the event loop when it is quick, on a worker thread when it is not.

    The size test is the total length of the strings the walk collected, known before any
    tokenizing. tiktoken releases the GIL, so a 700 KB prompt counted on a thread (~20 ms)
    does not stall other requests; ~32 K chars of prose counts in about a millisecond, less
    than the hop to a thread and back would be worth. The fallback count is always quick.

    ``cheap_first``: where the bytes can stand in for the count (visible input only, and output
    bounds that do not depend on it), the estimate is that bound, with the count deferred to
    ``Estimate.counted``: tokenizing a 1 KB prompt costs about a tenth of a request's time.
    """
    model = body.get("model")
    model = model if isinstance(model, str) else ""
    await _vocabulary_loaded(model)
    encoder, tally = _gather(endpoint, body)
    image = image_most(model)
    if cheap_first and encoder.exact and not tally.hidden and not tally.prior:
        counted = functools.partial(_counted, endpoint, body, price, defaults, model, encoder,
                                    tally, image, offload, offload_above_chars, prior)
        cheap = _cheap(endpoint, body, price, defaults, tally.bytes_bound(image), model, counted)
        if cheap is not None:
            return cheap
    return await _counted(endpoint, body, price, defaults, model, encoder, tally, image,
                          offload, offload_above_chars, prior)


def _cheap(endpoint: Endpoint, body: Mapping[str, Any], price: Price, defaults: Defaults,
           visible: int, model: str, counted: Callable[[], Awaitable[Estimate]]
           ) -> Estimate | None:
    """The estimate with ``visible`` (an upper bound of the visible input) for the count, if
    the output bounds are those of any smaller count (they are, unless the gateway sets an
    output cap that the context window left by the input lowers)."""
    bounds = output_bounds(endpoint, body, price, defaults, visible_input=visible, hidden=False)
    if bounds.set_cap and bounds != output_bounds(endpoint, body, price, defaults,
                                                   visible_input=0, hidden=False):
        return None
    predicted = predicted_tokens(endpoint, body)
    if predicted:
        bounds = dataclasses.replace(bounds, predicted=predicted)
    context = price.context_window
    return Estimate(input_bound(visible, False, bounds, context, model), bounds, False, False,
                    visible, context, counted)


async def _counted(endpoint: Endpoint, body: Mapping[str, Any], price: Price,
                   defaults: Defaults, model: str, encoder: Encoder, tally: _Tally, image: int,
                   offload: Callable[..., Awaitable[int]] | None, offload_above_chars: int,
                   prior: int | None) -> Estimate:
    if encoder.exact and tally.chars > offload_above_chars:
        visible = await (offload or asyncio.to_thread)(tally.count, encoder, image)
    else:
        visible = tally.count(encoder, image)
    hidden = tally.hidden
    if tally.prior:
        hidden |= prior is None
        visible += prior or 0
    bounds = output_bounds(endpoint, body, price, defaults, visible_input=visible,
                           hidden=hidden)
    predicted = predicted_tokens(endpoint, body)
    if predicted:
        bounds = dataclasses.replace(bounds, predicted=predicted)
    context = price.context_window
    return Estimate(input_bound(visible, hidden, bounds, context, model), bounds,
                    encoder.exact, hidden, visible, context)
