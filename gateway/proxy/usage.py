"""Stage 6: what the upstream says was used, read from a JSON body or from a stream's events.

"Not reported" (None) is kept apart from zero: a missing usage object is charged from the text
the client received, never as free.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.cost.pricing import Billed
from gateway.proxy.endpoints import Endpoint

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of an event, LF or CRLF
_FINAL_RESPONSE_EVENTS = {"response.completed", "response.incomplete", "response.failed"}
_RESPONSE_TEXT_EVENTS = {
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.refusal.delta",
}


@dataclass(frozen=True, slots=True)
class Reported(Billed):
    """Every billed count of one call (OpenAI's nesting: a part within its whole), and what the
    upstream said about it."""

    exact: bool = True  # False: counted by the gateway because the upstream did not say
    tier: str | None = None  # the service tier the upstream says it served the call at

    @property
    def cached_tokens(self) -> int:
        return self.cache_read_tokens


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    details = usage.get(name)
    return details if isinstance(details, Mapping) else {}


def from_usage(usage: object) -> Reported | None:
    """Both shapes: chat/completions/embeddings (prompt_/completion_tokens) and Responses
    (input_/output_tokens). Cached, cache-write and audio tokens are inside input tokens,
    reasoning and audio inside output; a part is never counted above its whole."""
    if not isinstance(usage, Mapping):
        return None
    if "input_tokens" in usage:
        inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        into, outof = _details(usage, "input_tokens_details"), _details(
            usage, "output_tokens_details")
    elif "prompt_tokens" in usage:
        inp, out = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        into, outof = _details(usage, "prompt_tokens_details"), _details(
            usage, "completion_tokens_details")
    else:
        return None
    cached = min(_int(into.get("cached_tokens")), inp)
    audio = min(_int(into.get("audio_tokens")), inp)
    cached_audio = _details(into, "cached_tokens_details").get("audio_tokens")
    return Reported(
        inp, out, cached,
        cache_write_tokens=min(_int(into.get("cache_write_tokens")), inp),
        input_audio_tokens=audio,
        cache_audio_read_tokens=min(_int(cached_audio), audio, cached),
        output_audio_tokens=min(_int(outof.get("audio_tokens")), out),
    )


def _with_call_fees(reported: Reported | None, body: Mapping[str, Any]) -> Reported | None:
    """The response's service tier and its built-in tool calls (each may carry a fee)."""
    if reported is None:
        return None
    tier = body.get("service_tier")
    output = body.get("output")
    kinds = [item.get("type") for item in output if isinstance(item, Mapping)] if isinstance(
        output, list) else []
    return dataclasses.replace(
        reported,
        tier=tier if isinstance(tier, str) else None,
        web_searches=kinds.count("web_search_call"),
        file_searches=kinds.count("file_search_call"),
    )


def from_body(body: Mapping[str, Any]) -> Reported | None:
    return _with_call_fees(from_usage(body.get("usage")), body)


def text_of_body(endpoint: Endpoint, body: Mapping[str, Any]) -> str:
    """The generated text of a non-streamed answer, to count when usage is missing."""
    if endpoint is Endpoint.RESPONSES:
        parts = [
            c.get("text", "")
            for item in body.get("output") or ()
            if isinstance(item, Mapping)
            for c in item.get("content") or ()
            if isinstance(c, Mapping)
        ]
        return "".join(p for p in parts if isinstance(p, str))
    texts: list[str] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        texts.extend(_strings(message if isinstance(message, Mapping) else choice))
    return "".join(texts)


def _strings(part: Mapping[str, Any]) -> Iterator[str]:
    for name in ("content", "text", "refusal", "reasoning_content"):
        value = part.get(name)
        if isinstance(value, str):
            yield value
    for call in part.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            yield from (v for v in (function.get("name"), function.get("arguments"))
                        if isinstance(v, str))


class SSESplitter:
    """Cuts a byte stream into whole server-sent events, whatever the chunking."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The buffer stays as received, so where a chunk ends never changes the events."""
        data = self._buffer + chunk
        if b"\r" in data:
            *events, self._buffer = _BLANK_LINE.split(data)
        else:
            *events, self._buffer = data.split(b"\n\n")
        return [e + b"\n\n" for e in events]

    def rest(self) -> bytes:
        return self._buffer


class StreamMeter:
    """Reads each event once: finds the usage, keeps the text the client received, and hides
    the usage-only chunk from a client that did not ask for it."""

    def __init__(self, endpoint: Endpoint, hide_usage: bool) -> None:
        self._endpoint = endpoint
        self._hide_usage = hide_usage
        self._text: list[str] = []
        self._tier: str | None = None  # chat chunks each carry the tier
        self.reported: Reported | None = None
        self.response: Mapping[str, Any] | None = None  # Responses: the latest response object
        self.ended = False  # the event that ends the answer for a client has been read

    def feed(self, event: bytes) -> bytes | None:
        """The bytes to send the client for this event (None: send nothing)."""
        data = _data_of(event)
        if data is None:
            return event
        if data == b"[DONE]":
            self.ended = True
            return event
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(obj, dict):
            return event
        if self._endpoint is Endpoint.RESPONSES:
            self._read_response_event(obj)
            return event
        return self._read_chunk(obj, event)

    def _read_response_event(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind in _RESPONSE_TEXT_EVENTS and isinstance(obj.get("delta"), str):
            self._text.append(obj["delta"])
            return
        response = obj.get("response")
        if not isinstance(response, Mapping):
            return
        self.response = response
        if kind in _FINAL_RESPONSE_EVENTS:
            self.reported = from_body(response)
            self.ended = True

    def _read_chunk(self, obj: dict[str, Any], event: bytes) -> bytes | None:
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, Mapping):
                delta = choice.get("delta")
                self._text.extend(_strings(delta if isinstance(delta, Mapping) else choice))
        tier = obj.get("service_tier")
        if isinstance(tier, str):
            self._tier = tier
        usage = obj.get("usage")
        if usage is None:
            return event
        self.reported = _with_call_fees(from_usage(usage), {"service_tier": self._tier})
        if not self._hide_usage:
            return event
        if not choices:
            return None  # the usage-only chunk the gateway asked for
        del obj["usage"]
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def produced_text(self) -> str:
        return "".join(self._text)


def _data_of(event: bytes) -> bytes | None:
    lines = [ln[5:].strip(b" \r") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
