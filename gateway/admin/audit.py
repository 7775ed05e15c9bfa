"""Every budget change leaves a trace: who made it, what the budget was before and after, when.

A change through the admin API (the dashboard's too) is audited by the instance that made it,
once it has succeeded; a YAML reload by every instance that reloads, one entry per budget the
file created, changed or removed. Each entry is one structured log line (logger
``gateway.audit``) and is kept in the store (``gateway.store.audit``), which every instance's
``GET /api/client/v1/audit`` reads: a reload's entry is offered ``once``, so the instances
reloading one file keep it once between them, while each still logs its own line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from gateway.admin.budgets import budget_json
from gateway.clock import Clock
from gateway.cost.model import Budget
from gateway.log import FIELDS
from gateway.runtime import Runtime
from gateway.store.audit import YAML_WHO, AuditAction, AuditEntry, AuditSource, Once
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.audit")

LIMIT_DEFAULT, LIMIT_MAX = 100, 1_000  # entries one read answers

# Instances reloading one file each see its change within this long of the first (a poll
# every second; a file pushed to several hosts in turn): past it, the same change (a budget
# set back and forth) is kept again.
RELOAD_ONCE_S = 300.0


class Auditor:
    def __init__(self, store: Store, clock: Clock, config: Callable[[], Runtime]) -> None:
        self._store = store
        self._clock = clock
        self._config = config

    async def changed(self, who: str, operator: bool, before: Budget | None,
                      after: Budget | None) -> None:
        """A change the admin API made (``before`` None: created; ``after`` None: deleted);
        a change to nothing (every field as it was) is none."""
        if before is not None and after is not None and budget_json(before) == budget_json(
                after):
            return
        await self._keep(self._entry(who, operator, AuditSource.API, before, after), None)

    async def reloaded(self, old: Runtime, new: Runtime) -> None:
        """The YAML file was reloaded: an entry per budget it created, changed or removed."""
        for before, after in file_changes(old.settings.budgets, new.settings.budgets):
            entry = self._entry(YAML_WHO, False, AuditSource.YAML, before, after)
            await self._keep(entry, Once(_digest(entry), entry.at + RELOAD_ONCE_S))

    def _entry(self, who: str, operator: bool, source: AuditSource, before: Budget | None,
               after: Budget | None) -> AuditEntry:
        budget = after or before
        assert budget is not None, "a change has a budget on one side at least"
        action = (AuditAction.CREATE if before is None else
                  AuditAction.DELETE if after is None else AuditAction.UPDATE)
        return AuditEntry(self._clock.now(), budget.tenant, budget.ident, budget.name, action,
                          who, operator, source, _json(before), _json(after))

    async def _keep(self, entry: AuditEntry, once: Once | None) -> None:
        """Into the store, then the log line (saying whether this instance kept it). A store
        that fails here does not undo the change, which is done: the line is then the only
        record, and an error says so."""
        keep = self._config().settings.limits.audit_entries_per_tenant
        try:
            stored = "yes" if await self._store.audit.append(entry, keep, once) else "already"
        except StoreError as exc:
            stored = "no"
            log.error("audit entry not stored (the store failed: %s); this log line is its "
                      "record", exc)
        log.info("budget %r (%s) of tenant %r: %s by %s (%s)", entry.budget_name,
                 entry.budget_id, entry.tenant, entry.action.value, entry.who,
                 entry.source.value, extra={FIELDS: {**entry_json(entry), "stored": stored}})


def file_changes(old: Sequence[Budget], new: Sequence[Budget]
                 ) -> Iterator[tuple[Budget | None, Budget | None]]:
    """(before, after) per YAML budget that a reload from ``old`` to ``new`` created (before
    None), changed or removed (after None); a budget is known by its tenant and identity (its
    ``id``, else its name: renaming a budget without an ``id`` removes one and creates one)."""
    before = {(b.tenant, b.ident): b for b in old}
    after = {(b.tenant, b.ident): b for b in new}
    for key, budget in after.items():
        was = before.get(key)
        if was is None or budget_json(was) != budget_json(budget):
            yield was, budget
    for key, budget in before.items():
        if key not in after:
            yield budget, None


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """As the API answers it: ``at`` in ISO 8601 (UTC, milliseconds)."""
    at = dt.datetime.fromtimestamp(entry.at, dt.UTC).isoformat(timespec="milliseconds")
    return {**dataclasses.asdict(entry), "at": at.replace("+00:00", "Z"),
            "action": entry.action.value, "source": entry.source.value}


def entry_from_json(body: Mapping[str, Any]) -> AuditEntry:
    """``entry_json``'s inverse (the CLI's tables from a running gateway's answers); ValueError
    on anything else."""
    at = dt.datetime.fromisoformat(str(body.get("at")).replace("Z", "+00:00"))
    return AuditEntry.from_fields({**body, "at": at.timestamp()}, "audit entry")


def _json(budget: Budget | None) -> dict[str, Any] | None:
    return None if budget is None else budget_json(budget)


def _digest(entry: AuditEntry) -> str:
    """The change itself (which budget, from what, to what), whenever and wherever seen."""
    change = [entry.budget_id, entry.before, entry.after]
    return hashlib.blake2b(orjson.dumps(change, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).hexdigest()
