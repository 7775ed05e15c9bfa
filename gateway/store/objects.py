"""Objects a tenant created through the gateway (responses, files, batches), remembered by
their owner.

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
    detail: str | None = None  # what else its kind keeps (a batch file's bound, as JSON)


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

    def row(self, key: str) -> list[object]:
        owned, expires = self._objects[key]
        return [key, owned.upstream, owned.context_tokens, owned.detail, expires]

    def forget(self, key: str) -> None:
        self._objects.pop(key, None)

    def snapshot(self) -> list[list[object]]:
        return [self.row(key) for key in self._objects]

    def restore(self, rows: object) -> None:
        """Replaces the objects by ``rows`` (from ``snapshot``); ValueError names a bad one."""
        self._objects = OrderedDict()
        self.restore_into(self, rows)

    @staticmethod
    def restore_into(objects: MemoryObjects, rows: object) -> None:
        """Adds ``rows`` (as ``snapshot`` writes them) to ``objects``; ValueError names a bad
        one (then ``objects`` may hold the rows before it)."""
        if not isinstance(rows, list):
            raise ValueError("objects: expected a list")
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 5 and isinstance(row[0], str)
                    and isinstance(row[1], str) and isinstance(row[4], int | float)
                    and (row[2] is None or isinstance(row[2], int))
                    and (row[3] is None or isinstance(row[3], str))):
                raise ValueError(f"objects[{i}]: expected [key, upstream, context, detail, "
                                 "expires]")
            objects._objects[row[0]] = (Owned(row[1], row[2], row[3]), float(row[4]))
            objects._objects.move_to_end(row[0])
        while len(objects._objects) > objects._max:
            objects._objects.popitem(last=False)


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
        if owned.detail is not None:
            fields["detail"] = owned.detail
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
    return Owned(upstream, int(context) if context and context.isdigit() else None,
                 values.get("detail"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
