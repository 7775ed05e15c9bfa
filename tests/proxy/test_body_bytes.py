"""A body sent upstream is held for its whole exchange: it takes the room of its bytes only."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import orjson

from gateway.proxy.resolve import body_bytes

BODY = {"model": "gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": "word " * 200}]}


def _held(make: Callable[[], bytes]) -> int:
    """The memory ``make()``'s result holds (what is still allocated while it is kept)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        held = tracemalloc.get_traced_memory()[0] - before
        del kept
        return held
    finally:
        tracemalloc.stop()


def test_a_body_written_for_the_upstream_keeps_no_spare_room() -> None:
    text = body_bytes(BODY)
    assert orjson.loads(text) == BODY
    assert _held(lambda: body_bytes(BODY)) < len(text) + 256  # (orjson.dumps' answer: ~8x)
