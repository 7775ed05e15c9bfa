"""The shared store: budgets that hold across every gateway instance using one Redis.

Check-and-reserve is one Lua script (one round trip), settle-and-record another; each script
is loaded once and re-loaded by redis-py on NOSCRIPT. Every key of a tenant carries the hash
tag ``{tenant}``, so a tenant's budgets live in one cluster slot and scripts stay atomic there.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import hiredis
import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from gateway.cost.model import Filter, Summary, Usage, nano_to_usd, usd_to_nano
from gateway.cost.rollup import DAY_S, KEPT_DAYS, OTHER, EndUserRow, RollupRow, day_of, hour_of
from gateway.cost.windows import Window
from gateway.store import spend
from gateway.store import url as store_url
from gateway.store.audit import AuditLog, RedisAudit
from gateway.store.base import BudgetDefinitions, Line, LineUse, ReserveResult, StoreError
from gateway.store.batches import BatchLedger, RedisBatches
from gateway.store.coalesce import Coalescer
from gateway.store.end_user_days import END_USERS_REPORTED_MAX
from gateway.store.freed import RoomFreed
from gateway.store.objects import ObjectOwners, RedisObjects
from gateway.store.redis_budgets import RedisBudgetDefinitions, budgets_key
from gateway.store.resp_lane import RespLane

log = logging.getLogger(__name__)

_SETTLED_MARKER_TTL_S = 86_400
FREED_CHANNEL = "gateway:freed:"  # + tenant: a settlement while one of its requests is held
_HELD_MARK_S = 30  # how long "a request of this tenant is held" lasts unless renewed
_LISTEN_RETRY_S = 1.0
_ROLLUP_KEEP_S = KEPT_DAYS * DAY_S
_TENANTS_KEY = "gateway:tenants"
_POOL_SIZE = 64
_POOL_WAIT_S = 5.0
BOUND_PARAMETERS = ("max_connections", "wait_s")  # the store URL's own, for both kinds


@dataclass(frozen=True, slots=True)
class Bound:
    """How many calls may be in flight to the store at once, and how long one waits for its
    turn before it is a store error: ``?max_connections=64&wait_s=5`` on the store URL."""

    max_connections: int = _POOL_SIZE
    wait_s: float = _POOL_WAIT_S

    @classmethod
    def from_url(cls, url: str) -> tuple[str, Bound]:
        """The URL without the bound's parameters (redis-py reads the rest), and the bound."""
        parts = store_url.split(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = dict(q for q in query if q[0] in BOUND_PARAMETERS)
        rest = urlencode([q for q in query if q[0] not in BOUND_PARAMETERS])
        bound = cls(int(ours.get("max_connections", _POOL_SIZE)),
                    float(ours.get("wait_s", _POOL_WAIT_S)))
        return store_url.join(parts._replace(query=rest)), bound
def cluster_seeds(url: str) -> tuple[str, list[ClusterNode]]:
    """``redis+cluster://[auth@]host:port,host:port/...``: the first node as a ``redis://`` URL
    (auth, path and query apply to every node) and the other nodes."""
    parts = store_url.split(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    seeds = []
    for other in others:
        host, _, port = other.rpartition(":")
        seeds.append(ClusterNode(host.strip("[]"), int(port or 6379)))
    netloc = f"{auth}@{first}" if auth else first
    return store_url.join(parts._replace(scheme="redis", netloc=netloc)), seeds


# a pooled connection that died with a restarted Redis is retried on a fresh one, and so is a
# Redis still loading its data; a Redis that stays away fails in well under a second
_RETRIES: dict[str, Any] = {
    "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 3),
    "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError,
                       redis_errors.BusyLoadingError],
}


def hiredis_packing(connection: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection`` (plain, TLS or Unix socket, as the URL chose) packing commands with
    hiredis, in C, as redis-py's synchronous client does: its asyncio connection packs in
    Python, argument by argument, which for a script call carrying its keys and per-line
    arguments cost more than Redis took to run the script."""

    class Packed(connection):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            first = args[0]
            if isinstance(first, str) and " " in first:  # "SCRIPT LOAD": one word per arg
                args = (*first.split(), *args[1:])
            return [hiredis.pack_command(args)]

    Packed.__name__ = Packed.__qualname__ = f"Hiredis{connection.__name__}"
    return Packed


def _script(name: str) -> str:
    lua = resources.files("gateway.store") / "lua"
    prelude = (lua / "lines.lua").read_text() if name in _WITH_LINES else ""
    return prelude + (lua / name).read_text()


_WITH_LINES = {"reserve.lua", "settle.lua", "peek.lua"}


def _held_key(tenant: str) -> str:
    return f"{{{tenant}}}:held"


def _expiry_key(tenant: str) -> str:
    """The tenant's reservations by expiry, for all its lines (lines.lua)."""
    return f"{{{tenant}}}:x"


def _end_users_key(tenant: str, day: int | str) -> str:
    """The tenant's end users of one day (``day``: its id; ``days``: the ids that have one)."""
    return f"{{{tenant}}}:eu:{day}"


def _keys(line: Line) -> tuple[str, str, str]:
    return line.key, line.key + ":p", line.key + ":x"


Span = Callable[[Window, int, int], tuple[Any, ...]]


def _windows(lines: Sequence[Line], now: float, of_window: Span) -> tuple[list[Any], list[int]]:
    """ARGV for the windows the lines meet: their count, then ``of_window(window, current
    bucket, oldest)`` of each, sent and worked out once per window (a request's lines share a
    few: hour, day, month); and each line's window, counted from 1 as Lua counts. Windows are
    told apart by identity, which is cheaper than their hash and at worst sends one twice."""
    index: dict[int, int] = {}
    values: list[Any] = []
    of_line: list[int] = []
    for line in lines:
        i = index.get(id(line.window))
        if i is None:
            i = index[id(line.window)] = len(index) + 1
            values += of_window(line.window, *line.window.buckets(now))
        of_line.append(i)
    return [len(index), *values], of_line


def _reserve_span(window: Window, bucket: int, oldest: int) -> tuple[Any, ...]:
    return bucket, oldest, window.width, repr(window.leaves_at(bucket))


def _settle_span(window: Window, bucket: int, oldest: int) -> tuple[Any, ...]:
    return bucket, oldest, _keep_s(window)


def _keep_s(window: Window) -> int:
    """How long a line's settled buckets live after a settle: a bucket settled now counts
    until ``leaves_at``, up to a window and one bucket away; an hour to spare."""
    return 40 * 86_400 if window.width == 0 else window.length_s + window.width + 3600


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_ROLLUP_FIELDS = {"in": "input_tokens", "out": "output_tokens", "cached": "cached_tokens",
                  "cost": "cost_nano", "n": "requests"}


def _rows(tenant: str, hour: int, table: dict[bytes, bytes]) -> list[RollupRow]:
    """Hash fields "model|provider|what" -> one row per model and provider."""
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    for field, value in table.items():
        model, provider, what = _text(field).rsplit("|", 2)
        grouped.setdefault((model, provider), {})[_ROLLUP_FIELDS[what]] = int(value)
    return [RollupRow(tenant, hour, model, provider, **counts)
            for (model, provider), counts in grouped.items()]


def _end_user_rows(tenant: str, day: int, table: dict[bytes, bytes]) -> list[EndUserRow]:
    """Hash fields: the end user ("" for those past the cap) -> "cost:input:output:requests"."""
    rows = []
    for field, value in table.items():
        cost, inp, out, requests = (int(v) for v in _text(value).split(":"))
        rows.append(EndUserRow(tenant, day, _text(field) or OTHER, inp, out, cost, requests))
    return rows


class RedisStore:
    def __init__(
        self, client: aioredis.Redis | RedisCluster, *, max_entries: int = 100_000,
        bound: Bound = Bound(), end_users_max: int = END_USERS_REPORTED_MAX,
        lane: RespLane | None = None,
    ) -> None:
        self._redis = client
        self._max_entries = max_entries
        self._end_users_max = end_users_max  # end users with a spend row of their own per day
        self._reserve = client.register_script(_script("reserve.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._peek = client.register_script(_script("peek.lua"))
        self._mark = client.register_script(_script("mark.lua"))
        self.definitions: BudgetDefinitions = RedisBudgetDefinitions(client, self._guarded)
        self.objects: ObjectOwners = RedisObjects(client, self._guarded)
        self.batches: BatchLedger = RedisBatches(client, self._guarded)
        self.audit: AuditLog = RedisAudit(client, self._guarded)
        self.failures: Counter[tuple[str, str]] = Counter()
        self._held: dict[str, float] = {}  # this instance's reservations: id -> expires_at
        # a cluster pipelines per node already; coalescing is for one server
        self._batch = Coalescer(client, lane) if isinstance(client, aioredis.Redis) else None
        # redis-py's cluster client fails at once past its connections per node (with an empty
        # message); calls wait for a free slot instead, as the single server's blocking pool
        self._slots = (None if self._batch is not None
                       else asyncio.Semaphore(bound.max_connections))
        self._wait_s = bound.wait_s
        # (definitions and objects call through _guarded, so they wait for a slot too)
        self._tenants: set[str] = set()
        self.freed = RoomFreed()
        self.freed.on_first = self._first_held
        self._listener: asyncio.Task[None] | None = None
        self._marking: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """``redis://``, ``rediss://`` or ``redis+cluster://host:port[,host:port...]`` (one
        node or several, any of which may be down at start), each with an optional
        ``max_connections`` and ``wait_s`` (see ``Bound``)."""
        url, bound = Bound.from_url(url)
        if url.startswith("redis+cluster://"):
            node, seeds = cluster_seeds(url)
            client = RedisCluster.from_url(node, startup_nodes=seeds,
                                           max_connections=bound.max_connections, **_RETRIES)
            return cls(client, bound=bound, **kwargs)
        # a burst waits for a pooled connection instead of failing with "too many connections"
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=bound.max_connections, timeout=bound.wait_s, **_RETRIES
        )
        plain = pool.connection_class is aioredis.Connection  # TCP, no TLS: the lane's kind
        pool.connection_class = hiredis_packing(pool.connection_class)
        lane = RespLane.of(pool) if plain else None
        return cls(aioredis.Redis(connection_pool=pool), lane=lane, **kwargs)

    async def reserve(
        self, tenant: str, rid: str, lines: Sequence[Line], now: float, ttl_s: float,
        version: int | None = None, expected_s: float | None = None,
    ) -> ReserveResult:
        keys = [k for line in lines for k in _keys(line)]
        keys += [_expiry_key(tenant), budgets_key(tenant)]
        expected_at = now + min(ttl_s, ttl_s if expected_s is None else expected_s)
        args: list[Any] = [repr(now), repr(now + ttl_s), rid, "" if version is None else version,
                           repr(expected_at)]
        windows, of_line = _windows(lines, now, _reserve_span)
        args += windows
        for line, window in zip(lines, of_line, strict=True):
            args += [line.limit if line.enforce else "", line.amount, window]
        reply = await self._call(self._reserve, keys, args, "reserve")
        if reply[1] == b"stale":
            return ReserveResult(False, (), stale=True)
        ok, fits, earliest, n = int(reply[0]) == 1, float(reply[1]), float(reply[2]), len(lines)
        used = tuple(int(u) for u in reply[3 : 3 + n])
        failed = tuple(int(i) for i in reply[3 + n :])
        if ok:
            self._held[rid] = now + ttl_s
            return ReserveResult(True, used)
        if fits < 0:
            return ReserveResult(False, used, failed)
        return ReserveResult(False, used, failed, fits, earliest)

    async def settle(
        self, tenant: str, rid: str, lines: Sequence[Line], usage: Usage | None, now: float
    ) -> bool:
        return await self._settle_lines(tenant, rid, lines, usage, now, _SETTLED_MARKER_TTL_S)

    async def _settle_lines(
        self, tenant: str, rid: str, lines: Sequence[Line], usage: Usage | None, now: float,
        marker_ttl_s: int,
    ) -> bool:
        keys = [f"{{{tenant}}}:s:{rid}"] + [k for line in lines for k in _keys(line)]
        args: list[Any] = [rid, marker_ttl_s]
        windows, of_line = _windows(lines, now, _settle_span)
        args += windows
        for line, window in zip(lines, of_line, strict=True):
            args += [line.amount, window]
        at = usage.timestamp if usage is not None else now
        hour, day = hour_of(at), day_of(at)
        keys += [_expiry_key(tenant), f"{{{tenant}}}:usage", f"{{{tenant}}}:r:{hour}",
                 f"{{{tenant}}}:r:hours", _end_users_key(tenant, day),
                 _end_users_key(tenant, "days"), _held_key(tenant)]
        end_user = "" if usage is None or usage.end_user is None else usage.end_user
        args += [*self._usage_args(usage), hour, end_user, day, self._end_users_max, KEPT_DAYS,
                 FREED_CHANNEL + tenant]
        if usage is not None:
            await self._know(tenant)
        self._held.pop(rid, None)
        return int(await self._call(self._settle, keys, args, "settle")) == 1

    def _usage_args(self, usage: Usage | None) -> list[Any]:
        if usage is None:
            return [0, 0, "", "", 0, 0, 0, 0, 0]
        flags: list[Any] = [1] if usage.estimated else []  # estimated, then its end user
        if usage.end_user is not None:
            flags = [int(usage.estimated), usage.end_user]
        entry = orjson.dumps(
            [usage.input_tokens, usage.output_tokens, usage.cached_tokens, usd_to_nano(usage.cost),
             usage.model, usage.provider, usage.timestamp, *flags]
        )
        return [1, self._max_entries, entry, f"{usage.model}|{usage.provider}|",
                usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                usd_to_nano(usage.cost), _ROLLUP_KEEP_S]

    async def record(self, usage: Usage) -> None:
        """Usage that reserved nothing: no reservation to settle, so no idempotency marker."""
        await self._settle_lines(usage.tenant_id, "-", [], usage, usage.timestamp, 0)

    async def peek(self, lines: Sequence[Line], now: float) -> list[int]:
        return [use.used for use in await self.peek_use(lines, now)]

    async def peek_use(self, lines: Sequence[Line], now: float) -> list[LineUse]:
        keys = [k for line in lines for k in _keys(line)]
        args = [repr(now)] + [line.window.oldest(now) for line in lines]
        reply = [int(v) for v in await self._call(self._peek, keys, args, "peek")]
        return [LineUse(used, None if oldest < 0 else oldest)
                for used, oldest in zip(reply[::2], reply[1::2], strict=True)]

    async def mark_once(self, key: str, until: float, now: float) -> bool:
        keep = max(math.ceil(until - now), 1) + 60
        marked = await self._call(self._mark, [key], [repr(now), repr(until), keep], "mark")
        return int(marked) == 1

    async def in_flight(self, now: float) -> int:
        self._held = {rid: t for rid, t in self._held.items() if t > now}
        return len(self._held)

    async def query(self, filter: Filter) -> Summary:
        return await spend.query(self, filter)

    async def rollups(
        self, tenant: str | None, first_hour: int, last_hour: int
    ) -> list[RollupRow]:
        rows: list[RollupRow] = []
        for name in await self._tenants_of(tenant):
            rows += await self._tenant_rollups(name, first_hour, last_hour)
        return rows

    async def end_user_days(self, tenant: str | None, first_day: int, last_day: int
                            ) -> list[EndUserRow]:
        rows: list[EndUserRow] = []
        for name in await self._tenants_of(tenant):
            for day, table in await self._tables(_end_users_key(name, "days"), first_day,
                                                 last_day, functools.partial(_end_users_key, name)):
                rows += _end_user_rows(name, day, table)
        return rows

    async def entries(self, tenant: str | None) -> list[Usage]:
        entries: list[Usage] = []
        for name in await self._tenants_of(tenant):
            entries += await self._tenant_entries(name)
        return entries

    async def _tenant_rollups(self, tenant: str, first_hour: int, last_hour: int
                              ) -> list[RollupRow]:
        rows: list[RollupRow] = []
        for hour, table in await self._tables(f"{{{tenant}}}:r:hours", first_hour, last_hour,
                                              lambda hour: f"{{{tenant}}}:r:{hour}"):
            rows += _rows(tenant, hour, table)
        return rows

    async def _tables(self, index: str, first: int, last: int, key: Callable[[str], str]
                      ) -> list[tuple[int, dict[bytes, bytes]]]:
        """The hashes of the ids from ``first`` to ``last`` that the sorted set ``index``
        lists (hours or days), read in one pipeline: (id, fields) each."""
        ids = await self._guarded("spend", self._redis.zrangebyscore(index, first, last))
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for found in ids:
            pipe.hgetall(key(_text(found)))
        tables = await self._guarded("spend", pipe.execute())
        return [(int(_text(found)), table) for found, table in zip(ids, tables, strict=True)]

    async def _tenant_entries(self, tenant: str) -> list[Usage]:
        entries: list[Usage] = []
        log = await self._guarded("spend", self._redis.xrange(f"{{{tenant}}}:usage"))
        for _, fields in log or ():
            i, o, c, cost, model, provider, ts, *flags = orjson.loads((fields or {})[b"u"])
            entries.append(Usage(i, o, c, i + o, nano_to_usd(cost), model, provider, tenant, ts,
                                 bool(flags and flags[0]), flags[1] if len(flags) > 1 else None))
        return entries

    async def _tenants_of(self, tenant: str | None) -> list[str]:
        if tenant is not None:
            return [tenant]
        members = await self._guarded("spend", self._redis.smembers(_TENANTS_KEY))
        return sorted(_text(m) for m in members)

    async def connect(self) -> None:
        """Meets every node before traffic does: a cluster client's first burst of concurrent
        connections otherwise races inside redis-py."""
        if isinstance(self._redis, RedisCluster):
            await self._guarded("ping", self._redis.initialize())
            await self._guarded("ping", self._redis.ping(target_nodes=RedisCluster.ALL_NODES))
        else:
            await self.ping()

    async def ping(self) -> None:
        await self._guarded("ping", self._redis.ping())

    async def close(self) -> None:
        tasks = [*self._marking, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._batch is not None:
            self._batch.close()
        await self._redis.aclose()

    def _first_held(self, tenant: str) -> None:
        """A request of ``tenant`` is now held here: settlements of the tenant on any instance
        are published from now on, and this instance listens."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), context=contextvars.Context())
        task = asyncio.create_task(self._mark_held(tenant), context=contextvars.Context())
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    async def _mark_held(self, tenant: str) -> None:
        """Marks the tenant, then wakes its held requests once: a settlement that landed
        before the mark was not published, and this re-check sees it."""
        with contextlib.suppress(StoreError):
            await self._guarded("hold", self._redis.set(_held_key(tenant), 1, ex=_HELD_MARK_S))
        self.freed.wake(tenant)

    async def _listen(self) -> None:
        """Wakes held requests at each published settlement; renews the marks of the tenants
        still held here. Runs while the store is open; a broken connection is retried (held
        requests poll meanwhile)."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(FREED_CHANNEL + "*")
                renewed = asyncio.get_running_loop().time()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is not None:
                        self.freed.wake(_text(message["channel"]).removeprefix(FREED_CHANNEL))
                    now = asyncio.get_running_loop().time()
                    if now - renewed > _HELD_MARK_S / 3:
                        renewed = now
                        for tenant in self.freed.tenants():
                            await self._redis.set(_held_key(tenant), 1, ex=_HELD_MARK_S)
            except (RedisError, OSError) as exc:
                log.warning("held-request wake-ups unavailable, polling meanwhile: %s: %s",
                            type(exc).__name__, exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(_LISTEN_RETRY_S)

    async def _know(self, tenant: str) -> None:
        """Remembers the tenant for queries across tenants; once per tenant per process."""
        if tenant not in self._tenants:
            await self._guarded("settle", self._redis.sadd(_TENANTS_KEY, tenant))
            self._tenants.add(tenant)

    async def _call(self, script: Any, keys: list[str], args: list[Any], operation: str) -> Any:
        if self._batch is not None:
            return await self._guarded(operation, self._batch.call(script, keys, args))
        return await self._guarded(operation, script(keys=keys, args=args))

    async def _guarded(self, operation: str, awaitable: Any) -> Any:
        """Redis failures leave the store as StoreError (counted per operation and kind, the
        exception's class: a set the code bounds, for metrics);
        on_store_error decides from there. The error names its kind: some say nothing else."""
        try:
            if self._slots is None:
                return await awaitable
            async with self._slot(awaitable):
                return await awaitable
        except (RedisError, OSError) as exc:
            kind = type(exc).__name__
            self.failures[operation, kind] += 1
            reason = f"{kind}: {exc}" if str(exc) else kind
            raise StoreError(f"redis {reason}") from exc

    @contextlib.asynccontextmanager
    async def _slot(self, awaitable: Any) -> AsyncIterator[None]:
        assert self._slots is not None
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            close = getattr(awaitable, "close", None)  # never started: no "never awaited"
            if close is not None:
                close()
            raise redis_errors.ConnectionError(
                f"no cluster connection free within {self._wait_s:g} s") from None
        try:
            yield
        finally:
            self._slots.release()
