"""Who changed which budget, and how: the recent changes of each tenant, kept in the store.

Every instance answers the audit API from here, so an entry is written once, whichever instance
made the change. A change made through the API is written by the instance that made it; a YAML
reload is seen by every instance, which each offer the entry ``once`` (a key made of the change
itself): the first one keeps it, the others are told it was already kept. Each tenant keeps its
newest ``keep`` entries (``limits.audit_entries_per_tenant``): the bound comes from the
configuration, never from what clients send.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from importlib import resources
from typing import Any, Protocol

import orjson

from gateway.store.base import StoreError
from gateway.store.snapshot import number, typed


class AuditAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class AuditSource(StrEnum):
    API = "api"  # the admin API (the dashboard's changes go through it)
    YAML = "yaml"  # a reload of the configuration file


YAML_WHO = "yaml"  # who changed a budget through the file: ops, whom the gateway cannot name


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float  # seconds since the epoch, from the injected clock
    tenant: str
    budget_id: str
    budget_name: str
    action: AuditAction
    who: str  # the key's name, the operator's, or "yaml"
    operator: bool  # who is an operator (the platform team's key, of no tenant)
    source: AuditSource
    before: Mapping[str, Any] | None  # the budget as the admin API answers it; None: created
    after: Mapping[str, Any] | None  # None: deleted

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> AuditEntry:
        """Raises ValueError on anything ``dumps`` did not write."""
        return cls.from_fields(orjson.loads(raw), "audit entry")

    @classmethod
    def from_fields(cls, value: object, where: str) -> AuditEntry:
        fields = typed(value, dict, where)
        if set(fields) != _FIELDS:
            raise ValueError(f"{where}: expected the fields {', '.join(sorted(_FIELDS))}")
        text, side = functools.partial(_text, fields, where), functools.partial(
            _side, fields, where)
        try:
            action, source = AuditAction(fields["action"]), AuditSource(fields["source"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return cls(number(fields["at"], f"{where}.at"), text("tenant"), text("budget_id"),
                   text("budget_name"), action, text("who"),
                   typed(fields["operator"], bool, f"{where}.operator"), source,
                   side("before"), side("after"))


def _text(fields: Mapping[str, object], where: str, name: str) -> str:
    return typed(fields[name], str, f"{where}.{name}")


def _side(fields: Mapping[str, object], where: str, name: str) -> dict[str, Any] | None:
    value = fields[name]
    return None if value is None else typed(value, dict, f"{where}.{name}")


_FIELDS = {"at", "tenant", "budget_id", "budget_name", "action", "who", "operator", "source",
           "before", "after"}


@dataclass(frozen=True, slots=True)
class Once:
    """Keep an entry only if no entry was kept under ``key`` before ``until`` (compared with
    the entry's ``at``): instances reloading the same file keep its change once."""

    key: str  # within the entry's tenant
    until: float


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry, keep: int, once: Once | None = None) -> bool:
        """Adds ``entry`` as its tenant's newest, dropping the tenant's oldest past ``keep``.
        False (and nothing added): ``once``'s key was taken."""
        ...

    async def recent(self, tenant: str | None, limit: int, budget_id: str | None = None
                     ) -> list[AuditEntry]:
        """Up to ``limit`` entries, newest first: of ``tenant`` (None: every tenant's), of
        ``budget_id`` only if given."""
        ...


def newest(per_tenant: Iterable[Sequence[AuditEntry]], limit: int, budget_id: str | None
           ) -> list[AuditEntry]:
    """Each tenant's entries (newest first) merged, newest first; a tenant's own order kept."""
    merged = heapq.merge(*per_tenant, key=lambda entry: -entry.at)
    chosen = (e for e in merged if budget_id is None or e.budget_id == budget_id)
    return [entry for _, entry in zip(range(limit), chosen, strict=False)]


_ONCE_PRUNE_AT = 1_000


class MemoryAudit:
    """Per tenant, a deque of entries, oldest first; and the ``once`` keys taken, with their
    expiry. Every call runs without awaiting: atomic on the event loop."""

    def __init__(self) -> None:
        self._entries: dict[str, deque[AuditEntry]] = {}
        self._once: dict[str, float] = {}

    async def append(self, entry: AuditEntry, keep: int, once: Once | None = None) -> bool:
        return self.add(entry, keep, once)

    def add(self, entry: AuditEntry, keep: int, once: Once | None = None) -> bool:
        if once is not None:
            key = f"{entry.tenant}\n{once.key}"
            if self._once.get(key, -math.inf) > entry.at:
                return False
            if len(self._once) >= _ONCE_PRUNE_AT:
                self._once = {k: t for k, t in self._once.items() if t > entry.at}
            self._once[key] = once.until
        kept = self._entries.setdefault(entry.tenant, deque())
        kept.append(entry)
        while len(kept) > keep:
            kept.popleft()
        return True

    async def recent(self, tenant: str | None, limit: int, budget_id: str | None = None
                     ) -> list[AuditEntry]:
        tenants = list(self._entries) if tenant is None else [tenant]
        return newest([list(reversed(self._entries.get(t, ()))) for t in tenants], limit,
                      budget_id)

    def snapshot(self) -> dict[str, object]:
        return {"entries": {tenant: [asdict(e) for e in kept]
                            for tenant, kept in self._entries.items()},
                "once": dict(self._once)}

    def restore(self, state: object) -> None:
        """Replaces everything by ``state`` (from ``snapshot``; None: an older snapshot without
        it); ValueError names what is malformed and changes nothing."""
        fields = typed({} if state is None else state, dict, "audit")
        entries: dict[str, deque[AuditEntry]] = {}
        for tenant, rows in typed(fields.get("entries", {}), dict, "audit.entries").items():
            where = f"audit.entries.{tenant}"
            entries[tenant] = deque(AuditEntry.from_fields(row, f"{where}[{i}]")
                                    for i, row in enumerate(typed(rows, list, where)))
        once = {key: number(until, f"audit.once.{key}")
                for key, until in typed(fields.get("once", {}), dict, "audit.once").items()}
        self._entries, self._once = entries, once


_TENANTS_KEY = "gateway:audit:tenants"  # the tenants with entries, for reading across them


def audit_key(tenant: str) -> str:
    return f"{{{tenant}}}:audit"


def _once_key(tenant: str, key: str) -> str:
    return f"{{{tenant}}}:audit:once:{key}"


class RedisAudit:
    """Per tenant a list, newest first, trimmed to ``keep`` by the script that pushes (with
    its ``once`` key, in the tenant's slot); a set names the tenants that have one."""

    def __init__(self, client: Any, guarded: Any) -> None:
        self._redis = client
        self._guarded = guarded
        lua = resources.files("gateway.store") / "lua" / "audit_append.lua"
        self._append = client.register_script(lua.read_text())
        self._tenants: set[str] = set()  # known to be in the set: added once per process

    async def append(self, entry: AuditEntry, keep: int, once: Once | None = None) -> bool:
        if entry.tenant not in self._tenants:
            await self._guarded("audit", self._redis.sadd(_TENANTS_KEY, entry.tenant))
            self._tenants.add(entry.tenant)
        keys = [audit_key(entry.tenant)]
        args: list[Any] = [entry.dumps(), keep]
        if once is not None:
            keys.append(_once_key(entry.tenant, once.key))
            args += [repr(entry.at), repr(once.until),
                     max(math.ceil(once.until - entry.at), 1) + 60]
        return int(await self._guarded("audit", self._append(keys=keys, args=args))) == 1

    async def recent(self, tenant: str | None, limit: int, budget_id: str | None = None
                     ) -> list[AuditEntry]:
        if tenant is not None:
            tenants = [tenant]
        else:
            members = await self._guarded("audit", self._redis.smembers(_TENANTS_KEY))
            tenants = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        if not tenants:
            return []
        last = limit - 1 if budget_id is None else -1  # a budget's may be anywhere in the list
        pipe = self._redis.pipeline(transaction=False)
        for name in tenants:
            pipe.lrange(audit_key(name), 0, last)
        lists = await self._guarded("audit", pipe.execute())
        try:
            return newest([[AuditEntry.loads(raw) for raw in rows] for rows in lists], limit,
                          budget_id)
        except ValueError as exc:
            raise StoreError(f"redis: an audit entry is unreadable: {exc}") from exc
