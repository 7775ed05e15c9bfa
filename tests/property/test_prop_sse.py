"""Property tests: a stream read through SSESplitter + StreamMeter does not depend on how the
network cut it into chunks, and hiding the usage chunk never drops what the model wrote."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.endpoints import Endpoint
from gateway.proxy.usage import Reported, SSESplitter, StreamMeter

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True)

# orjson refuses lone surrogates, and so would any upstream: its JSON is valid UTF-8.
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
EOL = st.sampled_from(["\n", "\r\n"])
COUNT = st.integers(min_value=0, max_value=10**6)


@dataclass(frozen=True)
class Stream:
    raw: bytes
    contents: tuple[str, ...]  # every content delta, in order
    usage: Reported | None
    events: int
    usage_only_chunk: bool = False  # the usage rides on a chunk of its own, with no choices


@dataclass(frozen=True)
class Outcome:
    events: tuple[bytes, ...]
    forwarded: tuple[bytes | None, ...]
    reported: Reported | None
    text: str
    rest: bytes


def _event(eol: str, data: object, event_id: int | None = None) -> str:
    head = f"id: {event_id}{eol}" if event_id is not None else ""
    body = data if isinstance(data, str) else orjson.dumps(data).decode()
    return f"{head}data: {body}{eol}{eol}"


def _chunk(content: str, usage: object = None, null_usage: bool = False) -> dict[str, object]:
    chunk: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    if usage is not None or null_usage:
        chunk["usage"] = usage
    return chunk


@st.composite
def chat_streams(draw: st.DrawFn) -> Stream:
    contents = draw(st.lists(TEXT, max_size=5))
    null_usage = draw(st.booleans())  # OpenAI sends "usage": null on every chunk but the last
    prompt, completion = draw(COUNT), draw(COUNT)
    cached = draw(st.integers(min_value=0, max_value=prompt))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}
    placement = draw(st.sampled_from(["own chunk", "on last content", "none"]))
    if placement == "on last content" and not contents:
        placement = "own chunk"
    parts: list[str] = []
    for i, content in enumerate(contents):
        eol = draw(EOL)
        if draw(st.booleans()):
            parts.append(f": keep-alive{eol}{eol}")
        last = i == len(contents) - 1
        carried = usage if last and placement == "on last content" else None
        parts.append(_event(eol, _chunk(content, carried, null_usage), draw(
            st.none() | st.integers(0, 99))))
    if placement == "own chunk":
        parts.append(_event(draw(EOL), {"id": "chatcmpl-1", "choices": [], "usage": usage}))
    parts.append(_event(draw(EOL), "[DONE]"))
    reported = None if placement == "none" else Reported(prompt, completion, cached)
    return Stream("".join(parts).encode(), tuple(contents), reported, len(parts),
                  placement == "own chunk")


def _read(chunks: list[bytes], endpoint: Endpoint = Endpoint.CHAT, hide: bool = False) -> Outcome:
    splitter, meter = SSESplitter(), StreamMeter(endpoint, hide_usage=hide)
    events: list[bytes] = []
    forwarded: list[bytes | None] = []
    for chunk in chunks:
        for event in splitter.feed(chunk):
            events.append(event)
            forwarded.append(meter.feed(event))
    return Outcome(tuple(events), tuple(forwarded), meter.reported, meter.produced_text(),
                   splitter.rest())


def _cut(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def _chunks(forwarded: tuple[bytes | None, ...]) -> list[dict[str, Any]]:
    """The JSON chunks a client would read from what was forwarded."""
    lines = (line for event in forwarded if event is not None for line in event.split(b"\n"))
    return [orjson.loads(line[len(b"data: "):]) for line in lines if line.startswith(b"data: {")]


def _contents(forwarded: tuple[bytes | None, ...]) -> list[str]:
    return [choice["delta"]["content"] for chunk in _chunks(forwarded)
            for choice in chunk["choices"]]


@BOUNDED
@given(chat_streams())
def test_whole_stream_reads_every_event_usage_and_text(stream: Stream) -> None:
    whole = _read([stream.raw])
    assert len(whole.events) == stream.events
    assert whole.rest == b""
    assert whole.reported == stream.usage
    assert whole.text == "".join(stream.contents)


@BOUNDED
@given(chat_streams())
def test_split_at_every_byte_boundary_reads_the_same(stream: Stream) -> None:
    whole = _read([stream.raw])
    for i in range(len(stream.raw) + 1):
        assert _read(_cut(stream.raw, [i])) == whole, f"split at byte {i}"


@BOUNDED
@given(chat_streams(), st.data())
def test_random_multi_splits_read_the_same(stream: Stream, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream.raw)), max_size=20))
    assert _read(_cut(stream.raw, cuts)) == _read([stream.raw])


@BOUNDED
@given(chat_streams())
def test_one_byte_at_a_time_reads_the_same(stream: Stream) -> None:
    chunks = [stream.raw[i:i + 1] for i in range(len(stream.raw))]
    assert _read(chunks) == _read([stream.raw])


@BOUNDED
@given(chat_streams(), st.data())
def test_hiding_usage_never_drops_content(stream: Stream, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream.raw)), max_size=8))
    shown = _read(_cut(stream.raw, cuts), hide=False)
    hidden = _read(_cut(stream.raw, cuts), hide=True)
    assert hidden.reported == shown.reported == stream.usage
    assert hidden.text == shown.text == "".join(stream.contents)
    assert _contents(hidden.forwarded) == list(stream.contents)
    assert all(chunk.get("usage") is None for chunk in _chunks(hidden.forwarded))
    # only the usage-only chunk is held back; everything else still reaches the client
    dropped = [e for e, f in zip(hidden.events, hidden.forwarded, strict=True) if f is None]
    assert len(dropped) == int(stream.usage_only_chunk)
    assert shown.forwarded == shown.events  # a client that asked for usage gets every byte


@st.composite
def response_streams(draw: st.DrawFn) -> Stream:
    deltas = draw(st.lists(TEXT, max_size=5))
    final = draw(st.sampled_from(["response.completed", "response.incomplete",
                                  "response.failed"]))
    inp, out = draw(COUNT), draw(COUNT)
    cached = draw(st.integers(min_value=0, max_value=inp))
    parts = [f"event: response.output_text.delta{(eol := draw(EOL))}"
             + _event(eol, {"type": "response.output_text.delta", "delta": d}) for d in deltas]
    usage = {"input_tokens": inp, "output_tokens": out,
             "input_tokens_details": {"cached_tokens": cached},
             "output_tokens_details": {"reasoning_tokens": 0}}
    eol = draw(EOL)
    parts.append(f"event: {final}{eol}"
                 + _event(eol, {"type": final, "response": {"usage": usage}}))
    return Stream("".join(parts).encode(), tuple(deltas), Reported(inp, out, cached), len(parts))


@BOUNDED
@given(response_streams())
def test_responses_stream_split_anywhere_reads_the_same(stream: Stream) -> None:
    whole = _read([stream.raw], Endpoint.RESPONSES, hide=True)
    assert whole.reported == stream.usage
    assert whole.text == "".join(stream.contents)
    assert len(whole.events) == stream.events
    assert whole.forwarded == whole.events  # the Responses API's events are never altered
    for i in range(len(stream.raw) + 1):
        assert _read(_cut(stream.raw, [i]), Endpoint.RESPONSES, hide=True) == whole


def test_a_stray_carriage_return_reads_the_same_however_the_chunks_fall() -> None:
    raw = b"data: a\r\r\n\ndata: b\r\n\r\n"
    whole = SSESplitter().feed(raw)
    for cut in range(1, len(raw)):
        splitter = SSESplitter()
        assert splitter.feed(raw[:cut]) + splitter.feed(raw[cut:]) == whole
