"""Every store backend behind one fixture: the conformance tests run unchanged on each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.store.base import Store
from gateway.store.memory import MemoryStore

BACKENDS: dict[str, Callable[[], Store]] = {
    "memory": MemoryStore,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend = BACKENDS[request.param]()
    yield backend
    await backend.close()
