"""Objects a tenant created through the gateway (responses), remembered by their owner.

An id is looked up under the asking tenant only, so another tenant's id is simply not found:
OpenAI's 404, the same answer as an id that never existed. Each record carries what the
gateway needs later: the upstream that holds the object and the tokens its context had (an
earlier response's input and output bound the next turn's ``previous_response_id``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

OBJECT_TTL_S = 30 * 86_400  # OpenAI keeps stored responses for 30 days
MEMORY_MAX_OBJECTS = 1_000_000  # the embedded store forgets the oldest past this many


@dataclass(frozen=True, slots=True)
class Owned:
    upstream: str
    context_tokens: int | None = None  # input + output charged for it; None: not yet known


class ObjectOwners(Protocol):
    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float) -> None: ...

    async def get(self, tenant: str, kind: str, oid: str, now: float) -> Owned | None: ...

    async def delete(self, tenant: str, kind: str, oid: str) -> None: ...


def object_key(tenant: str, kind: str, oid: str) -> str:
    return f"{{{tenant}}}:obj:{kind}:{oid}"


class MemoryObjects:
    """Bounded by count (oldest forgotten first) and by age."""

    def __init__(self, max_objects: int = MEMORY_MAX_OBJECTS) -> None:
        self._max = max_objects
        self._objects: OrderedDict[str, tuple[Owned, float]] = OrderedDict()

    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float) -> None:
        key = object_key(tenant, kind, oid)
        self._objects[key] = (owned, now + OBJECT_TTL_S)
        self._objects.move_to_end(key)
        while len(self._objects) > self._max:
            self._objects.popitem(last=False)

    async def get(self, tenant: str, kind: str, oid: str, now: float) -> Owned | None:
        found = self._objects.get(object_key(tenant, kind, oid))
        if found is None or found[1] <= now:
            return None
        return found[0]

    async def delete(self, tenant: str, kind: str, oid: str) -> None:
        self._objects.pop(object_key(tenant, kind, oid), None)


class RedisObjects:
    """One hash per object with the store's expiry; keys hash-tagged by tenant."""

    def __init__(self, client: Any, guarded: Any) -> None:
        self._redis = client
        self._guarded = guarded

    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float) -> None:
        key = object_key(tenant, kind, oid)
        fields: dict[str, str | int] = {"upstream": owned.upstream}
        if owned.context_tokens is not None:
            fields["context"] = owned.context_tokens
        await self._guarded("objects", self._redis.hset(key, mapping=fields))
        await self._guarded("objects", self._redis.expire(key, math.ceil(OBJECT_TTL_S)))

    async def get(self, tenant: str, kind: str, oid: str, now: float) -> Owned | None:
        raw = await self._guarded("objects", self._redis.hgetall(object_key(tenant, kind, oid)))
        return _owned(raw) if raw else None

    async def delete(self, tenant: str, kind: str, oid: str) -> None:
        await self._guarded("objects", self._redis.delete(object_key(tenant, kind, oid)))


def _owned(raw: Mapping[Any, Any]) -> Owned | None:
    values = {_text(k): _text(v) for k, v in raw.items()}
    upstream = values.get("upstream")
    if upstream is None:
        return None
    context = values.get("context")
    return Owned(upstream, int(context) if context and context.isdigit() else None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
