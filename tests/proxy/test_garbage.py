"""A request leaves nothing for the garbage collector: the request path's objects are freed by
their reference counts, so a busy gateway's collections stay short. A cycle per request (the
exchange holding its own settlement) once left ~28 objects each to the collector, whose full
collections then took 25-60 ms under load."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from tests.proxy.conftest import MakeHarness


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """What the block leaves that only the garbage collector could free."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
    finally:
        gc.collect()
        found.extend(gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()


def gateway_types(objects: list[object]) -> list[str]:
    """The gateway's own among them (the in-process test client has cycles of its own)."""
    return sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in objects
                   if type(o).__module__.startswith("gateway.")})


async def test_answered_refused_and_invalid_requests_leave_no_cycles(
    gateway: MakeHarness,
) -> None:
    gw = await gateway("""
  - {name: small, tenant: acme, max_tokens_per_day: 2000}
""")
    await (await gw.chat()).read()  # first use: caches filled, not garbage
    with cyclic_garbage() as garbage:
        for _ in range(5):
            answered = await gw.chat()
            assert answered.status == 200
            await answered.read()
            streamed = await gw.chat(stream=True)
            assert streamed.status == 200
            await streamed.read()
            refused = await gw.chat(max_tokens=5000)
            assert refused.status == 429
            await refused.read()
            invalid = await gw.post("/chat/completions", {"model": "gpt-4o-mini"})
            assert invalid.status == 400
            await invalid.read()
    assert gateway_types(garbage) == []
