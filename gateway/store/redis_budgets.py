"""API-created budgets in Redis, shared by every gateway instance on it.

Per tenant, a hash ``{tenant}:budgets`` (field = budget id, value = JSON of ``Budget.to_dict``;
field ``_v`` = the version, ``_n`` = the creation counter) and a sorted set
``{tenant}:budgets:order`` of ids by creation. Both carry the tenant's hash tag (one cluster
slot); each operation is one Lua script: one round trip, atomic, on Redis and Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.cost.model import Budget
from gateway.store.base import StoreError
from gateway.store.memory_budgets import stored_id


def _script(name: str) -> str:
    return (resources.files("gateway.store") / "lua" / name).read_text()


def budgets_key(tenant: str) -> str:
    """The hash whose ``_v`` field is the tenant's API-budget version (reserve.lua reads it)."""
    return f"{{{tenant}}}:budgets"


def _keys(tenant: str) -> list[str]:
    return [budgets_key(tenant), f"{{{tenant}}}:budgets:order"]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Guard = Callable[[str, Any], Awaitable[Any]]


async def _unguarded(operation: str, awaitable: Any) -> Any:
    """Redis failures leave as StoreError, like the rest of the store."""
    try:
        return await awaitable
    except (RedisError, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise StoreError(f"redis {reason}") from exc


class RedisBudgetDefinitions:
    def __init__(self, client: aioredis.Redis | RedisCluster, guarded: Guard | None = None
                 ) -> None:
        """``guarded``: the store's way of making a call (its connection bound, its counts)."""
        self._redis = client
        self._guard = guarded or _unguarded
        self._put = client.register_script(_script("budget_put.lua"))
        self._delete = client.register_script(_script("budget_delete.lua"))
        self._list = client.register_script(_script("budget_list.lua"))

    async def put(self, budget: Budget) -> int:
        budget_id = stored_id(budget)
        args: list[str | bytes] = [budget_id, orjson.dumps(budget.to_dict())]
        return int(await self._guarded(self._put(keys=_keys(budget.tenant), args=args)))

    async def delete(self, tenant: str, budget_id: str) -> bool:
        if not budget_id or budget_id.startswith("_"):
            return False  # never stored (put refuses such ids); "_v" must not delete the version
        reply = await self._guarded(self._delete(keys=_keys(tenant), args=[budget_id]))
        return int(reply) == 1

    async def list(self, tenant: str) -> tuple[int, list[Budget]]:
        version, *flat = await self._guarded(self._list(keys=_keys(tenant)))
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return int(version), [_budget(tenant, _text(i), value) for i, value in pairs]

    async def version(self, tenant: str) -> int:
        return int(await self._guarded(self._redis.hget(_keys(tenant)[0], "_v")) or 0)

    async def _guarded(self, awaitable: Any) -> Any:
        return await self._guard("budgets", awaitable)


def _budget(tenant: str, budget_id: str, value: bytes | str) -> Budget:
    try:
        return Budget.from_dict(orjson.loads(value))
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise StoreError(f"redis: budget {budget_id!r} of tenant {tenant!r} is unreadable: "
                         f"{exc}") from exc
