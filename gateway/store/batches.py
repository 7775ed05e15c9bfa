"""Batches whose reservation is still held: what settling each will need, kept in the store.

A batch runs for up to a day, longer than any process may live, so its reservation outlives the
request that made it. The record holds everything settlement needs (the lines reserved, the
bound, who owns it) and is written before the batch is sent upstream: whichever instance polls
next, and a restarted one, can settle it. ``claim`` lets one instance at a time do the reading;
the store's idempotent ``settle`` makes the charge itself happen once whatever happens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

from gateway.cost.windows import WINDOWS
from gateway.store.base import Line


@dataclass(frozen=True, slots=True)
class HeldLine:
    """One reserved line, as settling rebuilds it: its amount is tokens or cost."""

    key: str
    window: str  # the window's name ("hour", "day", "month")
    limit: int
    enforce: bool
    is_cost: bool

    def line(self, tokens: int, cost_nano: int) -> Line:
        return Line(self.key, WINDOWS[self.window], self.limit,
                    cost_nano if self.is_cost else tokens, self.enforce)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    rid: str  # the reservation
    tenant: str
    upstream: str
    model: str
    endpoint: str  # the path below /v1 its lines go to
    lines: tuple[HeldLine, ...]
    input_tokens: int  # the reservation's bound
    output_tokens: int
    cost_nano: int
    created: float
    deadline: float  # past this without an end, the reservation is charged as an estimate
    batch_id: str | None = None  # None until the upstream has answered the creation

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def expires_at(self) -> float:
        """When its reservation expires: past the deadline, time enough to charge it."""
        return self.deadline + HOLD_MARGIN_S

    def held(self, tokens: int, cost_nano: int) -> list[Line]:
        return [line.line(tokens, cost_nano) for line in self.lines]

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> BatchRecord:
        """Raises ValueError (or TypeError) on anything this module did not write."""
        fields: Any = orjson.loads(raw)
        if not isinstance(fields, dict):
            raise ValueError("a batch record is a JSON object")
        lines = tuple(HeldLine(**line) for line in fields.pop("lines"))
        for line in lines:
            if line.window not in WINDOWS:
                raise ValueError(f"unknown window {line.window!r}")
        return cls(lines=lines, **fields)


class BatchLedger(Protocol):
    async def open(self, record: BatchRecord) -> None:
        """Writes (or rewrites, once the batch has its id) ``record``."""
        ...

    async def pending(self) -> list[BatchRecord]:
        """Every batch not settled yet, on every instance (bounded by ``limits``)."""
        ...

    async def claim(self, rid: str, until: float, now: float) -> bool:
        """True for one caller until ``until``: it reads the batch's outcome meanwhile."""
        ...

    async def close(self, rid: str) -> None:
        """The batch is settled: forgotten."""
        ...


class MemoryBatches:
    def __init__(self) -> None:
        self.records: dict[str, BatchRecord] = {}
        self._claims: dict[str, float] = {}

    async def open(self, record: BatchRecord) -> None:
        self.records[record.rid] = record

    async def pending(self) -> list[BatchRecord]:
        return list(self.records.values())

    async def claim(self, rid: str, until: float, now: float) -> bool:
        if self._claims.get(rid, -math.inf) > now:
            return False
        self._claims = {r: t for r, t in self._claims.items() if t > now}
        self._claims[rid] = until
        return True

    async def close(self, rid: str) -> None:
        self.records.pop(rid, None)
        self._claims.pop(rid, None)

    def snapshot(self) -> list[str]:
        return [record.dumps().decode() for record in self.records.values()]

    def restore(self, rows: object) -> None:
        """Replaces the records by ``rows`` (from ``snapshot``); ValueError names a bad one."""
        if not isinstance(rows, list):
            raise ValueError("batches: expected a list")
        records: dict[str, BatchRecord] = {}
        for i, row in enumerate(rows):
            try:
                record = BatchRecord.loads(row)
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"batches[{i}]: {exc}") from None
            records[record.rid] = record
        self.records = records


HOLD_MARGIN_S = 3600.0  # a batch's reservation outlives its deadline by this, to be settled


_RECORDS_KEY = "gw:batches"  # one hash (one cluster slot): rid -> record
_CLAIM_PREFIX = "gw:batch-claim:"


class RedisBatches:
    """One hash of records shared by every instance; a claim is a key set once with a TTL."""

    def __init__(self, client: Any, guarded: Any) -> None:
        self._redis = client
        self._guarded = guarded

    async def open(self, record: BatchRecord) -> None:
        await self._guarded("batches", self._redis.hset(_RECORDS_KEY, record.rid,
                                                        record.dumps()))

    async def pending(self) -> list[BatchRecord]:
        raw = await self._guarded("batches", self._redis.hgetall(_RECORDS_KEY))
        return [BatchRecord.loads(value) for value in raw.values()]

    async def claim(self, rid: str, until: float, now: float) -> bool:
        ttl = max(math.ceil(until - now), 1)
        return bool(await self._guarded(
            "batches", self._redis.set(_CLAIM_PREFIX + rid, 1, nx=True, ex=ttl)))

    async def close(self, rid: str) -> None:
        await self._guarded("batches", self._redis.hdel(_RECORDS_KEY, rid))
