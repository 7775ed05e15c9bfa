"""OpenAI wire shapes the mock answers with: bodies, SSE frames, usage and error objects.

Everything here is pure: a ``Plan`` (what one request will produce) goes in, bytes come out.
Output text is made of pieces that are one token each in both ``cl100k_base`` and
``o200k_base`` ("hello" then " hello" ...), so the text of any streamed prefix tokenizes to
exactly the number of content frames sent.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from dataclasses import dataclass
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
class Plan:
    """What one request produces, decided before anything is sent."""

    id: str
    model: str
    created: int
    input_tokens: int
    cached_tokens: int
    per_choice: int  # output tokens of each choice
    choices: int  # ``n``
    capped: bool  # the request set a max output field, and output stopped there
    usage: bool  # the usage object is part of the answer

    @property
    def output_tokens(self) -> int:
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


def completion_usage(plan: Plan) -> JSON:
    return {
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
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
        body["usage"] = completion_usage(plan)
    body["service_tier"] = "default"
    body["system_fingerprint"] = None
    return orjson.dumps(body)


def chat_stream(plan: Plan) -> list[Frame]:
    """Role chunk per choice, one chunk per token, a finish chunk per choice, usage, [DONE]."""
    base = _head(plan, "chat.completion.chunk")
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
        frames.append(Frame(_data({**base, "choices": [], "usage": completion_usage(plan)}), 0))
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
        body["usage"] = completion_usage(plan)
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
        frames.append(Frame(_data({**base, "choices": [], "usage": completion_usage(plan)}), 0))
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


def responses_usage(plan: Plan) -> JSON:
    return {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.input_tokens + plan.output_tokens,
    }


def _final_status(plan: Plan) -> str:
    return "incomplete" if plan.capped else "completed"


def _response(plan: Plan, status: str, output: list[JSON]) -> JSON:
    finished = status != "in_progress"
    return {
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
        "usage": responses_usage(plan) if finished and plan.usage else None,
        "user": None,
        "metadata": {},
    }


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


def response(plan: Plan) -> bytes:
    status = _final_status(plan)
    output = [_message(plan, status, [_output_text(text_of(plan.per_choice))])]
    return orjson.dumps(_response(plan, status, output))


def response_stream(plan: Plan) -> list[Frame]:
    """The Responses API event sequence; the last event is ``response.completed``, or
    ``response.incomplete`` when output stopped at ``max_output_tokens`` (as OpenAI does)."""
    status = _final_status(plan)
    text = text_of(plan.per_choice)
    item_id = "msg_" + plan.id.removeprefix("resp_")
    where: JSON = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, JSON]] = [
        ("response.created", {"response": _response(plan, "in_progress", [])}),
        ("response.in_progress", {"response": _response(plan, "in_progress", [])}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": _message(plan, "in_progress", [])},
        ),
        ("response.content_part.added", {**where, "part": _output_text("")}),
    ]
    frames = [Frame(_event(kind, seq, payload), 0) for seq, (kind, payload) in enumerate(events)]
    seq = len(frames)
    for i in range(plan.per_choice):
        delta = {**where, "delta": FIRST_PIECE if i == 0 else NEXT_PIECE, "logprobs": []}
        frames.append(Frame(_event("response.output_text.delta", seq, delta), 1))
        seq += 1
    message = _message(plan, status, [_output_text(text)])
    events = [
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": _output_text(text)}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
        (f"response.{status}", {"response": _response(plan, status, [message])}),
    ]
    frames.extend(Frame(_event(kind, seq + i, body), 0) for i, (kind, body) in enumerate(events))
    return frames


def _event(kind: str, seq: int, payload: JSON) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": seq, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
