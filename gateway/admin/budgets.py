"""Budget administration: YAML budgets are read-only here, API budgets live in the store.

The rules a budget must meet are the YAML file's own (``parse_budget``, which calls
``gateway.settings.checks``), so a budget that ``gateway check-config`` would refuse is refused
here too, with the same messages. A tenant has at most ``limits.api_budgets_per_tenant`` API
budgets: every one is compiled into the tenant's budget index and matched by its requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.admin.tenancy import Actor, require_change
from gateway.cost.model import Budget
from gateway.errors import ConfigErrors, Conflict, Forbidden, InvalidRequest, NotFound
from gateway.proxy.tenant_budgets import ApiBudgets
from gateway.runtime import Runtime
from gateway.settings.load import API_ID_PREFIX, parse_budget
from gateway.settings.schema import ALL_TENANTS
from gateway.store.base import Store

if TYPE_CHECKING:  # audit.py answers budgets as budget_json here does
    from gateway.admin.audit import Auditor

# The Cognipeer console's names for two limits.
ALIASES = {"monthly_limit_usd": "max_cost_per_month", "daily_limit_usd": "max_cost_per_day"}
_READ_ONLY = ("id", "source", "tenant")


class InvalidBudget(InvalidRequest):
    """A 400 naming every field at fault: besides the usual ``message`` (all of them) and
    ``param`` (the first), ``error.errors`` lists each as ``{param, message}`` (``param`` null
    for the budget as a whole), so a form can show each problem beside its own field."""

    code = "invalid_budget"

    def __init__(self, errors: Sequence[tuple[str | None, str]]) -> None:
        text = "; ".join(f"{param or 'budget'}: {message}" for param, message in errors)
        super().__init__(f"Invalid budget: {text}.", param=errors[0][0])
        self.errors = list(errors)

    def body(self) -> dict[str, object]:
        return {"error": {
            "message": self.message, "type": self.type, "param": self.param, "code": self.code,
            "errors": [{"param": param, "message": message} for param, message in self.errors],
        }}


def budget_json(budget: Budget) -> dict[str, Any]:
    body = budget.to_dict()
    body["id"] = budget.ident
    for alias, name in ALIASES.items():
        body[alias] = body[name]
    return body


def budget_from_json(body: Mapping[str, Any]) -> Budget:
    """A budget as the API answers it (``budget_json``), read back (a YAML budget's ``id``
    is its name, as the API says)."""
    return Budget.from_dict({k: v for k, v in body.items() if k not in ALIASES})


class BudgetAdmin:
    def __init__(self, store: Store, config: Callable[[], Runtime], api: ApiBudgets,
                 audit: Auditor | None = None) -> None:
        """``audit``: where each change is recorded once made (None: a reader, the CLI)."""
        self._store = store
        self._config = config
        self._api = api
        self._audit = audit
        self._creating = asyncio.Lock()  # the count and the put, one create at a time

    async def list(self, tenant: str) -> list[Budget]:
        """The tenant's YAML budgets, then its API budgets in creation order."""
        file_budgets = [b for b in self._config().settings.budgets if b.tenant == tenant]
        _, api_budgets = await self._store.definitions.list(tenant)
        return file_budgets + api_budgets

    async def get(self, actor: Actor, budget_id: str) -> Budget:
        for budget in await self.list(actor.tenant):
            if budget.ident == budget_id:
                return budget
        if actor.operator:  # may see every tenant's: where the budget is, is no secret
            raise NotFound(f"No budget with id '{budget_id}' in tenant '{actor.tenant}' (tenant="
                           f"{ALL_TENANTS} finds it in any tenant).", code="budget_not_found")
        if await self._owned_elsewhere(actor.tenant, budget_id):
            raise Forbidden("This budget belongs to another tenant.",
                            code="insufficient_permissions")
        raise NotFound(f"No budget with id '{budget_id}'.", code="budget_not_found")

    async def find(self, tenants: Iterable[str], budget_id: str) -> Budget:
        """The budget with this id, whichever of ``tenants`` it is (an operator's
        ``tenant=all``)."""
        for tenant in tenants:
            for budget in await self.list(tenant):
                if budget.ident == budget_id:
                    return budget
        raise NotFound(f"No budget with id '{budget_id}' in any tenant.", code="budget_not_found")

    async def create(self, actor: Actor, data: Mapping[str, Any]) -> Budget:
        require_change(actor)
        budget_id = f"{API_ID_PREFIX}{uuid.uuid4().hex[:16]}"
        fields = _fields(data)
        fields.setdefault("name", budget_id)
        async with self._creating:
            budget = await self._validated(actor, fields, budget_id)
            await self._check_room(actor.tenant)
            await self._store.definitions.put(budget)
        self._changed(actor.tenant)
        await self._audited(actor, None, budget)
        return budget

    def _changed(self, tenant: str) -> None:
        """The tenant's API budgets changed: its next request, and its held ones now, read
        them again."""
        self._api.invalidate(tenant)
        self._store.freed.wake(tenant)

    async def _check_room(self, tenant: str) -> None:
        """The cap is checked in this process before the put: instances creating at once (with
        a shared store) may each add one past it."""
        cap = self._config().settings.limits.api_budgets_per_tenant
        _, budgets = await self._store.definitions.list(tenant)
        if len(budgets) >= cap:
            raise Conflict(
                f"Tenant '{tenant}' already has {len(budgets)} API budgets, the most this "
                f"gateway allows (limits.api_budgets_per_tenant: {cap}); delete one or change "
                "one instead.",
                code="too_many_budgets",
            )

    async def update(self, actor: Actor, budget_id: str, data: Mapping[str, Any]) -> Budget:
        require_change(actor)
        current = await self._writable(actor, budget_id)
        merged = {k: v for k, v in current.to_dict().items() if k not in _READ_ONLY}
        merged.update(_fields(data))
        budget = await self._validated(actor, merged, budget_id)
        await self._store.definitions.put(budget)
        self._changed(actor.tenant)
        await self._audited(actor, current, budget)
        return budget

    async def delete(self, actor: Actor, budget_id: str) -> None:
        require_change(actor)
        current = await self._writable(actor, budget_id)
        deleted = await self._store.definitions.delete(actor.tenant, budget_id)
        self._changed(actor.tenant)
        if deleted:  # else another caller did, and audited it
            await self._audited(actor, current, None)

    async def _audited(self, actor: Actor, before: Budget | None, after: Budget | None
                       ) -> None:
        if self._audit is not None:
            await self._audit.changed(actor.who, actor.operator, before, after)

    async def _writable(self, actor: Actor, budget_id: str) -> Budget:
        budget = await self.get(actor, budget_id)
        if budget.source == "file":
            raise Conflict(
                f"Budget '{budget.name}' is defined in the gateway's YAML configuration; change "
                "or remove it there (the file is reloaded on save).",
                code="budget_defined_in_file",
            )
        return budget

    async def _validated(self, actor: Actor, fields: dict[str, Any], budget_id: str) -> Budget:
        runtime = self._config()
        keys = {name: {k.name for k in t.keys} for name, t in runtime.settings.tenants.items()}
        try:
            budget = parse_budget({**fields, "tenant": actor.tenant}, keys,
                                  runtime.settings.limits, "body", runtime.router)
        except ConfigErrors as exc:
            raise InvalidBudget([(e.field or None, e.message) for e in exc.errors]) from None
        taken = {b.name for b in await self.list(actor.tenant)
                 if b.ident != budget_id}
        taken |= {b.name for b in runtime.settings.budgets}
        if budget.name in taken:  # a clash with what exists, as for HTTP a 409, not a 400
            raise Conflict(f"Budget name '{budget.name}' is already used by another budget of "
                           "this tenant; choose another name or change that budget.",
                           param="name", code="budget_name_taken")
        return dataclasses.replace(budget, id=budget_id, source="api")

    async def _owned_elsewhere(self, tenant: str, budget_id: str) -> bool:
        runtime = self._config()
        if any(b.name == budget_id and b.tenant != tenant for b in runtime.settings.budgets):
            return True
        for other in runtime.settings.tenants:
            if other != tenant:
                _, budgets = await self._store.definitions.list(other)
                if any(b.id == budget_id for b in budgets):
                    return True
        return False


def _fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The body's fields under their gateway names; read-only ones refused by name."""
    fields = dict(data)
    problems: list[tuple[str | None, str]] = [
        (name, "cannot be set") for name in _READ_ONLY if name in fields]
    for alias, name in ALIASES.items():
        if alias in fields:
            value = fields.pop(alias)
            if name in fields and fields[name] != value:
                problems.append((alias, f"disagrees with '{name}'"))
            fields[name] = value
    if problems:
        raise InvalidBudget(problems)
    return fields

