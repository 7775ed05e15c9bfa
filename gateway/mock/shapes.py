"""OpenAI wire shapes the mock answers with: bodies, SSE frames, usage and error objects.

Everything here is pure: a ``Plan`` (what one request will produce) goes in, bytes come out.
Output text is made of pieces that are one token each in both ``cl100k_base`` and
``o200k_base`` ("hello" then " hello" ...), so the text of any streamed prefix tokenizes to
exactly the number of content frames sent.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

JSON = dict[str, Any]

FIRST_PIECE = "hello"
NEXT_PIECE = " hello"
_SENTINEL = "\x00mock-piece\x00"  # never in a real model name or id
_SENTINEL_JSON = orjson.dumps(_SENTINEL)
_FIRST_JSON = orjson.dumps(FIRST_PIECE)
_NEXT_JSON = orjson.dumps(NEXT_PIECE)
DONE = b"data: [DONE]\n\n"
_DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
)


class MockError(Exception):
    """An error the mock answers with, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return orjson.dumps({"error": error})


@dataclass(frozen=True, slots=True)
class Usage:
    """The usage one answer bills, in OpenAI's nesting: cached, cache-write and audio input
    tokens are inside ``input_tokens``; reasoning, audio and rejected prediction tokens inside
    ``output_tokens``. Searches are billed per call, apart from tokens."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    input_audio_tokens: int = 0
    reasoning_tokens: int = 0
    output_audio_tokens: int = 0
    rejected_prediction_tokens: int = 0
    web_searches: int = 0
    file_searches: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """What one request produces, decided before anything is sent.

    The text written is ``per_choice`` tokens per choice; what the usage object says is
    ``billed``, which the polite mock makes equal to the text and worst mode makes larger
    (reasoning, searches, hidden context). ``service_tier`` None: the polite mock's shapes
    (``"default"`` in a chat completion, nowhere else); ``tool_items``: Responses output items
    before the message; ``echo``: Responses object fields that replace the polite defaults.
    """

    id: str
    model: str
    created: int
    billed: Usage
    per_choice: int  # output tokens of text written in each choice
    choices: int  # ``n``
    capped: bool  # the request set a max output field, and output stopped there
    usage: bool  # the usage object is part of the answer
    service_tier: str | None = None
    tool_items: tuple[JSON, ...] = ()
    echo: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        return self.billed.input_tokens

    @property
    def cached_tokens(self) -> int:
        return self.billed.cached_tokens

    @property
    def output_tokens(self) -> int:
        return self.billed.output_tokens

    @property
    def text_tokens(self) -> int:
        return self.per_choice * self.choices

    @property
    def finish_reason(self) -> str:
        return "length" if self.capped else "stop"


class Frame(NamedTuple):
    """One SSE event, and how many output tokens of text it carries."""

    data: bytes
    tokens: int


def text_of(tokens: int) -> str:
    return FIRST_PIECE + NEXT_PIECE * (tokens - 1) if tokens > 0 else ""


def _pieces_json(tokens: int) -> Iterator[bytes]:
    for i in range(tokens):
        yield _FIRST_JSON if i == 0 else _NEXT_JSON


def _data(obj: JSON) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _template(frame: bytes) -> tuple[bytes, bytes]:
    """Split a serialised frame around its one sentinel string, to splice pieces in cheaply."""
    head, _, tail = frame.partition(_SENTINEL_JSON)
    return head, tail


def models_list(created: int) -> bytes:
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "mock-upstream"}
        for name in _DEFAULT_MODELS
    ]
    return orjson.dumps({"object": "list", "data": data})


# -- chat completions and completions ---------------------------------------------------------


def completion_usage(usage: Usage) -> JSON:
    """Chat's and completions' usage object; ``cache_write_tokens`` only when there are some."""
    prompt: JSON = {"cached_tokens": usage.cached_tokens, "audio_tokens": usage.input_audio_tokens}
    if usage.cache_write_tokens:
        prompt["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": usage.output_audio_tokens,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": usage.rejected_prediction_tokens,
        },
    }


def _head(plan: Plan, obj: str) -> JSON:
    return {"id": plan.id, "object": obj, "created": plan.created, "model": plan.model}


def chat_completion(plan: Plan) -> bytes:
    text = text_of(plan.per_choice)
    body = _head(plan, "chat.completion")
    body["choices"] = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": plan.finish_reason,
        }
        for i in range(plan.choices)
    ]
    if plan.usage:
        body["usage"] = completion_usage(plan.billed)
    body["service_tier"] = plan.service_tier or "default"
    body["system_fingerprint"] = None
    return orjson.dumps(body)


def chat_stream(plan: Plan) -> list[Frame]:
    """Role chunk per choice, one chunk per token, a finish chunk per choice, usage, [DONE]."""
    base = _head(plan, "chat.completion.chunk")
    if plan.service_tier is not None:
        base["service_tier"] = plan.service_tier
    base["system_fingerprint"] = None
    if plan.usage:
        base["usage"] = None

    def chunk(index: int, delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _data({**base, "choices": [choice]})

    frames = [Frame(chunk(i, {"role": "assistant"}), 0) for i in range(plan.choices)]
    for i in range(plan.choices):
        head, tail = _template(chunk(i, {"content": _SENTINEL}))
        frames.extend(Frame(head + p + tail, 1) for p in _pieces_json(plan.per_choice))
    frames.extend(Frame(chunk(i, {}, plan.finish_reason), 0) for i in range(plan.choices))
    if plan.usage:
        usage = completion_usage(plan.billed)
        frames.append(Frame(_data({**base, "choices": [], "usage": usage}), 0))
    frames.append(Frame(DONE, 0))
    return frames


def text_completion(plan: Plan) -> bytes:
    text = text_of(plan.per_choice)
    body = _head(plan, "text_completion")
    body["choices"] = [
        {"text": text, "index": i, "logprobs": None, "finish_reason": plan.finish_reason}
        for i in range(plan.choices)
    ]
    if plan.usage:
        body["usage"] = completion_usage(plan.billed)
    body["system_fingerprint"] = None
    return orjson.dumps(body)


def text_completion_stream(plan: Plan) -> list[Frame]:
    """One chunk per token; the last chunk of each choice carries its finish_reason."""
    base = _head(plan, "text_completion")
    base["system_fingerprint"] = None
    if plan.usage:
        base["usage"] = None

    def chunk(index: int, text: str, finish: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return _data({**base, "choices": [choice]})

    frames: list[Frame] = []
    for i in range(plan.choices):
        head, tail = _template(chunk(i, _SENTINEL, None))
        frames.extend(Frame(head + p + tail, 1) for p in _pieces_json(plan.per_choice - 1))
        last = plan.per_choice > 0
        text = (FIRST_PIECE if plan.per_choice == 1 else NEXT_PIECE) if last else ""
        frames.append(Frame(chunk(i, text, plan.finish_reason), int(last)))
    if plan.usage:
        usage = completion_usage(plan.billed)
        frames.append(Frame(_data({**base, "choices": [], "usage": usage}), 0))
    frames.append(Frame(DONE, 0))
    return frames


# -- embeddings --------------------------------------------------------------------------------


def embeddings(model: str, count: int, dims: int, *, b64: bool, input_tokens: int | None) -> bytes:
    """``count`` vectors of ``dims`` values, each exact in float32 so both encodings agree."""
    data = []
    for i in range(count):
        vector = [((i + j) % 8 + 1) / 8 for j in range(dims)]
        value: Any = vector
        if b64:
            value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": value})
    body: JSON = {"object": "list", "data": data, "model": model}
    if input_tokens is not None:
        body["usage"] = {"prompt_tokens": input_tokens, "total_tokens": input_tokens}
    return orjson.dumps(body)


# -- responses ---------------------------------------------------------------------------------


def responses_usage(usage: Usage) -> JSON:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def final_status(plan: Plan) -> str:
    return "incomplete" if plan.capped else "completed"


def response_object(plan: Plan, status: str, output: list[JSON], usage: Usage | None) -> JSON:
    """The Responses API's response object in ``status``, with ``output`` and ``usage``."""
    body: JSON = {
        "id": plan.id,
        "object": "response",
        "created_at": plan.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": None,
        "max_output_tokens": plan.per_choice if plan.capped else None,
        "model": plan.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None if usage is None else responses_usage(usage),
        "user": None,
        "metadata": {},
    }
    body.update(plan.echo)
    if plan.service_tier is not None:
        body["service_tier"] = plan.service_tier
    return body


def _output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(plan: Plan, status: str, content: list[JSON]) -> JSON:
    return {
        "type": "message",
        "id": "msg_" + plan.id.removeprefix("resp_"),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def response_output(plan: Plan) -> list[JSON]:
    """The finished response's output items: built-in tool calls, then the message."""
    message = _message(plan, final_status(plan), [_output_text(text_of(plan.per_choice))])
    return [*plan.tool_items, message]


def response(plan: Plan) -> bytes:
    usage = plan.billed if plan.usage else None
    return orjson.dumps(response_object(plan, final_status(plan), response_output(plan), usage))


def response_stream(plan: Plan) -> list[Frame]:
    """The Responses API event sequence; the last event is ``response.completed``, or
    ``response.incomplete`` when output stopped at ``max_output_tokens`` (as OpenAI does).
    Built-in tool calls come first, each as an added and a done event."""
    status = final_status(plan)
    text = text_of(plan.per_choice)
    item_id = "msg_" + plan.id.removeprefix("resp_")
    index = len(plan.tool_items)
    where: JSON = {"item_id": item_id, "output_index": index, "content_index": 0}
    started = response_object(plan, "in_progress", [], None)
    events: list[tuple[str, JSON]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
    ]
    for i, item in enumerate(plan.tool_items):
        events.append(("response.output_item.added",
                       {"output_index": i, "item": {**item, "status": "in_progress"}}))
        events.append(("response.output_item.done", {"output_index": i, "item": item}))
    events += [
        (
            "response.output_item.added",
            {"output_index": index, "item": _message(plan, "in_progress", [])},
        ),
        ("response.content_part.added", {**where, "part": _output_text("")}),
    ]
    frames = [Frame(_event(kind, seq, payload), 0) for seq, (kind, payload) in enumerate(events)]
    seq = len(frames)
    for i in range(plan.per_choice):
        delta = {**where, "delta": FIRST_PIECE if i == 0 else NEXT_PIECE, "logprobs": []}
        frames.append(Frame(_event("response.output_text.delta", seq, delta), 1))
        seq += 1
    output = response_output(plan)
    usage = plan.billed if plan.usage else None
    events = [
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": _output_text(text)}),
        ("response.output_item.done", {"output_index": index, "item": output[-1]}),
        (f"response.{status}", {"response": response_object(plan, status, output, usage)}),
    ]
    frames.extend(Frame(_event(kind, seq + i, body), 0) for i, (kind, body) in enumerate(events))
    return frames


def _event(kind: str, seq: int, payload: JSON) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": seq, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
