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
PER_TENANT = 100_000  # LimitSettings.objects_per_tenant's default


@dataclass(frozen=True, slots=True)
class Owned:
    upstream: str
    context_tokens: int | None = None  # input + output charged for it; None: not yet known
    detail: str | None = None  # what else its kind keeps (a batch file's bound, as JSON)


class ObjectOwners(Protocol):
    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float,
                  keep: int = PER_TENANT) -> None:
        """Remembers the object as ``tenant``'s; past ``keep`` objects of the tenant, its own
        oldest are forgotten (a tenant that creates objects without end crowds out no other
        tenant's)."""
        ...

    async def get(self, tenant: str, kind: str, oid: str, now: float) -> Owned | None: ...

    async def delete(self, tenant: str, kind: str, oid: str) -> None: ...


def object_key(tenant: str, kind: str, oid: str) -> str:
    return f"{{{tenant}}}:obj:{kind}:{oid}"


def _index_key(tenant: str) -> str:
    return f"{{{tenant}}}:objects"


class MemoryObjects:
    """Bounded per tenant (``keep``, its oldest forgotten first), in all and by age."""

    def __init__(self, max_objects: int = MEMORY_MAX_OBJECTS) -> None:
        self._max = max_objects
        self._objects: OrderedDict[str, tuple[Owned, float, str]] = OrderedDict()
        self._tenants: dict[str, OrderedDict[str, None]] = {}  # each tenant's keys, oldest first

    def __len__(self) -> int:
        return len(self._objects)

    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float,
                  keep: int = PER_TENANT) -> None:
        self.add(object_key(tenant, kind, oid), owned, now + OBJECT_TTL_S, tenant, keep)

    def add(self, key: str, owned: Owned, expires: float, tenant: str,
            keep: int | None = PER_TENANT) -> list[str]:
        """Adds one object; the keys it pushed out (``keep`` None: no bound per tenant)."""
        self._objects[key] = (owned, expires, tenant)
        self._objects.move_to_end(key)
        mine = self._tenants.setdefault(tenant, OrderedDict())
        mine[key] = None
        mine.move_to_end(key)
        out = []
        while keep is not None and len(mine) > keep:
            out.append(mine.popitem(last=False)[0])
            self._objects.pop(out[-1], None)
        while len(self._objects) > self._max:
            out.append(next(iter(self._objects)))
            self.forget(out[-1])
        return out

    async def get(self, tenant: str, kind: str, oid: str, now: float) -> Owned | None:
        found = self._objects.get(object_key(tenant, kind, oid))
        if found is None or found[1] <= now:
            return None
        return found[0]

    async def delete(self, tenant: str, kind: str, oid: str) -> None:
        self.forget(object_key(tenant, kind, oid))

    def row(self, key: str) -> list[object]:
        owned, expires, tenant = self._objects[key]
        return [key, owned.upstream, owned.context_tokens, owned.detail, expires, tenant]

    def forget(self, key: str) -> None:
        found = self._objects.pop(key, None)
        if found is None:
            return
        mine = self._tenants.get(found[2])
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._tenants[found[2]]

    def snapshot(self) -> list[list[object]]:
        return [self.row(key) for key in self._objects]

    def restore(self, rows: object) -> None:
        """Replaces the objects by ``rows`` (from ``snapshot``); ValueError names a bad one."""
        self._objects, self._tenants = OrderedDict(), {}
        self.restore_into(self, rows)

    @staticmethod
    def restore_into(objects: MemoryObjects, rows: object) -> None:
        """Adds ``rows`` (as ``snapshot`` writes them) to ``objects``; ValueError names a bad
        one (then ``objects`` may hold the rows before it)."""
        if not isinstance(rows, list):
            raise ValueError("objects: expected a list")
        for i, row in enumerate(rows):
            if isinstance(row, list) and len(row) == 5 and isinstance(row[0], str):
                row = [*row, row[0][1:row[0].find("}:obj:")]]  # written before its tenant was
            if not (isinstance(row, list) and len(row) == 6 and isinstance(row[0], str)
                    and isinstance(row[1], str) and isinstance(row[4], int | float)
                    and (row[2] is None or isinstance(row[2], int))
                    and (row[3] is None or isinstance(row[3], str))
                    and isinstance(row[5], str)):
                raise ValueError(f"objects[{i}]: expected [key, upstream, context, detail, "
                                 "expires, tenant]")
            objects.add(row[0], Owned(row[1], row[2], row[3]), float(row[4]), row[5], None)


# KEYS: the object's hash, the tenant's index of its objects (a sorted set by creation time)
# ARGV: ttl (s), keep, now, then the hash's field/value pairs
_PUT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[1])
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if excess > 0 then
  for _, key in ipairs(redis.call('ZPOPMIN', KEYS[2], excess)) do
    if string.sub(key, 1, 1) == '{' then redis.call('DEL', key) end
  end
end
redis.call('EXPIRE', KEYS[2], ttl)
"""


class RedisObjects:
    """One hash per object with the store's expiry, and one index per tenant that bounds
    their number; keys hash-tagged by tenant (one cluster slot per tenant)."""

    def __init__(self, client: Any, guarded: Any) -> None:
        self._redis = client
        self._guarded = guarded
        self._put = client.register_script(_PUT)

    async def put(self, tenant: str, kind: str, oid: str, owned: Owned, now: float,
                  keep: int = PER_TENANT) -> None:
        fields: list[str | int] = ["upstream", owned.upstream]
        if owned.context_tokens is not None:
            fields += ["context", owned.context_tokens]
        if owned.detail is not None:
            fields += ["detail", owned.detail]
        keys = [object_key(tenant, kind, oid), _index_key(tenant)]
        await self._guarded("objects", self._put(
            keys=keys, args=[math.ceil(OBJECT_TTL_S), keep, int(now), *fields]))

    async def get(self, tenant: str, kind: str, oid: str, now: float) -> Owned | None:
        raw = await self._guarded("objects", self._redis.hgetall(object_key(tenant, kind, oid)))
        return _owned(raw) if raw else None

    async def delete(self, tenant: str, kind: str, oid: str) -> None:
        key = object_key(tenant, kind, oid)
        await self._guarded("objects", self._redis.delete(key))
        await self._guarded("objects", self._redis.zrem(_index_key(tenant), key))


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
